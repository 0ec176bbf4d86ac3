"""Whether a training run is still learning: what stops it, and which step is its best.

The train loop asks this module at each logged step, each validation pass and each save:
- **Non-finite**: a NaN or infinite training loss or gradient norm at any step (tracked on the
  device at every step, read at each logged step and before each save), a non-finite validation
  loss, or a non-finite number in the state about to be saved stops the run with an error naming
  the step. Nothing from that step on is saved.
- **Runaway**, for a finite loss that shows the run has blown up: a training loss at a logged step
  above RUNAWAY_FACTOR times ln(vocabulary size), the loss of guessing every character uniformly
  (where training starts, just below it), or a validation loss above RUNAWAY_FACTOR times the best
  validation loss so far. Overfitting raises validation loss by tens of percent (the seed model
  goes from 1.65 to 2.43 bits/char); divergence multiplies it. The run stops as for a NaN.
- **Best and early stop**: a validation pass either improves on the best so far (the trainer then
  saves that step, and Orbax keeps it as the best) or counts one more pass since the best;
  `train.early_stop_evals` such passes in a row end the run.
The record of the best travels in every checkpoint, so a resumed run knows its best.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from abcjax import parallel
from abcjax.errors import AbcjaxError

RUNAWAY_FACTOR = 3.0


@dataclasses.dataclass
class ValidationRecord:
    """The best validation pass so far and how many passes came after it without improving."""

    best_step: int | None = None
    best_loss: float | None = None  # nats per character
    best_bpc: float | None = None
    passes_since_best: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict | None) -> ValidationRecord:
        return cls(**data) if data else cls()


class Watch:
    """The run's health checks and its validation record (see the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, vocab_size: int, record: ValidationRecord, mesh: Mesh):
        self.record = record
        self._train = config.train
        self._guessing_loss = math.log(vocab_size)
        self._first_nonfinite = parallel.replicate(np.int32(-1), mesh)  # a step number, -1 while all is well

    def track(self, step: jax.Array, step_metrics: dict[str, jax.Array]) -> None:
        """Notes, on the device and without waiting for it, the first step with a non-finite figure."""
        self._first_nonfinite = _first_nonfinite_step(
            self._first_nonfinite, step, step_metrics["train_loss"], step_metrics["grad_norm"]
        )

    def check_training(self, step: int, train_loss: float) -> None:
        """Stops the run if any step so far was non-finite, or if this step's training loss ran away."""
        first = int(self._first_nonfinite)
        if first >= 0:
            raise self._stop(first, "diverged", "the training loss or gradient norm became NaN or infinite")
        limit = RUNAWAY_FACTOR * self._guessing_loss
        if train_loss > limit:
            raise self._stop(
                step,
                "ran away",
                f"the training loss {train_loss:.4g} is over {RUNAWAY_FACTOR:g} times that of guessing "
                f"every character ({self._guessing_loss:.3g})",
            )

    def validated(self, step: int, eval_loss: float, eval_bpc: float) -> bool:
        """Records a validation pass; True when it is the best so far. Stops a non-finite or runaway run."""
        record = self.record
        if not math.isfinite(eval_loss):
            raise self._stop(step, "diverged", f"the validation loss became {eval_loss}")
        if record.best_loss is not None and eval_loss > RUNAWAY_FACTOR * record.best_loss:
            raise self._stop(
                step,
                "ran away",
                f"the validation loss {eval_loss:.4g} is over {RUNAWAY_FACTOR:g} times its best "
                f"({record.best_loss:.4g} at step {record.best_step})",
            )
        if record.best_loss is None or eval_loss < record.best_loss:
            self.record = ValidationRecord(step, eval_loss, eval_bpc, 0)
            return True
        record.passes_since_best += 1
        return False

    def stop_early(self) -> bool:
        """Whether `train.early_stop_evals` validation passes in a row have not improved on the best."""
        patience = self._train.early_stop_evals
        return patience > 0 and self.record.passes_since_best >= patience

    def check_state(self, state, step: int) -> None:
        """Refuses to let a state with a NaN or infinite number anywhere be saved."""
        if not bool(_all_finite(state)):
            raise self._stop(step, "diverged", "the parameters or optimizer state hold NaN or infinite numbers")

    def _stop(self, step: int, how: str, why: str) -> AbcjaxError:
        best = self.record.best_step
        kept = f"the best checkpoint (step {best}) and the" if best is not None else "the"
        return AbcjaxError(
            f"training {how} at step {step}: {why}; nothing from that step on is saved, {kept} earlier "
            f"checkpoints are kept: lower train.learning_rate (now {self._train.learning_rate:g}) or "
            f"train.grad_clip (now {self._train.grad_clip:g}) and run again"
        )


@jax.jit
def _first_nonfinite_step(first: jax.Array, step: jax.Array, loss: jax.Array, grad_norm: jax.Array) -> jax.Array:
    bad = ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
    return jnp.where((first < 0) & bad, step.astype(first.dtype), first)


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))

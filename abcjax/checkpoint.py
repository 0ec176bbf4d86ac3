"""Orbax checkpoints under WORKDIR/checkpoints: the train state, with its config, vocabulary and
validation record.

Each step's folder holds four items: `state` (params, optimizer state, step, RNG), and `config`,
`vocab` and `validation` as JSON, so a checkpoint alone is enough to sample from, the model never
travels without its vocabulary, and a resumed run still knows its best step. A checkpoint saved
right after a validation pass also carries Orbax's `metrics` (its validation loss).

Which checkpoints stay is Orbax's preservation policy: the last `keep` steps, and also the one with
the lowest validation loss, so the best model is never deleted by the keep-last rule or by a worse
later one. Orbax writes each step to a temporary folder and renames it when complete, and deletes
old steps only after the new one is complete, so a failed or interrupted save never leaves a
checkpoint that is taken as complete and never costs an earlier one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import TypeVar

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from orbax.checkpoint import checkpoint_managers

from abcjax import storage
from abcjax.errors import AbcjaxError, first_line
from abcjax.metrics import say

BEST_METRIC = "eval_loss"  # lower is better
DAMAGED_DIRECTORY = "damaged-checkpoints"  # beside checkpoints/, where train moves unreadable steps
T = TypeVar("T")


class DamagedCheckpoint(AbcjaxError):
    """A checkpoint that is there but cannot be read: its step, and the first line of the cause."""

    def __init__(self, directory: epath.Path, step: int, cause: str):
        super().__init__(
            f"the checkpoint of step {step} in {directory} cannot be read ({cause}): "
            "choose another --step, or delete that step's folder"
        )
        self.step, self.cause = step, cause


@dataclasses.dataclass(frozen=True)
class Choice:
    """The checkpoint a reader picked and why: `how` is "best", "latest" or "step"."""

    step: int
    how: str
    eval_bpc: float | None  # the validation bits/char measured at that step, if it was validated there


def _validation_loss(metrics: dict) -> float:
    return metrics[BEST_METRIC]


class Checkpoints:
    """Save on the trainer's schedule, keep the last K and the best, restore the step a caller chooses."""

    def __init__(self, workdir: str | epath.PathLike, keep: int | None = None, read_only: bool = False):
        self.directory = storage.as_path(workdir) / "checkpoints"
        best = {"best_fn": _validation_loss, "best_mode": "min"}
        if read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, **best)
        else:
            keep_latest_and_best = checkpoint_managers.AnyPreservationPolicy(
                [
                    checkpoint_managers.LatestN(n=keep),
                    # reverse: ranked from worst to best, as BestN keeps the last n of its ranking.
                    checkpoint_managers.BestN(
                        get_metric_fn=_validation_loss, reverse=True, n=1, keep_checkpoints_without_metrics=False
                    ),
                ]
            )
            options = ocp.CheckpointManagerOptions(
                preservation_policy=keep_latest_and_best, cleanup_tmp_directories=True, **best
            )
        self._saving: int | None = None  # the step whose save may still be running in the background
        _quiet_abandoned_work()
        self._manager = self._open(options, read_only)

    def _open(self, options: ocp.CheckpointManagerOptions, read_only: bool) -> ocp.CheckpointManager:
        """Orbax's manager, which reads every step's metrics as it opens: a step whose metrics file is
        damaged is named (to readers) or moved aside (by the trainer, which then opens the rest)."""
        try:
            return ocp.CheckpointManager(self.directory, options=options)
        except (OSError, ValueError, KeyError, TypeError) as error:
            damaged = _unreadable_metrics(self.directory)
            if not damaged:
                raise AbcjaxError(f"cannot open the checkpoints in {self.directory} ({_cause(error)})") from None
        if read_only:
            step, cause = damaged[0]
            raise AbcjaxError(
                f"the checkpoint of step {step} in {self.directory} cannot be read (its metrics: {cause}): "
                "delete that step's folder, or run abcjax train on this workdir, which moves it aside"
            )
        for step, cause in damaged:
            say(f"skipping the checkpoint of step {step}: its metrics cannot be read ({cause})")
            say(f"moved the unreadable checkpoint of step {step} to {_move_aside(self.directory, step)}")
        return self._open(options, read_only)

    def steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the lowest validation loss, or None when no checkpoint was validated."""
        best = self._manager.best_step()
        return best if best is not None and self.eval_metrics(best) is not None else None

    def eval_metrics(self, step: int) -> dict | None:
        """{eval_loss, eval_bpc} of a checkpoint saved right after a validation pass, else None."""
        try:
            return self._manager.metrics(step)
        except (OSError, ValueError) as error:
            raise DamagedCheckpoint(self.directory, step, _cause(error)) from None

    def save(self, state, config: dict, vocab: dict, validation: dict, eval_metrics: dict | None = None) -> None:
        """Starts writing the checkpoint of `state.step` in the background (`close` waits for it).

        `validation` is the trainer's record (best step, passes since) for resuming; `eval_metrics`
        ranks this checkpoint for the keep-the-best rule, when it was validated at this step.
        """
        step = int(state.step)
        self.wait()
        if step in self._manager.all_steps():
            return
        items = {
            "state": ocp.args.StandardSave(state),
            "config": ocp.args.JsonSave(config),
            "vocab": ocp.args.JsonSave(vocab),
            "validation": ocp.args.JsonSave(validation),
        }
        self._saving = step
        try:
            self._manager.save(step, args=ocp.args.Composite(**items), metrics=eval_metrics, force=True)
        except Exception as error:  # Orbax and tensorstore raise many types for one failed write
            raise self._save_error(error) from None

    def wait(self) -> None:
        """Blocks until the save under way is complete; its failure is an AbcjaxError naming the step."""
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # the background save's own error, whatever its type
            raise self._save_error(error) from None
        self._saving = None

    def close(self) -> None:
        """Finishes pending writes and stops Orbax's background threads, even when a write failed."""
        try:
            self.wait()
        finally:
            self._manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            self.close()
        except AbcjaxError:
            if exc_type is None:
                raise
            # The block failed already: its error is the one to report; the threads are stopped.

    def _save_error(self, error: BaseException) -> AbcjaxError:
        step, self._saving = self._saving, None
        earlier = [saved for saved in self._manager.all_steps(read=True) if saved != step]
        then = (
            f"the checkpoints up to step {max(earlier)} are kept: free space or fix the disk, then run the same "
            f"command to resume from step {max(earlier)}"
            if earlier
            else "free space or fix the disk, then run the same command to start again"
        )
        return AbcjaxError(
            f"cannot write the checkpoint of step {step} to {self.directory / str(step)} ({_cause(error)}); {then}"
        )

    def choose(self, which: str | int) -> tuple[int, str]:
        """(step, how) for `which` ("best", "latest" or a step number); `how` is "best", "latest" or
        "step". A one-line error when there is no such checkpoint.

        "best" without a validated checkpoint (data.val_fraction=0, or checkpoints older than the
        best-keeping rule) is the latest, with a note.
        """
        available = self.steps()
        if not available:
            raise AbcjaxError(f"no checkpoint in {self.directory}: train a model there first with abcjax train")
        if which == "best":
            best = self.best_step()
            if best is not None:
                return best, "best"
            say(f"note: no checkpoint in {self.directory} has a validation figure: using the latest")
            which = "latest"
        if which == "latest":
            return max(available), "latest"
        if int(which) not in available:
            raise AbcjaxError(f"no checkpoint for step {which} in {self.directory}: the steps saved are {available}")
        return int(which), "step"

    def describe(self, step: int, how: str) -> Choice:
        """The Choice of `step`, with its validation bits/char when it was validated at that step."""
        metrics = self.eval_metrics(step)
        return Choice(step, how, metrics["eval_bpc"] if metrics else None)

    def newest_readable(self, read: Callable[[int], T], newest: int | None = None) -> tuple[int, T] | None:
        """(step, read(step)) for the newest step up to `newest` that reads, saying which ones it skipped.

        None when there is no checkpoint; an error naming each one when none of them reads.
        """
        skipped: list[DamagedCheckpoint] = []
        for step in sorted((step for step in self.steps() if newest is None or step <= newest), reverse=True):
            try:
                value = read(step)
            except DamagedCheckpoint as damaged:
                say(f"skipping the checkpoint of step {step}: it cannot be read ({damaged.cause})")
                skipped.append(damaged)
                continue
            return step, value
        if skipped:
            steps = ", ".join(str(damaged.step) for damaged in skipped)
            raise AbcjaxError(
                f"no checkpoint in {self.directory} can be read (steps {steps}; see above): "
                "delete the checkpoints folder to start again, or use a new --workdir"
            )
        return None

    def move_aside(self, step: int) -> epath.Path:
        """Moves an unreadable step out of the checkpoints (to WORKDIR/damaged-checkpoints), where it
        neither blocks the new save of that step nor counts as a checkpoint; returns where it went."""
        target = _move_aside(self.directory, step)
        self._manager.reload()
        return target

    def restore_metadata(self, step: int) -> tuple[dict, dict, dict | None]:
        """(config, vocab, validation record) of a checkpoint, without reading the arrays.

        The record is None for checkpoints written before abcjax kept one.
        """
        items = {"config": ocp.args.JsonRestore(), "vocab": ocp.args.JsonRestore()}
        has_record = (self.directory / str(step) / "validation").exists()
        if has_record:
            items["validation"] = ocp.args.JsonRestore()
        restored = self._restore(step, **items)
        return restored.config, restored.vocab, restored.validation if has_record else None

    def restore_state(self, step: int, target, mesh: Mesh):
        """The saved state, laid out like `target` (a state of the same model) replicated on `mesh`.

        The device count may differ from the one that saved it.
        """
        return self._restore(step, state=ocp.args.StandardRestore(_replicated(target, mesh))).state

    def restore_params(self, step: int, target_params, mesh: Mesh):
        """Only the parameters of the saved state, laid out like `target_params` replicated on `mesh`.

        All that sampling needs: Adam's moments, twice the parameters' size, stay on disk.
        """
        item = {"params": _replicated(target_params, mesh)}
        restore_args = ocp.checkpoint_utils.construct_restore_args(item)
        args = ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
        return self._restore(step, state=args).state["params"]

    def _restore(self, step: int, **items):
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**items))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DamagedCheckpoint(self.directory, step, _cause(error)) from None


def _move_aside(directory: epath.Path, step: int) -> epath.Path:
    target = directory.parent / DAMAGED_DIRECTORY / str(step)
    storage.make_directory(target.parent, "the folder for damaged checkpoints")
    try:
        (directory / str(step)).rename(target)
    except OSError as error:
        raise AbcjaxError(
            f"cannot move the damaged checkpoint {directory / str(step)} aside ({_cause(error)}): "
            "delete it, then run the same command again"
        ) from None
    return target


def _unreadable_metrics(directory: epath.Path) -> list[tuple[int, str]]:
    """(step, cause) of each step folder whose Orbax metrics file is not JSON, newest first."""
    damaged = []
    for path in directory.glob("*/metrics/metrics"):
        step = path.parent.parent.name
        try:
            json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            if step.isdigit():
                damaged.append((int(step), _cause(error)))
    return sorted(damaged, reverse=True)


def _replicated(target, mesh: Mesh):
    """Abstract arrays shaped like `target`'s, each replicated over `mesh`: what Orbax restores into."""
    replicated = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), target)


def _cause(error: BaseException) -> str:
    """A library's error in a few words: the system's reason for a failed read or write (as tensorstore
    quotes it, or an OSError's), else the first line without tensorstore's specification dump."""
    text = str(error)
    code = re.search(r"os_error_code='?(\d+)", text)
    if code:
        return os.strerror(int(code.group(1)))
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    line = first_line(error).split(" [tensorstore_spec")[0]
    # tensorstore nests its reasons, outermost first, after a status code: "DATA_LOSS: Error opening
    # "zarr" driver: Error reading ...: Error decoding b-tree node: Expected ..."; the innermost says it.
    parts = line.split(": ")
    innermost = max((i for i, part in enumerate(parts) if i > 1 and part.startswith("Error ")), default=None)
    return line if innermost is None else ": ".join([parts[0], *parts[innermost:]])


def _quiet_abandoned_work() -> None:
    """Silences the echoes of a failed restore or save, which AbcjaxError reports once, in one line.

    When one array of a restore or save fails, Orbax stops waiting and closes its event loop while
    tensorstore still reads or writes the others: each that ends later raises "Event loop is closed"
    in tensorstore's thread (Python prints it as a traceback), and each that failed too leaves a
    future or task whose error nobody reads (asyncio logs it with the whole tensorstore specification).
    Every other unraisable error and asyncio message still goes through.
    """
    previous = sys.unraisablehook
    if getattr(previous, "abcjax_quiet", False):
        return

    def hook(unraisable) -> None:
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    hook.abcjax_quiet = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(
        lambda record: (
            not record.getMessage().startswith(
                ("Future exception was never retrieved", "Task exception was never retrieved")
            )
        )
    )

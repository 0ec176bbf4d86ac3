"""Where training figures go: TensorBoard event files, WORKDIR/metrics.jsonl, and the console.

Only process 0 writes, so that a run over several processes logs once. The workdir may be in Cloud
Storage, which cannot append to a file, so metrics.jsonl is rewritten whole at each logged step.
"""

from __future__ import annotations

import json
import math
import time

import jax
from etils import epath
from tensorboardX import SummaryWriter

from abcjax import storage

# metrics.jsonl key -> TensorBoard tag
TENSORBOARD_TAGS = {
    "train_loss": "train/loss",
    "train_bpc": "train/bpc",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "chars_per_sec": "train/chars_per_sec",
    "step_time": "train/step_time",
    "eval_loss": "eval/loss",
    "eval_bpc": "eval/bpc",
    "sample_well_formed_fraction": "samples/well_formed_fraction",
}


class MetricsWriter:
    """Writes each logged step to TensorBoard and as one JSON line; a no-op on processes other than 0."""

    def __init__(self, workdir: epath.Path, resume_step: int):
        self._active = jax.process_index() == 0
        self._jsonl_path = workdir / "metrics.jsonl"
        if not self._active:
            return
        self._jsonl_lines = _lines_up_to(self._jsonl_path, resume_step)
        self._tensorboard = SummaryWriter(str(workdir), purge_step=resume_step + 1 if resume_step else None)

    def write_config(self, config_json: str) -> None:
        if self._active:
            self._tensorboard.add_text("config", f"```\n{config_json}\n```", 0)

    def write_samples(self, step: int, tunes: list[str]) -> None:
        """Sampled tunes as TensorBoard text, so a user can read the model improving."""
        if self._active:
            self._tensorboard.add_text("samples", "\n\n".join(f"```\n{tune}\n```" for tune in tunes), step)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self._active:
            return
        for key, value in metrics.items():
            self._tensorboard.add_scalar(TENSORBOARD_TAGS[key], value, step)
        self._jsonl_lines.append(json.dumps({"step": step, **metrics}) + "\n")
        storage.write_text_atomically(self._jsonl_path, "".join(self._jsonl_lines), "the metrics log")
        self._tensorboard.flush()

    def close(self) -> None:
        if self._active:
            self._tensorboard.close()


def _lines_up_to(path: epath.Path, step: int) -> list[str]:
    """The lines of an earlier run up to its checkpoint's step: a resumed run logs the later ones again."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return [line for line in lines if line.strip() and json.loads(line)["step"] <= step]


class Progress:
    """A console line every few steps: step, loss, characters/s and the time left."""

    def __init__(self, first_step: int, last_step: int):
        self._last_step = last_step
        self._mark_step, self._mark_time = first_step, time.perf_counter()
        self._active = jax.process_index() == 0

    def seconds_per_step(self, step: int) -> float:
        """Seconds per step since the last mark."""
        return (time.perf_counter() - self._mark_time) / max(step - self._mark_step, 1)

    def mark(self, step: int) -> None:
        """Restarts the clock, so evaluation and checkpointing do not count as step time."""
        self._mark_step, self._mark_time = step, time.perf_counter()

    def report(self, step: int, metrics: dict[str, float]) -> None:
        if not self._active:
            return
        eta = format_duration(metrics["step_time"] * (self._last_step - step))
        line = (
            f"step {step}/{self._last_step}  loss {metrics['train_loss']:.4f}  bpc {metrics['train_bpc']:.3f}"
            f"  {metrics['chars_per_sec']:,.0f} chars/s  ETA {eta}"
        )
        if "eval_loss" in metrics:
            line += f"  | eval loss {metrics['eval_loss']:.4f}  bpc {metrics['eval_bpc']:.3f}"
        if "sample_well_formed_fraction" in metrics:
            line += f"  | samples {metrics['sample_well_formed_fraction']:.0%} well-formed"
        print(line, flush=True)


def say(message: str) -> None:
    """A console line from process 0 only."""
    if jax.process_index() == 0:
        print(message, flush=True)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"

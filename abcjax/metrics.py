"""Where training figures go: TensorBoard event files, WORKDIR/metrics.jsonl, and the console.

Only process 0 writes, so that a run over several processes logs once. The workdir may be in Cloud
Storage, which cannot append to a file, so metrics.jsonl is rewritten whole at each logged step.
TensorBoard also gets the sampled tunes as text and the first few as sound, and at the end of a run
the config with its final figures for the HParams table, so that runs can be compared side by side.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import time

import jax
from etils import epath
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams

from abcjax import render, storage

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
    "sample_bars_match_meter_fraction": "samples/bars_match_meter_fraction",
    "sample_repeats_another_fraction": "samples/repeats_another_fraction",
    "sample_copied_fraction": "samples/copied_fraction",
}
AUDIO_RATE = 16_000  # samples per second of the sampled tunes' sound: plenty for a melody
AUDIO_MAX_S = 30  # seconds kept of each tune's sound (at most 0.96 MB in the event file)
AUDIO_TIMEOUT_S = 10.0  # per tool and tune
AUDIO_BACKLOG = 4  # sampling steps whose sound may wait to be rendered; later ones get none until it shrinks


class MetricsWriter:
    """Writes each logged step to TensorBoard and as one JSON line; a no-op on processes other than 0.

    audio_tunes: how many of each step's sampled tunes also go to TensorBoard as sound.
    """

    def __init__(self, workdir: epath.Path, resume_step: int, audio_tunes: int = 0):
        self._active = jax.process_index() == 0
        self._jsonl_path = workdir / "metrics.jsonl"
        if not self._active:
            return
        self._jsonl_lines = _lines_up_to(self._jsonl_path, resume_step)
        self._tensorboard = SummaryWriter(str(workdir), purge_step=resume_step + 1 if resume_step else None)
        self._audio = _SampleAudio(self._tensorboard, audio_tunes)
        self._config: dict[str, bool | int | float | str] = {}
        self._logged = [json.loads(line) for line in self._jsonl_lines]  # this run's figures, for the HParams table

    def write_config(self, config_json: str) -> None:
        if self._active:
            self._tensorboard.add_text("config", f"```\n{config_json}\n```", 0)
            self._config = _flatten(json.loads(config_json))

    def write_samples(self, step: int, tunes: list[str]) -> None:
        """Sampled tunes as TensorBoard text, so a user can read the model improving, and the first few
        as sound (rendered in the background), so a user can hear it."""
        if self._active:
            self._tensorboard.add_text("samples", "\n\n".join(f"```\n{tune}\n```" for tune in tunes), step)
            self._audio.log(step, tunes)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self._active:
            return
        for key, value in metrics.items():
            self._tensorboard.add_scalar(TENSORBOARD_TAGS[key], value, step)
        self._logged.append({"step": step, **metrics})
        self._jsonl_lines.append(json.dumps({"step": step, **metrics}) + "\n")
        storage.write_text_atomically(self._jsonl_path, "".join(self._jsonl_lines), "the metrics log")
        self._tensorboard.flush()

    def close(self) -> None:
        """Waits for the sampled tunes' sound, writes the run's config and final figures for the HParams
        table, and closes the event file."""
        if self._active:
            self._audio.close()
            self._write_hparams()
            self._tensorboard.close()

    def _write_hparams(self) -> None:
        """The config's keys and the run's final figures (last and best validation bits/char, the last
        sample quality fractions), under hparams/ tags: the HParams plugin reads them as one session."""
        figures = final_figures(self._logged)
        if not self._config or not figures:
            return
        step = self._logged[-1]["step"]
        for summary in hparams(self._config, figures):
            self._tensorboard.file_writer.add_summary(summary, step)
        for tag, value in figures.items():
            self._tensorboard.add_scalar(tag, value, step)


def final_figures(logged: list[dict[str, float]]) -> dict[str, float]:
    """A run's figures for the HParams table from its logged steps: final and best validation bits/char,
    final training bits/char, and the last of each sample quality fraction."""
    last = {key: value for entry in logged for key, value in entry.items()}
    figures = {f"hparams/final_{key}": last[key] for key in ("eval_bpc", "train_bpc") if key in last}
    eval_bpcs = [entry["eval_bpc"] for entry in logged if "eval_bpc" in entry]
    if eval_bpcs:
        figures["hparams/best_eval_bpc"] = min(eval_bpcs)
    fractions = sorted(key for key in last if key.startswith("sample_") and key.endswith("_fraction"))
    return figures | {f"hparams/final_{key}": last[key] for key in fractions}


def _flatten(tree: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as {"train.batch_size": 64, ...}; values other than numbers, booleans and
    strings (lists, None) as their JSON text."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, bool | int | float | str) else json.dumps(value)
    return flat


class _SampleAudio:
    """The first few sampled tunes of each sampling step as TensorBoard audio, rendered by abcjax.render's
    tools on a thread of their own: they take about a second a tune, which the train loop need not wait
    for. Without the tools, one notice at the first sampling step says what to install; when sampling
    outpaces the tools, steps past AUDIO_BACKLOG get no sound (one notice), so the end of a run never
    waits long for it."""

    def __init__(self, tensorboard: SummaryWriter, num_tunes: int):
        self._tensorboard = tensorboard
        self._num_tunes = num_tunes
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[concurrent.futures.Future] = []
        self._warned_backlog = False

    def log(self, step: int, tunes: list[str]) -> None:
        if self._num_tunes and self._pool is None:
            missing = render.available_formats()["wav"]
            if missing:
                say(f"sampled tunes go to TensorBoard as text only, not as sound: {missing}")
                self._num_tunes = 0
            else:
                self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="abcjax-sample-audio")
        if not self._pool:
            return
        self._pending = [future for future in self._pending if not future.done()]
        if len(self._pending) < AUDIO_BACKLOG:
            self._pending.append(self._pool.submit(self._play, step, tunes[: self._num_tunes]))
        elif not self._warned_backlog:
            self._warned_backlog = True
            say(f"step {step}: tunes are sampled faster than their sound is made; some steps get none")

    def _play(self, step: int, tunes: list[str]) -> None:
        try:
            for number, tune in enumerate(tunes, start=1):
                samples = render.tune_audio(tune, AUDIO_RATE, AUDIO_TIMEOUT_S)  # None: the tools reject the tune
                if samples is not None:
                    clip = samples[: AUDIO_RATE * AUDIO_MAX_S]
                    self._tensorboard.add_audio(f"samples/tune_{number}", clip, step, sample_rate=AUDIO_RATE)
        except Exception as error:  # a thread's error would pass unseen: say it, and keep training
            say(f"the sampled tunes of step {step} are not in TensorBoard as sound: {error}")

    def close(self) -> None:
        """Waits for the sound of the steps sampled so far (a few seconds a step at most)."""
        if self._pool:
            self._pool.shutdown(wait=True)


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
            line += (
                f"  | samples {metrics['sample_well_formed_fraction']:.0%} well-formed, "
                f"{metrics['sample_bars_match_meter_fraction']:.0%} bars, "
                f"{metrics['sample_copied_fraction']:.0%} copied"
            )
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

"""`abcjax plot`: a run's learning curves as one PNG, drawn from WORKDIR/metrics.jsonl.

TensorBoard shows the same figures while a run trains; a PNG is what goes into a README, an issue or
a report. The top panel is training and validation bits/char against step, the bottom one the share
of the tunes sampled during training that pass each quality check. matplotlib is an optional extra,
imported only here, and drawn through its Agg canvas, so no display is needed.
"""

from __future__ import annotations

import io
import json

from etils import epath

from abcjax import storage
from abcjax.errors import AbcjaxError

QUALITY_PREFIX = "sample_"  # metrics.jsonl keys of the sampled tunes' quality: sample_<check>_fraction
QUALITY_SUFFIX = "_fraction"
FIGURE_INCHES = (8.0, 7.0)
DOTS_PER_INCH = 120  # 960 x 840 pixels: readable on a page, small enough for a repository

Series = tuple[list[int], list[float]]  # (steps, values) of one figure, over the logged steps that have it


def plot_run(workdir: str, out: str) -> str:
    """Draws the curves of the run in `workdir` into the PNG file `out`, written whole or not at all.

    Returns the line to print. Raises AbcjaxError, before anything is written, when matplotlib is missing
    or the run has no logged step; and when `out` cannot be written.
    """
    metrics_path = storage.as_path(workdir) / "metrics.jsonl"
    records = read_metrics(metrics_path)
    png = draw_png(records, title=str(workdir))
    storage.write_bytes_atomically(storage.as_path(out), png, "the plot")
    return f"wrote {out}: {len(records)} logged steps of {workdir}, up to step {records[-1]['step']}"


def read_metrics(path: epath.Path) -> list[dict[str, float]]:
    """The logged steps of a run, one dict per line of its metrics.jsonl; a one-line error when there are none."""
    storage.check_reachable(path, "WORKDIR")
    if not path.parent.is_dir():
        raise AbcjaxError(f"no such workdir {path.parent}: give the --workdir of an abcjax train run")
    if not path.is_file():
        raise AbcjaxError(f"{path.parent} has no metrics.jsonl: abcjax train writes it there at its first logged step")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise AbcjaxError(f"{path} line {number} is not JSON ({error.msg}): is it a metrics.jsonl?") from None
        if not isinstance(record, dict) or "step" not in record:
            raise AbcjaxError(f"{path} line {number} has no step: is it a metrics.jsonl?")
        records.append(record)
    if not records:
        raise AbcjaxError(f"{path} is empty: the run has logged no step yet (train.log_every); plot it later")
    return records


def series(records: list[dict[str, float]], key: str) -> Series:
    """One figure against step, over the records that have it (validation only on eval steps, and so on)."""
    steps = [int(record["step"]) for record in records if key in record]
    return steps, [float(record[key]) for record in records if key in record]


def quality_keys(records: list[dict[str, float]]) -> list[str]:
    """The sampled-tune quality figures the run logged (sample_well_formed_fraction, ...), in first-seen order."""
    keys = dict.fromkeys(
        key for record in records for key in record if key.startswith(QUALITY_PREFIX) and key.endswith(QUALITY_SUFFIX)
    )
    return list(keys)


def quality_label(key: str) -> str:
    """sample_bars_match_meter_fraction -> "bars match meter"."""
    return key[len(QUALITY_PREFIX) : -len(QUALITY_SUFFIX)].replace("_", " ")


def draw_png(records: list[dict[str, float]], title: str) -> bytes:
    """The two panels as PNG bytes."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator, PercentFormatter
    except ImportError:
        raise AbcjaxError("abcjax plot needs matplotlib: pip install 'abcjax[plot]'") from None

    figure = Figure(figsize=FIGURE_INCHES, dpi=DOTS_PER_INCH, layout="constrained")
    loss, quality = figure.subplots(2, 1, sharex=True)
    loss.plot(*series(records, "train_bpc"), label="train")
    loss.plot(*series(records, "eval_bpc"), marker="o", label="validation")
    loss.set(title=title, ylabel="bits per character")
    loss.legend()
    loss.grid(alpha=0.3)

    keys = quality_keys(records)
    for key in keys:
        quality.plot(*series(records, key), marker="o", label=quality_label(key))
    if keys:
        quality.legend()
    else:
        note = "no sampled tunes logged (train.sample_every)"
        quality.text(0.5, 0.5, note, ha="center", va="center", transform=quality.transAxes)
    quality.set(xlabel="step", ylabel="sampled tunes", ylim=(-0.02, 1.02))
    quality.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    quality.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
    quality.grid(alpha=0.3)

    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()

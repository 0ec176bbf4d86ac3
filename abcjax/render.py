"""`abcjax render`: MIDI, WAV, Ogg and SVG files of a tunebook's tunes, so a person can hear and see them.

The work is done by Debian's command-line tools: abc2midi (package abcmidi) for MIDI, fluidsynth with
a General MIDI soundfont or else timidity for WAV and Ogg Vorbis, abcm2ps for SVG. Each tune is written
to its own small ABC file and every tool runs on that file alone, under a time limit, so a generated
tune that breaks or hangs a tool costs only that tune's file, never the batch. A missing tool skips its format
with the package to install; the other formats still render.

Files are named by tune number and title (`007-the-kesh.mid`), so reruns overwrite them. Tools write
into a hidden scratch directory inside the output directory, and a file is renamed to its final name
only once its tool has succeeded, so no output is ever half-written.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
import unicodedata
import wave

import numpy as np

from abcjax.corpus import Skip, read_corpus
from abcjax.errors import AbcjaxError

FORMATS = ("abc", "midi", "wav", "ogg", "svg")  # "abc": the tune's own text, for the HTML tunebook's links
DEFAULT_FORMATS = ("midi", "wav", "svg")  # what a render that names no format makes
EXTENSIONS = {"abc": "abc", "midi": "mid", "wav": "wav", "ogg": "ogg", "svg": "svg"}
WAV_RATE = 44_100  # CD quality: a WAV file is for listening and editing
OGG_RATE = 22_050  # a melody needs no more, and a tunebook of thousands stays small
DEFAULT_TIMEOUT_S = 30.0  # Per tool and tune; real tunes take well under a second.
SOUNDFONTS = (  # General MIDI soundfonts, in order of preference: Debian's, then other distributions'.
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
)
MAX_SLUG = 40
ROOM_PROBE_BYTES = 2**20  # after a tool fails, a disk that cannot take this much more is full

# Commands run in the tune's scratch directory; "{stem}" stands for the tune's file name stem.
MIDI_COMMAND = ("abc2midi", "{stem}.abc", "-o", "{stem}.mid")  # Exits 0 even on errors: judge by the file.
SVG_COMMAND = ("abcm2ps", "-g", "-q", "-O", "{stem}.svg", "{stem}.abc")  # -g writes {stem}001.svg.

_INSTALL = "install it with `sudo apt-get install {}`"
_NO_SYNTH = (
    "no WAV synthesizer found: install timidity (`sudo apt-get install timidity freepats`) "
    "or fluidsynth (`sudo apt-get install fluidsynth fluid-soundfont-gm`)"
)


@dataclasses.dataclass(frozen=True)
class Failure:
    """A tune a tool could not render: which formats it lost, and the tool's first error line."""

    number: int
    title: str
    formats: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return f"tune {self.number} ({self.title}): no {', '.join(self.formats)}: {self.message}"


@dataclasses.dataclass(frozen=True)
class RenderReport:
    """What a render wrote, what failed and why, so a user can find and fix what is missing."""

    out_dir: str
    num_tunes: int
    written: dict[str, tuple[str, ...]]  # format -> paths of its files, sorted
    failures: tuple[Failure, ...]  # sorted by tune number
    skipped: dict[str, str]  # format -> why none of its files could be made (the package to install)
    unread: tuple[Skip, ...]  # tunes the corpus reader left out, e.g. ("tunes.abc:12", "no music")

    def summary(self) -> str:
        """One line for the end of the run: files per format, failures per format, what was not made."""
        made = ", ".join(f"{len(paths)} {fmt}" for fmt, paths in self.written.items())
        line = f"rendered {self.num_tunes} tunes into {self.out_dir}: {made or 'nothing'}"
        lost = collections.Counter(fmt for failure in self.failures for fmt in failure.formats)
        if lost:
            line += f"; failed: {', '.join(f'{lost[fmt]} {fmt}' for fmt in FORMATS if lost[fmt])}"
        if self.unread:
            line += f"; unreadable tunes: {len(self.unread)}"
        return line + "".join(f"; no {fmt}: {why}" for fmt, why in self.skipped.items())


@dataclasses.dataclass(frozen=True)
class TuneFile:
    """A tune as render names its files: its number (X: or position), title and file name stem."""

    number: int
    title: str
    stem: str  # output file name without extension, e.g. "007-the-kesh"
    text: str


@dataclasses.dataclass(frozen=True)
class _ToolRun:
    """One tool run per tune: its command, the file it makes, and what that file is for."""

    command: tuple[str, ...]  # empty for the tune's own .abc file, which is there before any tool runs
    product: str  # the file the command writes, "{stem}" filled in per tune
    formats: tuple[str, ...]  # the asked formats lost if this run fails
    keep_as: str | None  # the format this file is published as; None for an intermediate file


def available_formats() -> dict[str, str | None]:
    """Each format mapped to None when its tools are installed, else what to install to get it."""
    midi = None if shutil.which("abc2midi") else f"abc2midi not found: {_INSTALL.format('abcmidi')}"
    sound_problems = [f"sound is made from MIDI, and {midi}"] if midi else []
    if not _synth_command("wav", WAV_RATE):
        sound_problems.append(_NO_SYNTH)
    sound = "; ".join(sound_problems) or None
    svg = None if shutil.which("abcm2ps") else f"abcm2ps not found: {_INSTALL.format('abcm2ps')}"
    return {"abc": None, "midi": midi, "wav": sound, "ogg": sound, "svg": svg}


def render_tunebook(
    path: str,
    out_dir: str,
    formats: set[str],
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    jobs: int | None = None,
) -> RenderReport:
    """Render every tune of the ABC file at path into out_dir, one file per tune and format.

    formats is a subset of FORMATS; empty means DEFAULT_FORMATS. A format whose tools are missing is skipped,
    and a tune a tool fails on is reported and skipped; only when no asked format can be made at
    all is it an error. progress prints skipped formats, failed tunes and a line with count and ETA
    every tenth of the batch. timeout is the seconds each tool may spend on one tune; jobs is how many
    tunes render at once (default: one per CPU).
    """
    asked = set(formats) or set(DEFAULT_FORMATS)
    unknown = asked - set(FORMATS)
    if unknown:
        raise AbcjaxError(f"unknown format {', '.join(sorted(unknown))}: choose from {', '.join(FORMATS)}")
    if jobs is not None and jobs < 1:
        raise AbcjaxError(f"--jobs {jobs} must be at least 1, or left out for one per CPU")
    corpus = read_corpus(path)
    problems = available_formats()
    skipped = {fmt: problems[fmt] for fmt in FORMATS if fmt in asked and problems[fmt]}
    if len(skipped) == len(asked):
        reasons = "; ".join(f"{fmt}: {why}" for fmt, why in skipped.items())
        raise AbcjaxError(f"cannot make any of the asked formats ({reasons})")
    out = _make_out_dir(out_dir)
    for fmt, why in skipped.items():
        _say(progress, f"skipping {fmt}: {why}")
    for where, why in corpus.report.skipped:
        _say(progress, f"not rendering the tune at {where}: {why}")
    runs = _tool_runs(asked - set(skipped))
    written, failures = _render_all(tune_files(corpus.tunes), runs, out, timeout, jobs, progress)
    return RenderReport(
        out_dir=out_dir,
        num_tunes=len(corpus.tunes),
        written={fmt: tuple(sorted(written[fmt])) for fmt in FORMATS if fmt in asked and fmt not in skipped},
        failures=tuple(sorted(failures, key=lambda failure: failure.number)),
        skipped=skipped,
        unread=corpus.report.skipped,
    )


def slug(title: str) -> str:
    """A title as a file name part a shell never needs quoting for: "Alexander's Reel" -> "alexanders-reel"."""
    plain = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower().replace("'", "")
    return re.sub(r"[^a-z0-9]+", "-", plain)[:MAX_SLUG].strip("-") or "untitled"


def _make_out_dir(out_dir: str) -> pathlib.Path:
    out = pathlib.Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AbcjaxError(f"cannot create {out} ({error.strerror}): give --out a writable directory") from None
    return out


def _synth_command(fmt: str, rate: int) -> tuple[str, ...] | None:
    """The command playing {stem}.mid into {stem}.wav or {stem}.ogg (fmt) at rate samples per second:
    fluidsynth with a General MIDI soundfont when both are installed (it sounds better), else timidity.

    Both play louder than their defaults, which peak near -25 dBFS on abc2midi's tunes (too quiet beside
    other sound); the gains here put the bundled tunes' peaks near -10 dBFS, chords included.
    """
    soundfont = next((path for path in SOUNDFONTS if os.path.isfile(path)), None)
    product = f"{{stem}}.{fmt}"
    if shutil.which("fluidsynth") and soundfont:
        file_type = {"wav": "wav", "ogg": "oga"}[fmt]  # libsndfile's name for Ogg Vorbis
        options = ("-ni", "-g", "1.0", "-T", file_type, "-F", product, "-r", str(rate))
        return ("fluidsynth", *options, soundfont, "{stem}.mid")
    if shutil.which("timidity"):
        mode = {"wav": "-Ow", "ogg": "-Ov"}[fmt]
        return ("timidity", mode, "-A", "300", "-s", str(rate), "-o", product, "{stem}.mid")
    return None


def _tool_runs(formats: set[str], wav_rate: int = WAV_RATE) -> list[_ToolRun]:
    """The tool runs each tune needs for formats, in order: MIDI first, since WAV and Ogg are played from it."""
    runs = []
    sounds = [fmt for fmt in ("wav", "ogg") if fmt in formats]
    if "midi" in formats or sounds:
        keep_as = "midi" if "midi" in formats else None
        runs.append(_ToolRun(MIDI_COMMAND, "{stem}.mid", ("midi", *sounds) if keep_as else tuple(sounds), keep_as))
    for fmt in sounds:
        command = _synth_command(fmt, wav_rate if fmt == "wav" else OGG_RATE)
        if command:
            runs.append(_ToolRun(command, f"{{stem}}.{fmt}", (fmt,), fmt))
    if "svg" in formats:
        runs.append(_ToolRun(SVG_COMMAND, "{stem}001.svg", ("svg",), "svg"))
    if "abc" in formats:  # written before the tools run; kept like their files
        runs.append(_ToolRun((), "{stem}.abc", ("abc",), "abc"))
    return runs


def tune_files(texts: tuple[str, ...]) -> list[TuneFile]:
    """The tunes with their numbers, titles and file stems, zero-padded so files sort in tune order."""
    numbers = _tune_numbers(texts)
    width = max(3, len(str(max(numbers))))
    titles = [_title(text) for text in texts]
    return [
        TuneFile(number, title, f"{number:0{width}d}-{slug(title)}", text)
        for number, title, text in zip(numbers, titles, texts, strict=True)
    ]


def _tune_numbers(texts: tuple[str, ...]) -> list[int]:
    """Each tune's X: number, so a file leads back to its tune; positions 1..N when X: numbers repeat.

    A tunebook from `abcjax sample` is numbered X:1..N; collections joined into one file (such as
    the bundled corpus) repeat numbers, and their files must not overwrite each other.
    """
    fields = [text.split("\n", 1)[0].removeprefix("X:").strip() for text in texts]
    if all(field.isascii() and field.isdigit() for field in fields):
        numbers = [int(field) for field in fields]
        if len(set(numbers)) == len(numbers):
            return numbers
    return list(range(1, len(texts) + 1))


def _title(text: str) -> str:
    titles = (line[2:].strip() for line in text.split("\n") if line.startswith("T:"))
    return next(titles, "") or "untitled"


def _render_all(
    tunes: list[TuneFile], runs: list[_ToolRun], out: pathlib.Path, timeout: float, jobs: int | None, progress: bool
) -> tuple[dict[str, list[str]], list[Failure]]:
    """Render tunes on a pool of threads (the work is in the tools' processes), reporting as they finish."""
    written: dict[str, list[str]] = collections.defaultdict(list)
    failures: list[Failure] = []
    every = max(1, len(tunes) // 10)
    started = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(jobs or os.cpu_count())
    try:
        pending = [pool.submit(_render_tune, tune, runs, out, timeout) for tune in tunes]
        for done, future in enumerate(concurrent.futures.as_completed(pending), start=1):
            tune_written, tune_failures = future.result()
            for fmt, file in tune_written:
                written[fmt].append(file)
            for failure in tune_failures:
                _say(progress, str(failure))
            failures.extend(tune_failures)
            if done % every == 0 or done == len(tunes):
                eta = (time.monotonic() - started) / done * (len(tunes) - done)
                _say(progress, f"  {done}/{len(tunes)} tunes done, ETA {eta:.0f}s, failures so far: {len(failures)}")
    except OSError as error:
        hint = "free some space or choose another --out, then run the same command again"
        raise AbcjaxError(f"cannot write the rendered files into {out} ({error.strerror}): {hint}") from None
    finally:
        pool.shutdown(cancel_futures=True)  # On Ctrl-C, do not render the tunes still queued.
    return written, failures


def _render_tune(
    tune: TuneFile, runs: list[_ToolRun], out: pathlib.Path, timeout: float
) -> tuple[list[tuple[str, str]], list[Failure]]:
    """Run each tool on one tune in a scratch directory, then move the files that came out right into out.

    A run whose formats are already lost (WAV after MIDI failed) is not attempted.
    """
    failures: list[Failure] = []
    lost: set[str] = set()
    made: list[tuple[str, pathlib.Path]] = []
    with tempfile.TemporaryDirectory(dir=out, prefix=".render-") as scratch_dir:
        scratch = pathlib.Path(scratch_dir)
        (scratch / f"{tune.stem}.abc").write_text(tune.text + "\n", encoding="utf-8")
        for run in runs:
            if lost.intersection(run.formats):
                continue
            product = scratch / run.product.replace("{stem}", tune.stem)
            command = [arg.replace("{stem}", tune.stem) for arg in run.command]
            problem = _run_tool(command, product, timeout) if command else None
            if problem:
                _check_room(scratch)  # a full disk fails every tool: one error, not a failure per tune
                failures.append(Failure(tune.number, tune.title, run.formats, problem))
                lost.update(run.formats)
            elif run.keep_as:
                made.append((run.keep_as, product))
        written = []
        for fmt, product in made:
            final = out / f"{tune.stem}.{EXTENSIONS[fmt]}"
            product.replace(final)
            written.append((fmt, str(final)))
    return written, failures


def tune_audio(text: str, sample_rate: int, timeout: float = DEFAULT_TIMEOUT_S) -> np.ndarray | None:
    """One tune played at sample_rate as mono float32 samples in [-1, 1], or None when a tool rejects it.

    The tools and their runs are render's own (MIDI, then WAV), so what TensorBoard plays is what
    `abcjax render --wav` writes; the caller checks available_formats()["wav"] first.
    """
    with tempfile.TemporaryDirectory(prefix="abcjax-audio-") as folder:
        out = pathlib.Path(folder)
        written, _ = _render_tune(TuneFile(1, "", "tune", text), _tool_runs({"wav"}, sample_rate), out, timeout)
        if not written:
            return None
        with wave.open(str(out / "tune.wav"), "rb") as file:
            channels, frames = file.getnchannels(), file.readframes(file.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)  # [time, channel], 16-bit
    return samples.mean(axis=1, dtype=np.float32) / 32768.0


def _check_room(directory: pathlib.Path) -> None:
    """Raises the OSError of writing ROOM_PROBE_BYTES into `directory` when that fails: no room for
    another rendered file (a WAV takes megabytes), so the render cannot go on."""
    probe = directory / ".room-probe"
    try:
        with open(probe, "wb") as file:
            file.write(bytes(ROOM_PROBE_BYTES))
    finally:
        probe.unlink(missing_ok=True)


def _run_tool(command: list[str], product: pathlib.Path, timeout: float) -> str | None:
    """Run command in product's directory: None if it exited 0 and wrote product, else why not, in one line."""
    try:
        result = subprocess.run(
            command,
            cwd=product.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"{command[0]} took longer than {timeout:g}s and was stopped"
    except OSError as error:
        return f"{command[0]} could not start ({error.strerror})"
    if result.returncode != 0:
        return f"{command[0]} failed (exit code {result.returncode}): {_first_error(result)}"
    if not product.is_file() or product.stat().st_size == 0:
        return f"{command[0]} wrote no file: {_first_error(result)}"
    return None


def _first_error(result: subprocess.CompletedProcess) -> str:
    """The tool's first line that says "error" (abc2midi prints them on stdout), else its first stderr line."""
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["it printed nothing"])[0][:200]


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, flush=True)

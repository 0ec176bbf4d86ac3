"""abc2midi, the reference ABC player, as a judge: does it play a tune, and what does it say about it.

abc2midi says "Error" of many things it plays without trouble, so its messages are sorted here:
an error is a message that means the tune cannot be played as written (a note, chord, grace group
or field it cannot read, a tuplet inside a tuplet); the rest are warnings: style notes ("Hornpipe
must be in 2/4 or 4/4 time", a chord symbol that names no chord), ties and broken rhythms it cannot
apply but ABC 2.1 defines, and its repeat bookkeeping, which it gets wrong for valid ABC and which
abcjax.abc_bars.repeats_balanced judges instead. A message of a kind not listed counts as an error.

Tunes are judged in batches, one abc2midi run per batch and the batches in parallel, with each
tune's messages found by the line numbers abc2midi gives.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

from abcjax.errors import AbcjaxError

PARSER = "abc2midi"
PARSER_MISSING = f"{PARSER} not found (Debian package abcmidi)"  # the start of the notice without it
_MESSAGE = re.compile(r"^(Error|Warning) in line-char (\d+)-(\d+) : (.*)$", re.MULTILINE)

# abc2midi's "Error" messages that are warnings, with why (docs/evaluation.md lists them with examples).
WARNINGS_CALLED_ERRORS = {
    "Hornpipe must be in": "a style note on R:hornpipe; the tune plays",
    "Guitar chord does not start with": "an annotation in quotes that is no chord symbol; it is not played",
    "Unrecognized chord name": "a chord symbol abc2midi cannot voice; the melody plays",
    "Could not find note to be tied": "a tie to another pitch or across a part; the notes play",
    "Cannot find note before tie": "a tie with no note before it; the notes play",
    "Cannot apply broken rhythm": "broken rhythm on notes of unequal length, which ABC 2.1 defines",
    "Intervening note needed between grace notes": "two grace groups in a row; the notes play",
    "Rolls and trills not supported in chords": "an ornament abc2midi leaves out; the notes play",
    "Missing :| at end of tune": "repeat bookkeeping: repeats_balanced judges repeats",
    "before |:": "repeat bookkeeping: a first ending in a part without |: is valid ABC",
    "found another |: after a |:": "repeat bookkeeping: repeats_balanced judges repeats",
    "Expected end repeat not found": "repeat bookkeeping: repeats_balanced judges repeats",
    "not recognized": "an I: instruction abc2midi does not know; it has no effect on the music",
    "malformed Q: field ignored": "a tempo given in words, which ABC 2.1 allows",
    "in part specification": "a P: field abc2midi cannot use; the music plays",
    "Sustained notes beyond end of track": "a tie or note held at the very end; the notes play",
    "in middle of line ignored": "a deprecated line-break sign; the music plays",
}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What abc2midi said of one tune: its errors and warnings, each "line N: message"."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]


def available() -> bool:
    """Whether abc2midi is on PATH."""
    return shutil.which(PARSER) is not None


def is_error(message: str) -> bool:
    """An abc2midi "Error" message that means the tune cannot be played as written."""
    return not any(known in message for known in WARNINGS_CALLED_ERRORS)


def judge(tunes: list[list[str]], jobs: int | None = None) -> list[Verdict]:
    """abc2midi's verdict on each tune (given as its lines without X:), batches run in parallel."""
    if not tunes:
        return []
    if not available():
        raise AbcjaxError(
            f"{PARSER} not found on PATH: install it (Debian: apt-get install abcmidi) to check tunes parse"
        )
    workers = max(1, min(jobs or os.cpu_count() or 1, len(tunes) // 200 + 1))
    size = -(-len(tunes) // workers)
    batches = [tunes[start : start + size] for start in range(0, len(tunes), size)]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # the work is in abc2midi's processes
        return [verdict for batch in pool.map(_judge_batch, batches) for verdict in batch]


def _judge_batch(tunes: list[list[str]]) -> list[Verdict]:
    """One abc2midi run over the batch; abc2midi stops a whole file at a few errors (a zero length
    denominator) and crashes on rare garbage, losing the tunes after it, so a batch it stops on is
    halved until the culprit is alone: every other tune keeps its own verdict."""
    stopped, verdicts = _run(tunes)
    if stopped is None:
        return verdicts
    if len(tunes) == 1:
        return [Verdict((*verdicts[0].errors, f"abc2midi stopped on this tune ({stopped})"), verdicts[0].warnings)]
    middle = len(tunes) // 2
    return _judge_batch(tunes[:middle]) + _judge_batch(tunes[middle:])


def _run(tunes: list[list[str]]) -> tuple[str | None, list[Verdict]]:
    """One abc2midi run on the tunes numbered 1.. in one file: why it stopped early (None if it did not)
    and each tune's messages, found by line (a tune's last line, or the blank line after it, where
    abc2midi reports what it finds missing at the end)."""
    starts, lines = [], []
    for number, tune in enumerate(tunes, start=1):
        starts.append(len(lines) + 1)
        lines += [f"X:{number}", *tune, ""]
    errors: list[list[str]] = [[] for _ in tunes]
    warnings: list[list[str]] = [[] for _ in tunes]
    with tempfile.TemporaryDirectory() as folder:  # abc2midi -c still writes a stray file in its folder
        (pathlib.Path(folder) / "tunes.abc").write_text("\n".join(lines), encoding="utf-8")
        timeout = 10 + len(tunes) / 1000  # it reads ~40,000 tunes/s: this only catches a hang
        try:
            result = subprocess.run(  # errors="replace": it echoes bytes of broken input
                [PARSER, "tunes.abc", "-c"],
                cwd=folder,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return f"no answer in {timeout:.0f} s", [Verdict((), ()) for _ in tunes]
    for kind, line, _, message in _MESSAGE.findall(result.stdout):
        index = bisect.bisect_right(starts, int(line)) - 1
        text = f"line {int(line) - starts[index] + 1}: {message.strip()}"
        (errors if kind == "Error" and is_error(message) else warnings)[index].append(text)
    verdicts = [Verdict(tuple(e), tuple(w)) for e, w in zip(errors, warnings, strict=True)]
    return (None if result.returncode == 0 else f"exit status {result.returncode}"), verdicts

"""Copied and repeated phrases: a tune's runs of 4 bars, note for note, as fingerprints.

A generated tune that replays 4 bars of one training tune in a row has copied a phrase of it, and one
that shares 4 bars with another tune of its own batch repeats a stock phrase. Both are found the same
way: every run of RUN bars of a tune (its bars' notes as the judge reads them, so spacing and bar-line
style do not matter) becomes a 64-bit fingerprint, and two tunes share a phrase when they share a
fingerprint. The training tunes' fingerprints are saved in the workdir at training time, so
`sample --require novel` needs no corpus, and `evaluate --corpus` uses the very same check.
"""

from __future__ import annotations

import collections
import hashlib
import io

import numpy as np
from etils import epath

from abcjax import abc, storage
from abcjax.errors import AbcjaxError

RUN = 4  # bars in a row, note for note, that make a phrase
PHRASES_FILE = "training_phrases.npy"


def fingerprints(bars: list[str], run: int = RUN) -> set[int]:
    """The fingerprints of every run of `run` bars of one tune (given as its bars' notes)."""
    return {_fingerprint(bars[start : start + run]) for start in range(len(bars) - run + 1)}


def _fingerprint(phrase: list[str]) -> int:
    """A phrase's 64-bit digest: the same in every process and run, unlike Python's hash()."""
    return int.from_bytes(hashlib.blake2b("\x1f".join(phrase).encode(), digest_size=8).digest(), "little")


def tune_bars(tune: str) -> list[str]:
    """A tune's bars' notes as the judge reads them, without running abc2midi."""
    return [bar.notes for bar in abc.Tune.read(tune).read_body().bars]


def phrases_of(tunes_bars: list[list[str]]) -> frozenset[int]:
    """Every phrase of the tunes: what a tune must not share with them to be novel."""
    return frozenset().union(*(fingerprints(bars) for bars in tunes_bars))


def copies(bars: list[str], training: frozenset[int]) -> bool:
    """Whether the tune replays a phrase of the training tunes."""
    return not fingerprints(bars).isdisjoint(training)


def repeats_another(tunes_bars: list[list[str]]) -> list[bool]:
    """For each tune, whether it shares a phrase with another tune of the batch (not with itself)."""
    found = [fingerprints(bars) for bars in tunes_bars]
    owners = collections.Counter(phrase for phrases in found for phrase in phrases)
    return [any(owners[phrase] > 1 for phrase in phrases) for phrases in found]


def save_phrases(workdir: epath.Path, phrases: frozenset[int]) -> None:
    """Writes the training tunes' phrases into the workdir, whole or not at all (a resumed run finds
    them there already, and leaves the file alone)."""
    path = workdir / PHRASES_FILE
    if path.exists() and load_phrases(workdir) == phrases:
        return
    buffer = io.BytesIO()
    np.save(buffer, np.array(sorted(phrases), dtype=np.uint64))
    storage.write_bytes_atomically(path, buffer.getvalue(), "the training phrases")


def load_phrases(workdir: epath.Path) -> frozenset[int]:
    """The phrases `save_phrases` wrote; a one-line error when the workdir has none."""
    path = workdir / PHRASES_FILE
    if not path.exists():
        raise AbcjaxError(
            f"{path} not found: the workdir was trained before abcjax saved its training phrases; "
            "run abcjax train on it again (it resumes at once and writes them), or leave out novel"
        )
    try:
        return frozenset(int(value) for value in np.load(io.BytesIO(path.read_bytes())))
    except (OSError, ValueError) as error:
        raise AbcjaxError(f"cannot read {path} ({error}): run abcjax train on the workdir to rewrite it") from None

"""The checks `abcjax sample --require` can ask of a tune, as the worker processes that judge candidates run them.

Each check is one verdict of the judge (abcjax.abc), or, for novel, the copy check of abcjax.copying
against the training tunes' phrases saved in the workdir: the figures `abcjax evaluate` reports, so a
required tunebook evaluates at 100% on each check it asked for. This module never imports JAX: the
worker processes that import it start in a moment and leave the devices, and their memory, to the
sampler.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading

from abcjax import abc, copying

# name -> what a passing tune is, for messages and docs
CHECKS = {
    "well_formed": "well-formed ABC that abc2midi plays",
    "bars_match_meter": "every bar fills its meter",
    "repeats_balanced": "its repeat signs pair up",
    "novel": f"copies no {copying.RUN} bars in a row of a training tune",
}

_required: tuple[str, ...] = ()  # set in each worker by set_up
_training_phrases: frozenset[int] = frozenset()


def verdicts(texts: list[str], checks: tuple[str, ...], training_phrases: frozenset[int]) -> list[dict[str, bool]]:
    """For each tune, whether it passes each of `checks`, from one reading of the batch."""
    found = []
    for tune_checks, bars in abc.examine([abc.Tune.read(text) for text in texts]):
        judged = dict(tune_checks, novel=not copying.copies(bars, training_phrases))
        found.append({name: bool(judged[name]) for name in checks})
    return found


def set_up(checks: tuple[str, ...], training_phrases: frozenset[int]) -> None:
    """A worker's initializer: the checks and phrases arrive once, not with every batch. Ctrl-C and
    SIGTERM are the parent's to handle (it stops once the tunes under way are judged), so the worker
    ignores them and is shut down by the parent, or exits when the parent is gone."""
    global _required, _training_phrases
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _required, _training_phrases = checks, training_phrases
    threading.Thread(target=_exit_with_parent, daemon=True).start()


def _exit_with_parent() -> None:
    """A pool's worker outlives a parent killed outright (SIGKILL, the OOM killer): it waits for work
    on a queue that it holds open itself. The parent's sentinel ends that wait."""
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(1)


def judge(texts: list[str]) -> list[dict[str, bool]]:
    """verdicts on the checks and phrases set_up gave this worker."""
    return verdicts(texts, _required, _training_phrases)

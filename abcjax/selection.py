"""`abcjax sample --require CHECKS`: exactly the tunes asked for, each passing every check named.

Candidate j is tune j of unrequired sampling (key fold_in(seed, j), prime j % len(primes)), and tune i
of the output is the i-th candidate, in candidate order, that passes every check. So tune i is a pure
function of (checkpoint, seed, options, i): asking for more tunes only adds tunes at the end, and the
device count, batch size and chunk sizes change nothing.

The checks (abcjax.tune_checks: abcjax's ABC reading and abc2midi) run on the host, in worker
processes, on the candidates of one compiled call while the devices sample the next: JAX dispatches
a call and returns, so the next chunk is started before the last is checked. Chunk sizes follow the
acceptance rate so far: enough candidates for the tunes still wanted, with a margin, and no chunk
at all while those in flight are expected to be enough (the devices then wait for the last checks
rather than sample tunes that will be thrown away).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import math
import multiprocessing
import os
from collections.abc import Callable, Iterator

from jax.sharding import Mesh

from abcjax import abc, copying, storage, tune_checks
from abcjax.errors import AbcjaxError
from abcjax.parallel import check_divisible, round_up, round_up_to_devices
from abcjax.sample import TUNES_PER_SLOT, SampledTune, Sampler

# The default --max_candidates is this many per tune asked for (and at least MIN_MAX_CANDIDATES): a
# requirement that fewer than 1 candidate in 20 meets makes each tune cost over 20 unfiltered ones,
# and a lower --temperature, fewer checks or a better checkpoint then does better than waiting; the
# floor keeps a small --num_tunes from giving up on a few unlucky candidates.
CANDIDATES_PER_TUNE = 20
MIN_MAX_CANDIDATES = 1000
MIN_SLOTS = 32  # the fewest slots batch_size_for gives a run of that many tunes or more
# Judging processes at most (one per CPU below that): each judges a tune in about 1.2 ms (the demo
# model's tunes) and holds its own copy of the judge and the training phrases.
MAX_JUDGES = 32


@dataclasses.dataclass(frozen=True)
class Requirement:
    checks: tuple[str, ...]  # names in tune_checks.CHECKS, each once
    max_candidates: int  # candidates checked at most before giving up
    training_phrases: frozenset[int]  # the training tunes' phrases when novel is required, else empty


def load_requirement(
    checks: tuple[str, ...], workdir: str, num_tunes: int, max_candidates: int | None = None
) -> Requirement:
    """The requirement, checked before any sampling: known check names, abc2midi on PATH (every
    check reads tunes through the judge), the workdir's training phrases for novel, and a bound
    that leaves room for num_tunes tunes (default: CANDIDATES_PER_TUNE per tune)."""
    names = tuple(dict.fromkeys(name.strip() for name in checks if name.strip()))
    unknown = [name for name in names if name not in tune_checks.CHECKS]
    if unknown or not names:
        raise AbcjaxError(
            f"--require {','.join(checks)}: {'unknown check ' + repr(unknown[0]) if unknown else 'no check named'}; "
            f"give a comma list of {', '.join(tune_checks.CHECKS)}"
        )
    if not abc.parser_available():
        raise AbcjaxError(f"--require needs {abc.PARSER} to judge tunes: install it (Debian: apt-get install abcmidi)")
    bound = max(CANDIDATES_PER_TUNE * num_tunes, MIN_MAX_CANDIDATES) if max_candidates is None else max_candidates
    if bound < num_tunes:
        raise AbcjaxError(f"--max_candidates {bound} must be at least --num_tunes {num_tunes}")
    phrases = copying.load_phrases(storage.as_path(workdir)) if "novel" in names else frozenset()
    return Requirement(names, bound, phrases)


def batch_size_for(num_tunes: int, batch_size: int, mesh: Mesh) -> int:
    """Slots that each write about TUNES_PER_SLOT of num_tunes tunes (for a required run, and for any
    run on a CPU: generate.sampling_slots): chunks, which come in multiples of the slot count, then end
    close to the tunes or candidates still needed; but at least MIN_SLOTS (or num_tunes, if fewer),
    since fewer slots leave a CPU's or an accelerator's matrix units mostly idle; at most batch_size."""
    slots = max(math.ceil(num_tunes / TUNES_PER_SLOT), min(num_tunes, MIN_SLOTS))
    return min(batch_size, round_up_to_devices(slots, mesh))


class Selector:
    """Called like sample.Sampler, but delivers only the candidates that pass the requirement; one run.

    Its tally (candidates checked, how many passed, and passed each check) feeds the progress lines,
    the closing report and the tunebook header. `written` is a candidate's text as the tunebook will
    hold it, which is what is judged.
    """

    def __init__(self, sampler: Sampler, requirement: Requirement, written: Callable[[SampledTune], str]):
        self._sampler = sampler
        self.requirement = requirement
        self._written = written
        self.num_tunes = 0
        self.checked = 0  # candidates judged
        self.passed = 0  # of those, candidates that passed every check
        self.passed_each: collections.Counter[str] = collections.Counter()
        self.delivered = 0
        self.exhausted = False  # max_candidates checked before num_tunes passed

    def __call__(
        self, params, seed: int, num_tunes: int, batch_size: int, on_chunk=lambda chunk: None
    ) -> list[SampledTune]:
        """The first num_tunes passing candidates, handed to on_chunk as each chunk is judged (also
        when none of it passed, so the caller hears of every chunk); fewer when max_candidates
        candidates did not hold them (then `exhausted`)."""
        check_divisible(batch_size, self._sampler.mesh, "--batch_size")
        self.num_tunes = num_tunes
        tunes: list[SampledTune] = []
        drawn = 0  # candidates started: 0..drawn-1
        in_flight: collections.deque = collections.deque()  # (count, finish) of started chunks, in order
        with _judges(self.requirement) as judge:
            while len(tunes) < num_tunes:
                # Start the next chunk before judging the last, so the devices sample while the host judges.
                while len(in_flight) < 2:
                    unchecked = sum(count for count, _ in in_flight)
                    count = self._next_count(batch_size, drawn, unchecked)
                    if count == 0:
                        break
                    in_flight.append((count, self._sampler.start(params, seed, drawn, count, batch_size)))
                    drawn += count
                if not in_flight:
                    break
                _, finish = in_flight.popleft()
                candidates = finish()
                chunk = self._judge(judge, candidates)[: num_tunes - len(tunes)]
                tunes.extend(chunk)
                self.delivered = len(tunes)
                on_chunk(chunk)
        self.exhausted = len(tunes) < num_tunes
        return tunes

    def _next_count(self, batch_size: int, drawn: int, unchecked: int) -> int:
        """Candidates to start next (0: none) so that, at the rate so far, those judged and those in
        flight hold the tunes still wanted with two standard deviations to spare; a multiple of
        batch_size up to TUNES_PER_SLOT of them, never past max_candidates."""
        wanted = self.num_tunes - self.passed
        left = self.requirement.max_candidates - drawn
        if wanted <= 0 or left <= 0:
            return 0
        rate = (self.passed + 1) / (self.checked + 1)  # 1 before any verdict; never 0
        count = math.ceil((wanted + 2 * math.sqrt(wanted)) / rate) - unchecked
        return max(0, min(round_up(count, batch_size), batch_size * TUNES_PER_SLOT, left))

    def _judge(self, judge: Callable[[list[str]], list[dict[str, bool]]], candidates: list[SampledTune]):
        """The candidates that pass every check, in candidate order; the tally counts them all."""
        verdicts = judge([self._written(tune) for tune in candidates])
        self.checked += len(candidates)
        for verdict in verdicts:
            self.passed_each.update(name for name, passed in verdict.items() if passed)
        passing = [tune for tune, verdict in zip(candidates, verdicts, strict=True) if all(verdict.values())]
        self.passed += len(passing)
        return passing

    @property
    def rate(self) -> float:
        """The share of the candidates judged so far that passed every check."""
        return self.passed / self.checked if self.checked else 0.0

    def progress(self) -> str:
        """The tally, for a progress line."""
        return f" ({self.checked:,} candidates, {self.rate:.1%} passed)"

    def summary(self, seconds: float) -> str:
        """The closing report: acceptance, overall and per check, and the time each tune took."""
        shares = ", ".join(
            f"{name} {self.passed_each[name] / max(self.checked, 1):.1%}" for name in self.requirement.checks
        )
        per_tune = f"{seconds / self.delivered:.3f}s per delivered tune, " if self.delivered else ""
        return (
            f"{self.passed:,} of {self.checked:,} candidates passed ({self.rate:.1%}; {shares}): "
            f"{per_tune}{1000 * seconds / max(self.checked, 1):.1f}ms per candidate"
        )

    def header_lines(self) -> tuple[str, ...]:
        """The tunebook header's lines on the requirement (without their `% `)."""
        lines = [
            f"required {', '.join(self.requirement.checks)}: "
            f"{self.passed:,} of {self.checked:,} candidates passed ({self.rate:.1%})"
        ]
        if self.exhausted:
            lines.append(f"--max_candidates {self.requirement.max_candidates:,} reached before {self.num_tunes} passed")
        return tuple(lines)

    def shortfall(self) -> str:
        """The one-line error of an exhausted run: what passed, what failed most, what to try."""
        checks = self.requirement.checks
        rarest = min(checks, key=lambda name: self.passed_each[name])
        hardest = f", fewest passed {rarest}" if len(checks) > 1 else ""
        found = f"; the {self.delivered} found are written" if self.delivered else ""
        return (
            f"only {self.delivered} of {self.num_tunes} tunes passed {','.join(checks)} in "
            f"{self.checked:,} candidates ({self.rate:.2%} passed{hardest}){found}: try a lower --temperature, "
            f"fewer checks, a better-trained checkpoint, or a larger --max_candidates"
        )


@contextlib.contextmanager
def _judges(requirement: Requirement) -> Iterator[Callable[[list[str]], list[dict[str, bool]]]]:
    """A function judging tunes over worker processes, each handed the requirement once.

    Spawned, not forked: a fork of a process running JAX's threads may deadlock, and a spawned worker
    imports only the judge. Each batch is split evenly over the workers.
    """
    workers = min(os.cpu_count() or 1, MAX_JUDGES)
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=tune_checks.set_up,
        initargs=(requirement.checks, requirement.training_phrases),
    )

    def judge(texts: list[str]) -> list[dict[str, bool]]:
        size = max(1, math.ceil(len(texts) / workers))
        parts = pool.map(tune_checks.judge, [texts[start : start + size] for start in range(0, len(texts), size)])
        return [verdict for part in parts for verdict in part]

    try:
        pool.submit(tune_checks.judge, [])  # starts the workers now, while the first chunk compiles and samples
        yield judge
    finally:
        pool.shutdown(cancel_futures=True)

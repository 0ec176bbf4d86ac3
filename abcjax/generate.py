"""`abcjax sample`: tunes from a workdir's checkpoint, written as a tunebook, files and JSON lines.

Output never depends on timing or paths beyond the command's own arguments, so the same command
twice writes byte-identical files, as does the same run over several processes (process 0 writes).
Each file is written whole or not at all (`storage.write_text_atomically`), so an interrupted run
leaves no half-written output; any of them may be a gs:// path. Ctrl-C or SIGTERM stops sampling
once the chunk under way is done, and the tunes finished by then (always tunes 1..k) are written.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import signal
import time

import jax

from abcjax import abc, parallel, selection, signals, storage
from abcjax import abc_grammar as grammar
from abcjax.checkpoint import Choice
from abcjax.errors import AbcjaxError
from abcjax.metrics import format_duration, say
from abcjax.sample import DEFAULT_PRIME, SampledTune, SamplingOptions, make_sampler
from abcjax.trained import load_trained

MAX_SLOTS = 1024  # tunes written at once when --batch_size is not given, at most


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    workdir: str
    num_tunes: int
    out: str | None
    seed: int = 0
    options: SamplingOptions = SamplingOptions()
    primes: tuple[str, ...] = (DEFAULT_PRIME,)
    batch_size: int | None = None  # slots, tunes written at once; None: chosen (see sampling_slots)
    step: str | int = "best"  # "best", "latest" or a step number
    split_dir: str | None = None
    jsonl: str | None = None
    require: tuple[str, ...] = ()  # checks every tune must pass (abcjax.tune_checks.CHECKS); () takes every tune
    max_candidates: int | None = None  # with require: candidates judged at most (default: see abcjax.selection)


def unescape_prime(text: str) -> str:
    r"""A prime as typed on a command line or in a prime file: `\n` stands for a newline."""
    return text.replace("\\n", "\n")


def rhythm_prime(rhythm: str) -> str:
    """The prime that gives every tune an R: field (its vocabulary is checked with the other primes)."""
    if not rhythm.strip() or "\n" in rhythm:
        raise AbcjaxError(f"--rhythm {rhythm!r} must be a word such as jig or reel")
    return f"X:1\nR:{rhythm.strip()}\n"


def constraint_options(
    constrain: bool, bars_per_part: int, parts: int, meter: str | None, key: str | None, unit: str | None
) -> grammar.Options | None:
    """What the constrained sampler is asked for, or None: --meter, --key and --unit alone constrain
    the header only under --no-constrain; --bars_per_part and --parts need the body constrained."""
    if (bars_per_part or parts) and not constrain:
        raise AbcjaxError("--bars_per_part and --parts shape the body, which --no-constrain leaves free: drop one")
    if not constrain and meter is None and key is None and unit is None:
        return None
    options = grammar.Options(bars_per_part, parts, meter, key, unit, header_only=not constrain)
    options.check()
    return options


def read_prime_file(path: str) -> tuple[str, ...]:
    """One prime per non-empty line, `\\n` escapes allowed."""
    prime_file = storage.as_path(path)
    storage.check_reachable(prime_file, "--prime_file")
    try:
        lines = prime_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise AbcjaxError(
            f"cannot read prime file {path} ({error}): give a UTF-8 text file, one prime per line"
        ) from None
    return tuple(unescape_prime(line) for line in lines if line.strip())


@dataclasses.dataclass(frozen=True)
class SampleResult:
    tunes: list[SampledTune]  # in tune order; only the first ones when stopped
    stopped_by_signal: int | None  # SIGINT or SIGTERM when sampling was interrupted


def sampling_slots(num_tunes: int, batch_size: int | None, required: bool, mesh) -> int:
    """How many tunes the sampler writes at once: `batch_size` if given (at most `num_tunes`).

    Chosen, it is about num_tunes / TUNES_PER_SLOT (selection.batch_size_for, at most MAX_SLOTS) on a
    CPU, where a step's time grows with the slots: a slot whose tune ends starts the next, so a few
    slots writing several tunes each keep busy, where one tune per slot leaves most slots idle while
    the longest tunes finish (1,000 demo tunes: 20 s at 128 slots against 45 s at 1,024). On a GPU or
    TPU a step takes about as long for any slot count, so there it is as many as num_tunes, up to
    MAX_SLOTS. A required run (--require) takes about num_tunes / TUNES_PER_SLOT slots anywhere: its
    chunks, which come in multiples of the slot count, then end close to the candidates needed.
    """
    if required or (batch_size is None and jax.default_backend() == "cpu"):
        return selection.batch_size_for(num_tunes, batch_size or MAX_SLOTS, mesh)
    return min(batch_size or MAX_SLOTS, parallel.round_up_to_devices(num_tunes, mesh))


def generate(request: SampleRequest) -> SampleResult:
    """Samples the tunes of `request` and writes every output it asks for (the finished ones, if stopped)."""
    if request.num_tunes < 1:
        raise AbcjaxError(f"--num_tunes {request.num_tunes} must be at least 1")
    if request.batch_size is not None and request.batch_size < 1:
        raise AbcjaxError(f"--batch_size {request.batch_size} must be at least 1")
    if not 0 <= request.seed < 2**32:
        raise AbcjaxError(f"--seed {request.seed} must be in [0, 2**32)")
    request.options.check()
    _check_output_paths(request)
    requirement = (
        selection.load_requirement(request.require, request.workdir, request.num_tunes, request.max_candidates)
        if request.require
        else None
    )
    mesh = parallel.make_mesh()
    batch_size = sampling_slots(request.num_tunes, request.batch_size, bool(requirement), mesh)
    parallel.check_divisible(batch_size, mesh, "--batch_size")
    trained = load_trained(request.workdir, request.step, mesh)
    sampler = make_sampler(trained.model, trained.vocab, mesh, request.options, list(request.primes))
    as_written = functools.partial(numbered_tune, number=1)  # what a candidate is judged as
    selector = selection.Selector(sampler, requirement, as_written) if requirement else None

    checkpoint = describe_choice(trained.choice)
    say(f"sampling {request.num_tunes} tunes from the checkpoint of step {checkpoint} in {request.workdir}")
    if selector:
        say(f"  each passing {', '.join(requirement.checks)}: at most {requirement.max_candidates:,} candidates")
    started = time.perf_counter()
    tunes: list[SampledTune] = []

    stop = _StopRequest()

    def on_chunk(chunk: list[SampledTune]) -> None:
        tunes.extend(chunk)
        # Decided before the progress line goes out: a signal sent on seeing that line finds the
        # next chunk under way and lets it finish, whenever it lands.
        signum = stop.signum
        _report_progress(len(tunes), request.num_tunes, started, selector.progress() if selector else "")
        if signum is not None:
            raise _Stopped(signum)

    stopped_by_signal = None
    try:
        with signals.handling((signal.SIGINT, signal.SIGTERM), stop.handle):
            (selector or sampler)(trained.params, request.seed, request.num_tunes, batch_size, on_chunk=on_chunk)
    except _Stopped as stopped:
        stopped_by_signal = stopped.signum
        say(f"stopped by {signal.Signals(stopped.signum).name} after {len(tunes)} of {request.num_tunes} tunes")
    seconds = time.perf_counter() - started
    characters = sum(tune.length for tune in tunes)
    say(
        f"sampled {len(tunes)} tunes ({characters:,} characters) in {seconds:.1f}s: "
        f"{len(tunes) / seconds:,.1f} tunes/s, {characters / seconds:,.0f} chars/s, "
        f"{sum(tune.finished for tune in tunes)} reached their end"
    )
    if selector:
        say(selector.summary(seconds))
    if not tunes:
        say("no tune to write: nothing written")
    elif jax.process_index() == 0:  # every process holds every tune; the files are written once
        _write_outputs(request, trained.choice, tunes, selector.header_lines() if selector else ())
    if selector and selector.exhausted and stopped_by_signal is None:
        raise AbcjaxError(selector.shortfall())
    return SampleResult(tunes, stopped_by_signal)


class _Stopped(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _StopRequest:
    """Ctrl-C or SIGTERM: sampling stops once the chunk under way is done (so its tunes are kept and
    written); a second signal stops it at once, keeping the chunks done before."""

    signum: int | None = None

    def handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise _Stopped(signum)
        self.signum = signum
        say(f"{signal.Signals(signum).name}: stopping once the tunes under way are done (again to stop now)")


def _check_output_paths(request: SampleRequest) -> None:
    """Fails before sampling, not after it, when an output cannot be written."""
    for flag, text in (("--out", request.out), ("--jsonl", request.jsonl), ("--split_dir", request.split_dir)):
        if text:
            storage.check_reachable(storage.as_path(text), flag)
    for path in (request.out, request.jsonl):
        if path and not storage.parent_exists(storage.as_path(path)):
            raise AbcjaxError(f"cannot write {path}: its directory does not exist; create it first")
    split_dir = request.split_dir and storage.as_path(request.split_dir)
    if split_dir and split_dir.exists() and not split_dir.is_dir():
        raise AbcjaxError(f"--split_dir {request.split_dir} is a file: give a directory")


def _report_progress(done: int, total: int, started: float, detail: str = "") -> None:
    elapsed = time.perf_counter() - started
    eta = elapsed / done * (total - done) if done else math.inf
    say(f"  {done}/{total} tunes{detail}  ETA {format_duration(eta)}")


def numbered_tune(tune: SampledTune, number: int) -> str:
    """The tune as X:number, ending with its newline (the blank line after it is the caller's).

    The model sometimes starts a new tune without the blank line (an `X:` line) or writes a line of
    spaces; an ABC reader ends the tune there, so the tune is cut there too, and a tunebook of N
    sampled tunes holds exactly N tunes.
    """
    lines = tune.text.rstrip("\n").split("\n")
    if lines[0].startswith("X:"):
        lines = lines[1:]
    end = next((i for i, line in enumerate(lines) if line.startswith("X:") or not line.strip()), len(lines))
    return "\n".join([f"X:{number}", *lines[:end]]) + "\n"


def describe_choice(choice: Choice) -> str:
    """The checkpoint's step, how it was chosen and its validation figure, e.g. "500 (the best;
    validation 1.646 bits/char)"."""
    how = {"best": "the best", "latest": "the latest", "step": "as asked"}[choice.how]
    validation = "not validated" if choice.eval_bpc is None else f"validation {choice.eval_bpc:.3f} bits/char"
    return f"{choice.step} ({how}; {validation})"


def tunebook_header(request: SampleRequest, choice: Choice, num_tunes: int, notes: tuple[str, ...] = ()) -> str:
    """`%` comment lines naming what made the tunes (no timestamps: reruns compare byte for byte),
    `notes` (what --require asked and how often it passed), and how many of those asked for the book
    holds when sampling was stopped early."""
    options = request.options
    lines = [
        f"% abcjax sample: checkpoint step {describe_choice(choice)} of {request.workdir}",
        f"% seed {request.seed}, temperature {options.temperature}, top_k {options.top_k}, "
        f"top_p {options.top_p}, max_length {options.max_length}",
        f"% primes {json.dumps(list(request.primes))}",
        f"% {options.constraint.describe() if options.constraint else 'unconstrained (--no-constrain)'}",
        *(f"% {note}" for note in notes),
    ]
    if num_tunes < request.num_tunes:
        lines.append(f"% stopped early: the first {num_tunes} of {request.num_tunes} tunes")
    return "\n".join(lines) + "\n\n"


def _write_outputs(request: SampleRequest, choice: Choice, tunes: list[SampledTune], notes: tuple[str, ...]) -> None:
    texts = [numbered_tune(tune, number) for number, tune in enumerate(tunes, start=1)]
    if request.out:
        tunebook = tunebook_header(request, choice, len(texts), notes) + "".join(f"{text}\n" for text in texts)
        storage.write_text_atomically(storage.as_path(request.out), tunebook, "the tunebook")
        say(f"wrote {request.out}")
    if request.split_dir:
        directory = storage.as_path(request.split_dir)
        storage.make_directory(directory, "--split_dir")
        width = max(4, len(str(len(tunes))))
        names = [f"tune-{number:0{width}d}.abc" for number in range(1, len(texts) + 1)]
        for name, text in zip(names, texts, strict=True):
            storage.write_text_atomically(directory / name, text, "the tune file")
        for stale in {path.name for path in directory.glob("tune-*.abc")} - set(names):
            (directory / stale).unlink()  # an earlier run's tune, which would pass for one of these
        say(f"wrote {len(texts)} files to {directory}")
    if request.jsonl:
        checks = _checks(texts)
        lines = [
            json.dumps({**_tune_record(tune, text), **check}) + "\n"
            for tune, text, check in zip(tunes, texts, checks, strict=True)
        ]
        storage.write_text_atomically(storage.as_path(request.jsonl), "".join(lines), "the JSON lines")
        say(f"wrote {request.jsonl}")


def _checks(texts: list[str]) -> list[dict]:
    """Each tune's ABC checks (well-formed, bars, repeats, meter, key), or none without abc2midi."""
    if abc.parser_available():
        return abc.check_tunes(texts)
    say(f"{abc.PARSER_MISSING}: --jsonl has no well-formedness checks")
    return [{} for _ in texts]


def _tune_record(tune: SampledTune, text: str) -> dict:
    return {
        "index": tune.index,
        "abc": text,
        "length": len(text),
        "finished": tune.finished,
        "log_likelihood": round(tune.log_likelihood, 4),
    }

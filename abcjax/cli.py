"""The `abcjax` command: argument parsing only; each subcommand calls one library function."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys

from absl import logging as absl_logging

from abcjax import accelerators
from abcjax.errors import AbcjaxError

USAGE_ERROR = 2
CONFIG_OVERRIDE_COMMANDS = ("train", "bench", "compile")  # the commands that read a config file


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but a mistake is one line naming it and the help to read: the usage of `abcjax
    sample` alone runs to a dozen lines, which bury the mistake. Subcommands' parsers are of this
    class too (argparse makes them of their parent's)."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (`{self.prog} --help` lists what it takes)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="abcjax", description="Train character-level LSTMs on ABC folk tunes, and generate tunes."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {importlib.metadata.version('abcjax')}")
    commands = parser.add_subparsers(dest="command")
    train = commands.add_parser(
        "train",
        help="train a model (resumes from WORKDIR's latest checkpoint)",
        epilog="Override any config key with --config.KEY=VALUE, e.g. --config.train.steps=100.",
    )
    train.add_argument("--config", required=True, help="config file, e.g. configs/default.py")
    train.add_argument("--workdir", required=True, help="run directory: checkpoints, metrics, TensorBoard events")
    _add_process_flags(train)

    sample = commands.add_parser("sample", help="generate tunes from a workdir's checkpoint")
    sample.add_argument("--workdir", required=True, help="run directory written by abcjax train")
    sample.add_argument("--num_tunes", type=int, default=16, help="tunes to generate (default 16)")
    sample.add_argument("--out", help="tunebook to write: all tunes, numbered X:1..N")
    sample.add_argument(
        "--seed", type=int, default=0, help="tune i depends only on the checkpoint, seed, i and options"
    )
    sample.add_argument("--temperature", type=float, default=1.0, help="below 1: safer tunes; above 1: wilder")
    sample.add_argument("--top_k", type=int, default=0, help="draw only from the k likeliest characters (0: off)")
    sample.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling threshold in (0, 1] (1: off)")
    primes = sample.add_mutually_exclusive_group()
    primes.add_argument(
        "--prime", default="X:1\\n", help=r"text each tune starts with; \n is a newline (default X:1\n)"
    )
    primes.add_argument("--prime_file", help="one prime per line, cycled over the tunes")
    primes.add_argument(
        "--rhythm", help="an R: field for every tune, e.g. jig or reel (the prime is X:1\\nR:RHYTHM\\n)"
    )
    form = sample.add_argument_group("meter-aware sampling (docs/constrained-sampling.md)")
    form.add_argument(
        "--constrain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write only well-formed ABC whose every bar fills its meter, by masking what would break it "
        "(the default); --no-constrain samples the model freely",
    )
    form.add_argument("--bars_per_part", type=int, default=0, help="every part this many bars (constrained only)")
    form.add_argument("--parts", type=int, default=0, help="with --bars_per_part: this many parts")
    form.add_argument("--meter", help="every tune in this meter, e.g. 6/8")
    form.add_argument("--key", help="every tune in this key, e.g. D, Em or Ador")
    form.add_argument("--unit", help="every tune with this unit note length, e.g. 1/8")
    sample.add_argument("--max_length", type=int, default=1000, help="characters per tune at most, prime included")
    sample.add_argument(
        "--batch_size",
        type=int,
        help="tunes written at once, split over devices (default: on a CPU about num_tunes / 8, each slot "
        "writing several tunes; on a GPU or TPU up to 1024)",
    )
    sample.add_argument(
        "--step",
        type=_step_choice,
        default="best",
        help="checkpoint to sample from: best (lowest validation loss; the default), latest, or a step number",
    )
    sample.add_argument("--split_dir", help="also write one .abc file per tune here")
    sample.add_argument("--jsonl", help="also write one JSON object per tune here")
    sample.add_argument(
        "--require",
        help="comma list of checks every tune must pass, of well_formed, bars_match_meter, repeats_balanced, "
        "novel (copies no 4 bars in a row of a training tune): candidates are drawn until --num_tunes pass",
    )
    sample.add_argument(
        "--max_candidates",
        type=int,
        help="with --require: give up after this many candidates (default 20 per tune, at least 1000)",
    )
    _add_process_flags(sample)

    evaluate = commands.add_parser("evaluate", help="describe tunes: well-formed share, bar lengths, repeats, copying")
    evaluate.add_argument("tunes", nargs="+", help="ABC files (or directories, or comma lists) of generated tunes")
    evaluate.add_argument("--corpus", help="training corpus to compare with and check copying against")
    evaluate.add_argument("--json", action="store_true", help="print the full report, per-tune list included, as JSON")

    bench = commands.add_parser(
        "bench",
        help="measure training and sampling throughput of a config",
        epilog="Override any config key with --config.KEY=VALUE, e.g. --config.train.batch_size=256.",
    )
    bench.add_argument("--config", required=True, help="config file, e.g. configs/default.py")
    bench.add_argument("--steps", type=int, default=20, help="timed train steps after warm-up (default 20)")
    bench.add_argument("--num_tunes", type=int, default=1024, help="tunes sampled at once (default 1024)")
    bench.add_argument("--sample_length", type=int, default=100, help="characters sampled per tune (default 100)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--compare_torch",
        action="store_true",
        help="also time the same model in PyTorch, in turns with abcjax (needs the torch extra)",
    )
    bench.add_argument(
        "--constrain",
        action="store_true",
        help="also time constrained sampling (`abcjax sample`'s default), in turns with free sampling",
    )

    compile_ = commands.add_parser(
        "compile",
        help="compile the train step, eval step and sampler for a TPU slice (or GPU host) ahead of time, on any "
        "machine: does the config fit? (exit code 1 when it does not)",
        epilog="Override any config key with --config.KEY=VALUE, e.g. --config.model.dtype=bfloat16. "
        "Needs libtpu: pip install -e '.[tpu]'. See docs/tpu-compile.md.",
    )
    compile_.add_argument("--config", required=True, help="config file, e.g. configs/default.py")
    compile_.add_argument(
        "--topology",
        required=True,
        help=f"the slice, by name or accelerator type: {accelerators.known_topologies()}",
    )
    compile_.add_argument(
        "--num_tunes", type=int, default=1024, help="sampler slots, as abcjax sample --batch_size (default 1024)"
    )
    compile_.add_argument("--json", action="store_true", help="print one JSON object")

    render = commands.add_parser(
        "render",
        help="write MIDI, WAV, Ogg and SVG files of a tunebook's tunes, and a web page of them all",
        epilog="With no format named, --midi --wav --svg.",
    )
    render.add_argument("tunebook", help="ABC file, e.g. one written by abcjax sample --out")
    render.add_argument("--out", required=True, help="directory for the files (created if needed; reruns overwrite)")
    render.add_argument("--midi", action="store_true", help="MIDI via abc2midi (Debian: abcmidi)")
    render.add_argument("--wav", action="store_true", help="WAV via fluidsynth + GM soundfont, else timidity")
    render.add_argument("--ogg", action="store_true", help="Ogg Vorbis, as --wav but compressed, at 22.05 kHz")
    render.add_argument("--svg", action="store_true", help="sheet music via abcm2ps (Debian: abcm2ps)")
    render.add_argument(
        "--html", action="store_true", help="also OUT/index.html, an offline tunebook page (adds .abc .mid .ogg .svg)"
    )
    render.add_argument("--jsonl", help="with --html: the tunes' `abcjax sample --jsonl` file, to show its fields")
    render.add_argument("--jobs", type=int, help="tunes rendered at once (default: one per CPU)")
    render.add_argument("--timeout", type=float, default=30.0, help="seconds each tool may spend on one tune")

    plot = commands.add_parser(
        "plot",
        help="draw a run's learning curves and sampled-tune quality against step, as a PNG (needs the plot extra)",
    )
    plot.add_argument("workdir", help="run directory written by abcjax train (its metrics.jsonl is read)")
    plot.add_argument("--out", required=True, help="PNG file to write, e.g. curves.png")
    return parser


def parse_command_line(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The subcommand's arguments and its --config.KEY=VALUE overrides, as `abcjax` reads them.

    Exits as argparse does: 2 with an error line for a mistake, 0 after --help or --version, and 0 after
    the help when no command is given, since a bare `abcjax` is someone asking what it does.
    """
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [arg for arg in extra if arg.startswith("--config.") and args.command in CONFIG_OVERRIDE_COMMANDS]
    unknown = [arg for arg in extra if arg not in overrides]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        sys.exit(0)
    return args, overrides


def _step_choice(text: str) -> str | int:
    """--step's value: best, latest, or a step number."""
    if text in ("best", "latest"):
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not best, latest or a step number")


def _add_process_flags(parser: argparse.ArgumentParser) -> None:
    """One process per host: all three flags (or ABCJAX_* variables) on every process, or none."""
    group = parser.add_argument_group("multi-process runs (jax.distributed; not needed on a Cloud TPU VM)")
    group.add_argument(
        "--coordinator_address", help="HOST:PORT of process 0, the same on every process ($ABCJAX_COORDINATOR_ADDRESS)"
    )
    group.add_argument("--num_processes", type=int, help="processes started together ($ABCJAX_NUM_PROCESSES)")
    group.add_argument("--process_id", type=int, help="this process's number, 0..N-1 ($ABCJAX_PROCESS_ID)")


def _set_up_jax(args: argparse.Namespace) -> None:
    """Sets up host memory and joins a multi-process run before JAX computes, then turns on the
    compilation cache."""
    from abcjax import compilation_cache, cpu_kernels, host_memory, parallel

    host_memory.configure_host_allocator()
    kernels = cpu_kernels.status()  # a bad ABCJAX_CPU_KERNELS is refused before any work
    if cpu_kernels.STALE_BUILD in kernels:
        print(f"abcjax: warning: CPU kernels {kernels}; XLA's kernels run instead, slower", file=sys.stderr)

    if args.command in ("train", "sample"):
        parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    compilation_cache.enable_compilation_cache()


def _train(args: argparse.Namespace, overrides: list[str]) -> int:
    from abcjax import config as config_lib

    config = config_lib.load_config(args.config, overrides)
    _set_up_jax(args)  # JAX loads only once the arguments are good.
    from abcjax import train

    result = train.train_and_evaluate(config, args.workdir)
    return 128 + result.stopped_by_signal if result.stopped_by_signal else 0


def _sample(args: argparse.Namespace, overrides: list[str]) -> int:
    _set_up_jax(args)
    from abcjax import generate, sample

    primes = generate.read_prime_file(args.prime_file) if args.prime_file else (generate.unescape_prime(args.prime),)
    if args.rhythm is not None:
        primes = (generate.rhythm_prime(args.rhythm),)
    constraint = generate.constraint_options(
        args.constrain, args.bars_per_part, args.parts, args.meter, args.key, args.unit
    )
    options = sample.SamplingOptions(args.temperature, args.top_k, args.top_p, args.max_length, constraint=constraint)
    if not (args.out or args.split_dir or args.jsonl):
        raise AbcjaxError("nothing to write: give --out FILE, --split_dir DIR or --jsonl FILE")
    if args.max_candidates is not None and args.require is None:
        raise AbcjaxError("--max_candidates bounds the candidates --require judges: give --require CHECKS with it")
    result = generate.generate(
        generate.SampleRequest(
            workdir=args.workdir,
            num_tunes=args.num_tunes,
            out=args.out,
            seed=args.seed,
            options=options,
            primes=primes,
            batch_size=args.batch_size,
            step=args.step,
            split_dir=args.split_dir,
            jsonl=args.jsonl,
            require=tuple(args.require.split(",")) if args.require is not None else (),
            max_candidates=args.max_candidates,
        )
    )
    return 128 + result.stopped_by_signal if result.stopped_by_signal else 0


def _evaluate(args: argparse.Namespace, overrides: list[str]) -> int:
    from abcjax import evaluate

    report = evaluate.evaluate_files(args.tunes, args.corpus)
    print(json.dumps(report, indent=2) if args.json else evaluate.format_table(report))
    return 0


def _bench(args: argparse.Namespace, overrides: list[str]) -> int:
    from abcjax import config as config_lib

    for name in ("steps", "num_tunes", "sample_length"):
        if getattr(args, name) < 1:
            raise AbcjaxError(f"--{name} {getattr(args, name)} must be at least 1")
    config = config_lib.load_config(args.config, overrides)
    _set_up_jax(args)  # JAX loads only once the arguments are good.
    from abcjax import bench

    report = bench.run_bench(config, args.steps, args.num_tunes, args.sample_length, args.compare_torch, args.constrain)
    print(json.dumps(report) if args.json else bench.format_report(report))
    return 0


def _compile(args: argparse.Namespace, overrides: list[str]) -> int:
    if args.num_tunes < 1:
        raise AbcjaxError(f"--num_tunes {args.num_tunes} must be at least 1")
    # Nothing runs: JAX needs only the CPU, and a TPU VM's chips stay free for its own runs.
    os.environ["JAX_PLATFORMS"] = "cpu"
    from abcjax import config as config_lib
    from abcjax import tpu_compile

    config = config_lib.load_config(args.config, overrides)
    report = tpu_compile.compile_for_topology(config, args.topology, args.num_tunes)
    print(json.dumps(report) if args.json else tpu_compile.format_report(report))
    return 0 if report["fits"] else 1


def _render(args: argparse.Namespace, overrides: list[str]) -> int:
    from abcjax import render

    if not args.timeout > 0:
        raise AbcjaxError(f"--timeout {args.timeout} must be above 0 seconds")
    if args.jsonl and not args.html:
        raise AbcjaxError("--jsonl adds its fields to the web page: give --html with it")
    formats = {name for name in render.FORMATS if getattr(args, name, False)}  # "abc" has no flag; none: defaults
    if args.html:
        from abcjax import tunebook_html

        print(
            tunebook_html.render_html(
                args.tunebook, args.out, formats, args.jsonl, jobs=args.jobs, timeout=args.timeout
            )
        )
    else:
        print(render.render_tunebook(args.tunebook, args.out, formats, jobs=args.jobs, timeout=args.timeout).summary())
    return 0


def _plot(args: argparse.Namespace, overrides: list[str]) -> int:
    from abcjax import plot

    print(plot.plot_run(args.workdir, args.out))
    return 0


# What each subcommand runs: (its arguments, its --config overrides) -> exit code.
COMMANDS = {
    "train": _train,
    "sample": _sample,
    "evaluate": _evaluate,
    "bench": _bench,
    "compile": _compile,
    "render": _render,
    "plot": _plot,
}


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs a subcommand; a user mistake is one line on stderr and exit code 2."""
    args, overrides = parse_command_line(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Orbax logs its notices, and each error it raises with a traceback; abcjax reports those itself.
    absl_logging.set_verbosity(absl_logging.FATAL)
    try:
        code = COMMANDS[args.command](args, overrides)
    except AbcjaxError as error:
        print(f"abcjax: error: {error}", file=sys.stderr)
        code = USAGE_ERROR
    except KeyboardInterrupt:
        print("abcjax: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)

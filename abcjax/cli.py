"""The `abcjax` command: argument parsing only; each subcommand calls one library function."""

from __future__ import annotations

import argparse
import os
import sys

from abcjax.errors import AbcjaxError

USAGE_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="abcjax", description="Train character-level LSTMs on ABC folk tunes, and generate tunes."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train a model (resumes from WORKDIR's latest checkpoint)",
        epilog="Override any config key with --config.KEY=VALUE, e.g. --config.train.steps=100.",
    )
    train.add_argument("--config", required=True, help="config file, e.g. configs/default.py")
    train.add_argument("--workdir", required=True, help="run directory: checkpoints, metrics, TensorBoard events")
    return parser


def _train(args: argparse.Namespace, overrides: list[str]) -> int:
    from abcjax import config as config_lib  # JAX loads only once the arguments are good.
    from abcjax import train

    config = config_lib.load_config(args.config, overrides)
    result = train.train_and_evaluate(config, args.workdir)
    return 128 + result.stopped_by_signal if result.stopped_by_signal else 0


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs a subcommand; a user mistake is one line on stderr and exit code 2."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [arg for arg in extra if arg.startswith("--config.")]
    unknown = [arg for arg in extra if not arg.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        code = {"train": _train}[args.command](args, overrides)
    except AbcjaxError as error:
        print(f"abcjax: error: {error}", file=sys.stderr)
        code = USAGE_ERROR
    except KeyboardInterrupt:
        print("abcjax: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)

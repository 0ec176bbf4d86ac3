"""Config files and command-line overrides.

A config is a Python file whose `get_config()` returns an `ml_collections.ConfigDict` (the Flax
examples' convention). Overrides come as `--config.train.steps=100`. They are parsed here rather
than through absl's `config_flags`, so that an unknown key or a value of the wrong type is one
clear line naming the key, not a traceback.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import pathlib
import sys
from collections.abc import Sequence

import ml_collections

from abcjax import transpose
from abcjax.errors import AbcjaxError

OVERRIDE_PREFIX = "--config."
# The names abcjax.model's LSTM layer knows, spelled out so that checking a config needs no JAX.
LSTM_IMPLEMENTATIONS = ("fused", "reference", "cudnn")


def load_config(path: str | pathlib.Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads a config file, applies `--config.KEY=VALUE` overrides, and checks the result."""
    config = _load_config_file(pathlib.Path(path))
    for override in overrides:
        apply_override(config, override)
    validate(config)
    return config


def _load_config_file(path: pathlib.Path) -> ml_collections.ConfigDict:
    if not path.is_file():
        raise AbcjaxError(f"config file {path} not found: give a file such as configs/default.py")
    spec = importlib.util.spec_from_file_location(f"abcjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    # Derived configs `import default` from their own directory, wherever that is.
    sys.path.insert(0, str(path.resolve().parent))
    modules_before = set(sys.modules)
    try:
        spec.loader.exec_module(module)
        config = module.get_config()
    except Exception as error:  # A user's config file can fail in any way; report it in one line.
        raise AbcjaxError(f"config file {path} failed to load: {type(error).__name__}: {error}") from None
    finally:
        sys.path.pop(0)
        # Forget the siblings it imported, so another directory's `import default` gets its own.
        for name in set(sys.modules) - modules_before:
            if str(getattr(sys.modules[name], "__file__", "")).startswith(str(path.resolve().parent)):
                del sys.modules[name]
    if not isinstance(config, ml_collections.ConfigDict):
        raise AbcjaxError(f"config file {path}: get_config() must return an ml_collections.ConfigDict")
    return config


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
    """Sets one `--config.a.b=value`; the value must fit the type of the key it replaces."""
    if not override.startswith(OVERRIDE_PREFIX) or "=" not in override:
        raise AbcjaxError(f"unrecognised argument {override!r}: overrides look like --config.train.steps=100")
    dotted, text = override[len(OVERRIDE_PREFIX) :].split("=", 1)
    *parents, leaf = dotted.split(".")
    node = config
    for depth, name in enumerate(parents):
        node = _child(node, name, ".".join(parents[: depth + 1]))
        if not isinstance(node, ml_collections.ConfigDict):
            raise AbcjaxError(f"config key {'.'.join(parents[: depth + 1])} is not a section")
    old = _child(node, leaf, dotted)
    if isinstance(old, ml_collections.ConfigDict):
        raise AbcjaxError(f"config key {dotted} is a section: set one of its keys, e.g. --config.{dotted}.KEY=VALUE")
    with node.unlocked():
        node[leaf] = _parse_value(text, old, dotted)


def _child(node: ml_collections.ConfigDict, name: str, dotted: str):
    if name not in node:
        close = difflib.get_close_matches(name, list(node.keys()), n=1)
        hint = f" (did you mean {close[0]}?)" if close else f"; known keys here: {', '.join(sorted(node.keys()))}"
        raise AbcjaxError(f"unknown config key {dotted}{hint}")
    return node[name]


def _parse_value(text: str, old, dotted: str):
    """Reads `text` as a value of the same type as `old` (int where int, etc.)."""
    if isinstance(old, str):
        return text
    if isinstance(old, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise AbcjaxError(f"config key {dotted} takes true or false, not {text!r}")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if old is not None and type(value) is not type(old):
        wanted = {int: "an integer", float: "a number"}.get(type(old), f"a {type(old).__name__}")
        raise AbcjaxError(f"config key {dotted} takes {wanted}, not {text!r}")
    return value


# (key, test, what the user must give)
_RULES = (
    ("seed", lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    ("data.seq_length", lambda v: v >= 1, "at least 1"),
    ("data.val_fraction", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("data.transpose", lambda v: isinstance(v, tuple) and transpose.valid_shifts(v), transpose.SHIFTS_WANTED),
    ("model.embed_dim", lambda v: v >= 1, "at least 1"),
    ("model.hidden_size", lambda v: v >= 1, "at least 1"),
    ("model.num_layers", lambda v: v >= 1, "at least 1"),
    ("model.dropout", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    ("model.dtype", lambda v: v in ("float32", "bfloat16", "float16"), "float32, bfloat16 or float16"),
    ("model.lstm", lambda v: v in LSTM_IMPLEMENTATIONS, " or ".join(LSTM_IMPLEMENTATIONS)),
    ("train.batch_size", lambda v: v >= 1, "at least 1"),
    ("train.steps", lambda v: v >= 0, "at least 0"),
    ("train.learning_rate", lambda v: v > 0, "above 0"),
    ("train.lr_schedule", lambda v: v in ("constant", "cosine"), "constant or cosine"),
    ("train.warmup_steps", lambda v: v >= 0, "at least 0"),
    ("train.weight_decay", lambda v: v >= 0, "at least 0"),
    ("train.grad_clip", lambda v: v > 0, "above 0"),
    ("train.log_every", lambda v: v >= 1, "at least 1"),
    ("train.eval_every", lambda v: v >= 1, "at least 1"),
    ("train.checkpoint_every", lambda v: v >= 1, "at least 1"),
    ("train.keep_checkpoints", lambda v: v >= 1, "at least 1"),
    ("train.early_stop_evals", lambda v: v >= 0, "at least 0 (0 turns early stopping off)"),
    ("train.sample_every", lambda v: v >= 0, "at least 0"),
    ("train.sample_tunes", lambda v: v >= 1, "at least 1"),
    ("train.sample_max_length", lambda v: v >= 10, "at least 10"),
    ("train.sample_audio_tunes", lambda v: v >= 0, "at least 0"),
    ("train.sample_constrained", lambda v: isinstance(v, bool), "True or False"),
)


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every key the trainer reads is present and in range, naming the first that is not."""
    for dotted, test, wanted in _RULES:
        value = config
        for name in dotted.split("."):
            if not isinstance(value, ml_collections.ConfigDict) or name not in value:
                raise AbcjaxError(f"config is missing key {dotted}: start from configs/default.py")
            value = value[name]
        if not _passes(test, value):
            raise AbcjaxError(f"config key {dotted}={value!r} is out of range: it must be {wanted}")
    if config.model.lstm == "cudnn" and config.model.dtype != "float32":
        raise AbcjaxError(
            f"model.lstm=cudnn computes in float32 only, not model.dtype={config.model.dtype}: "
            "set model.dtype=float32, or use model.lstm=fused for bfloat16 or float16"
        )


def _passes(test, value) -> bool:
    """A value of the wrong type (a string where a number belongs) fails rather than raising."""
    try:
        return bool(test(value))
    except TypeError:
        return False


def to_json(config: ml_collections.ConfigDict) -> str:
    """The config as sorted JSON, for saving with a run and for TensorBoard."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)

"""The persistent compilation cache: a second run of the same config skips XLA compilation.

Each config, device count and JAX version adds its own programs, so the cache is capped: past
ABCJAX_COMPILATION_CACHE_MAX_MB (default 1024) JAX deletes the least recently used programs.
JAX's capped cache keeps a `KEY-atime` file next to each `KEY-cache` entry and fails to write
(with a warning per program) when an entry has none, as entries written without a cap do; such
entries get one, dated by their modification time, so they are the first to go.
"""

from __future__ import annotations

import os
import pathlib

import jax

from abcjax.errors import AbcjaxError

DIRECTORY_VARIABLE = "ABCJAX_COMPILATION_CACHE"
MAX_MB_VARIABLE = "ABCJAX_COMPILATION_CACHE_MAX_MB"
DEFAULT_DIRECTORY = pathlib.Path.home() / ".cache" / "abcjax" / "xla"
DEFAULT_MAX_MB = 1024


def enable_compilation_cache(environ: dict[str, str] | None = None) -> None:
    """Keeps compiled programs in $ABCJAX_COMPILATION_CACHE (default ~/.cache/abcjax/xla), capped."""
    environ = os.environ if environ is None else environ
    text = environ.get(MAX_MB_VARIABLE, str(DEFAULT_MAX_MB))
    try:
        max_mb = int(text)
    except ValueError:
        max_mb = -1
    if max_mb < 1:
        raise AbcjaxError(f"{MAX_MB_VARIABLE}={text!r} must be a whole number of megabytes, at least 1")
    directory = pathlib.Path(environ.get(DIRECTORY_VARIABLE, str(DEFAULT_DIRECTORY)))
    _date_uncapped_entries(directory)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_compilation_cache_max_size", max_mb * 2**20)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _date_uncapped_entries(directory: pathlib.Path) -> None:
    """Gives each cache entry that lacks one the access-time file JAX's capped cache reads."""
    if not directory.is_dir():
        return
    for entry in directory.glob("*-cache"):
        access_time = entry.with_name(entry.name.removesuffix("-cache") + "-atime")
        if not access_time.exists():
            access_time.write_bytes(entry.stat().st_mtime_ns.to_bytes(8, "little"))

"""The persistent compilation cache: filled by compiled programs, and kept under its size cap."""

import pytest

from abcjax.compilation_cache import enable_compilation_cache
from abcjax.errors import AbcjaxError
from conftest import run_python

# Compiles eight programs, each holding its own 256 KB constant: about 1.9 MB of cache entries.
COMPILE_EIGHT_PROGRAMS = """
import jax, jax.numpy as jnp, numpy as np
from abcjax.compilation_cache import enable_compilation_cache
enable_compilation_cache()
for seed in range(8):
    table = np.random.default_rng(seed).standard_normal(65536).astype(np.float32)
    jax.block_until_ready(jax.jit(lambda x, table=table: x + jnp.asarray(table))(jnp.zeros(65536)))
"""


def _cache_bytes_after_compiling(tmp_path, max_mb: str) -> int:
    cache = tmp_path / f"cache-{max_mb}"
    variables = {"ABCJAX_COMPILATION_CACHE": str(cache), "ABCJAX_COMPILATION_CACHE_MAX_MB": max_mb}
    result = run_python(COMPILE_EIGHT_PROGRAMS, variables)
    assert result.returncode == 0, result.stderr
    assert "Error writing persistent compilation cache" not in result.stderr
    return sum(path.stat().st_size for path in cache.iterdir())


def test_the_cache_keeps_programs_up_to_its_cap(tmp_path):
    assert _cache_bytes_after_compiling(tmp_path, "100") > 1.5 * 2**20
    capped = _cache_bytes_after_compiling(tmp_path, "1")
    assert 0 < capped <= 2**20  # the least recently used programs were deleted


@pytest.mark.parametrize("text", ["0", "-5", "lots", "1.5"])
def test_a_bad_cap_is_one_line(text):
    with pytest.raises(AbcjaxError, match=f"ABCJAX_COMPILATION_CACHE_MAX_MB='{text}' must be a whole number"):
        enable_compilation_cache({"ABCJAX_COMPILATION_CACHE_MAX_MB": text})


def test_entries_written_without_a_cap_are_dated_and_evicted_first(tmp_path):
    """An entry from an uncapped cache (no -atime file) no longer makes every write fail."""
    cache = tmp_path / "cache-1"
    cache.mkdir()
    legacy = cache / "jit_old-0123-cache"
    legacy.write_bytes(b"x" * 2**19)
    capped = _cache_bytes_after_compiling(tmp_path, "1")
    assert not legacy.exists()  # the oldest entry went first
    assert 0 < capped <= 2**20

"""The host allocator setting: with it, repeated XLA:CPU executions reuse their temporaries'
memory instead of page-faulting it in afresh each time; a bad value is a one-line error."""

import json
import platform

import pytest

from abcjax.errors import AbcjaxError
from abcjax.host_memory import configure_host_allocator
from conftest import run_abcjax, run_python

# Runs a compiled function with a 128 MB temporary and prints the page faults of each of ten
# executions after five of warm-up: each execution allocates its temporaries again, as every train
# step does. (With reuse, the heap still grows now and then, for one execution, until the small
# allocations around the large block settle: the test looks at the typical execution, the median.)
FAULTS_PER_EXECUTION = """
import json, resource, statistics
from abcjax.host_memory import configure_host_allocator
in_effect = configure_host_allocator()
import jax, jax.numpy as jnp
step = jax.jit(lambda x, w: jnp.tanh(x @ w) @ w.T)  # tanh(x @ w) is a 128 MB temporary
x, w = jnp.ones((8192, 64)), jnp.ones((64, 4096))
for _ in range(5):
    jax.block_until_ready(step(x, w))
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(step(x, w))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"in_effect": in_effect, "faults": statistics.median(faults)}))
"""


def _faults_per_execution(allocator: str) -> dict:
    result = run_python(FAULTS_PER_EXECUTION, {"ABCJAX_HOST_ALLOCATOR": allocator})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_reuse_stops_each_execution_faulting_its_temporaries_in_again():
    default, reuse = _faults_per_execution("default"), _faults_per_execution("reuse")
    assert (default["in_effect"], reuse["in_effect"]) == ("default", "reuse")
    pages = 128 * 2**20 // 4096
    assert default["faults"] > pages / 2  # glibc hands the 128 MB back and maps it afresh each time
    assert reuse["faults"] < pages / 50


def test_a_bad_setting_is_one_line_naming_the_choices():
    with pytest.raises(AbcjaxError, match="ABCJAX_HOST_ALLOCATOR='fast' is not one of reuse, default"):
        configure_host_allocator({"ABCJAX_HOST_ALLOCATOR": "fast"})
    result = run_abcjax("bench", "--config", "configs/tiny.py", variables={"ABCJAX_HOST_ALLOCATOR": "fast"})
    assert result.returncode == 2
    assert result.stderr.strip().startswith("abcjax: error: ABCJAX_HOST_ALLOCATOR='fast' is not one of")

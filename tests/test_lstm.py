"""Every fast path computes what the plain reference LSTM computes: outputs and gradients in float32."""

import functools
import shutil

import cudnn_reference
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from abcjax import cpu_kernels
from abcjax.config import LSTM_IMPLEMENTATIONS
from abcjax.cudnn_lstm import check_runs_here, cudnn_lstm
from abcjax.errors import AbcjaxError
from abcjax.lstm import fused_lstm, reference_lstm, run_lstm
from abcjax.model import CharLstm, ModelConfig, init_params, input_projection, make_decoder, zero_carries
from conftest import TINY_CONFIG, run_abcjax, run_python

TOLERANCE = 1e-5  # relative, in float32


def assert_close(actual, expected, tolerance=TOLERANCE):
    """Equal within `tolerance` of the expected array's largest magnitude, leaf by leaf."""
    for got, want in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected), strict=True):
        want = np.asarray(want, np.float64)
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * np.abs(want).max())


def _lstm_inputs(time=7, batch=3, hidden=16, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    kernel = jax.random.normal(keys[0], (hidden, 4 * hidden)) / np.sqrt(hidden)
    gate_inputs = jax.random.normal(keys[1], (time, batch, 4 * hidden))
    carry = (jax.random.normal(keys[2], (batch, hidden)), jax.random.normal(keys[3], (batch, hidden)) * 0.5)
    return kernel, gate_inputs, carry


def _weighted_sum(lstm, kernel, gate_inputs, carry):
    """A scalar that depends on every output and on the final carry, so every cotangent is non-zero."""
    (cell, hidden), outputs = lstm(kernel, gate_inputs, carry)
    weights = jnp.cos(jnp.arange(outputs.size, dtype=jnp.float32)).reshape(outputs.shape)
    return (outputs * weights).sum() + (cell * 0.3 - hidden * 0.7).sum()


def _fused_f32(kernel, gate_inputs, carry):
    return fused_lstm(kernel, gate_inputs, carry, jnp.dtype(jnp.float32))


@pytest.fixture(params=["on", "off"], ids=["cpu_kernels", "xla_kernels"])
def gate_arithmetic(request, monkeypatch):
    """The fused LSTM's gate arithmetic by abcjax's compiled CPU kernels, then by XLA's own. The
    kernels must be built: .ci/run installs a C++ compiler."""
    monkeypatch.setenv(cpu_kernels.ENV_VARIABLE, request.param)
    assert cpu_kernels.in_use() == (request.param == "on"), cpu_kernels.status()


def test_fused_lstm_outputs_and_final_carry_match_the_reference(gate_arithmetic):
    kernel, gate_inputs, carry = _lstm_inputs()
    assert_close(_fused_f32(kernel, gate_inputs, carry), reference_lstm(kernel, gate_inputs, carry))


def test_fused_lstm_gradients_match_the_reference(gate_arithmetic):
    """Kernel, gate inputs and initial carry: the three things its hand-written backward pass returns."""
    kernel, gate_inputs, carry = _lstm_inputs(time=12, batch=4, hidden=32, seed=1)
    expected = jax.grad(lambda *a: _weighted_sum(reference_lstm, *a), argnums=(0, 1, 2))(kernel, gate_inputs, carry)
    actual = jax.grad(lambda *a: _weighted_sum(_fused_f32, *a), argnums=(0, 1, 2))(kernel, gate_inputs, carry)
    assert_close(actual, expected)


def test_fused_lstm_in_bfloat16_stays_near_float32(gate_arithmetic):
    kernel, gate_inputs, carry = _lstm_inputs()
    expected = reference_lstm(kernel, gate_inputs, carry)
    actual = run_lstm("fused", kernel, gate_inputs.astype(jnp.bfloat16), carry, jnp.bfloat16)
    assert actual[1].dtype == jnp.float32  # the state stays float32
    assert_close(actual, expected, tolerance=0.05)


@pytest.mark.parametrize("batch, hidden", [(32, 64), (19, 150), (1, 5)])
def test_cpu_kernels_match_the_reference_on_whole_tiles_edges_and_several_chunks(batch, hidden, monkeypatch):
    """The kernels transpose 16 x 16 tiles in registers and what is left one float at a time, and
    split the units into chunks of 64 over the threads: shapes that take each of those paths."""
    monkeypatch.setenv(cpu_kernels.ENV_VARIABLE, "on")
    kernel, gate_inputs, carry = _lstm_inputs(time=5, batch=batch, hidden=hidden, seed=4)
    assert_close(_fused_f32(kernel, gate_inputs, carry), reference_lstm(kernel, gate_inputs, carry))
    expected = jax.grad(lambda *a: _weighted_sum(reference_lstm, *a), argnums=(0, 1, 2))(kernel, gate_inputs, carry)
    actual = jax.grad(lambda *a: _weighted_sum(_fused_f32, *a), argnums=(0, 1, 2))(kernel, gate_inputs, carry)
    assert_close(actual, expected)


def test_the_fused_lstm_under_vmap_gives_each_example_its_own_result(gate_arithmetic):
    kernel, gate_inputs, carry = _lstm_inputs(time=4, batch=2, hidden=16, seed=5)
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, x * 0.5]), (gate_inputs, carry))
    batched = jax.vmap(lambda g, c: _fused_f32(kernel, g, c))(*stacked)
    for example in range(2):
        pick = functools.partial(lambda index, x: x[index], example)
        one = jax.tree_util.tree_map(pick, stacked)
        assert_close(jax.tree_util.tree_map(pick, batched), reference_lstm(kernel, *one))


def test_the_compiled_program_calls_the_cpu_kernels_only_when_they_are_on(monkeypatch):
    """The setting is read when the program is traced (a new function each time: JAX keeps traces)."""
    kernel, gate_inputs, carry = _lstm_inputs()
    for setting, calls in (("on", True), ("off", False)):
        monkeypatch.setenv(cpu_kernels.ENV_VARIABLE, setting)
        gradient = jax.grad(lambda *a: _weighted_sum(_fused_f32, *a), argnums=(0, 1, 2))
        program = jax.jit(gradient).lower(kernel, gate_inputs, carry).as_text()
        assert ("abcjax_lstm_forward_step" in program, "abcjax_lstm_backward_step" in program) == (calls, calls)


def test_a_bad_cpu_kernels_setting_or_a_missing_library_is_said_in_one_line(tmp_path):
    with pytest.raises(AbcjaxError, match="ABCJAX_CPU_KERNELS='fast' is not one of on, off: unset it, or pick one"):
        cpu_kernels.status({"ABCJAX_CPU_KERNELS": "fast"})
    assert cpu_kernels.status({"ABCJAX_CPU_KERNELS": "off"}) == "off (ABCJAX_CPU_KERNELS=off)"
    assert cpu_kernels.status({}, directory=tmp_path).startswith("off (not built: reinstall abcjax where a C++")
    result = run_abcjax("bench", "--config", str(TINY_CONFIG), variables={"ABCJAX_CPU_KERNELS": "fast"})
    assert result.returncode == 2
    assert result.stderr.strip().startswith("abcjax: error: ABCJAX_CPU_KERNELS='fast' is not one of on, off")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_library_built_from_other_source_is_not_used_and_the_cli_says_so(tmp_path):
    """An editable install keeps its library when a pull changes the kernels' source; the new
    Python side may rely on the new kernels, so abcjax runs XLA's kernels instead, with a warning."""
    package = cpu_kernels.PACKAGE_DIRECTORY
    shutil.copy(next(package.glob(f"{cpu_kernels.LIBRARY_STEM}.*")), tmp_path)
    (tmp_path / cpu_kernels.SOURCE).parent.mkdir()
    (tmp_path / cpu_kernels.SOURCE).write_bytes((package / cpu_kernels.SOURCE).read_bytes() + b"// changed\n")
    stale = cpu_kernels.status({}, directory=tmp_path)
    assert stale.startswith(f"off (stale build: {cpu_kernels.LIBRARY_STEM}.")
    rebuild = f"rebuild it (pip install -e . in {tmp_path.parent}))"
    assert stale.endswith(f"was built from other source than csrc/lstm_cpu_kernels.cc: {rebuild}")
    script = (
        "import argparse, pathlib, sys; from abcjax import cli, cpu_kernels; "
        f"cpu_kernels.PACKAGE_DIRECTORY = pathlib.Path({str(tmp_path)!r}); "
        "cli._set_up_jax(argparse.Namespace(command='bench')); print(cpu_kernels.in_use())"
    )
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    assert result.stderr.strip() == f"abcjax: warning: CPU kernels {stale}; XLA's kernels run instead, slower"


def _cudnn_from_inputs(inputs, input_kernel, bias):
    """cudnn_lstm as a function of (recurrent kernel, gate inputs, carry) like the others, for
    given layer inputs; gate_inputs must be those inputs' projection (it is only the reference's)."""
    return lambda kernel, _gate_inputs, carry: cudnn_lstm(inputs, input_kernel, kernel, bias, carry)


def test_cudnn_lstm_outputs_final_carry_and_gradients_match_the_reference(cudnn_anywhere):
    """Its weight packing, batch-first layout and (cell, hidden) order against the plain scan."""
    kernel, _, carry = _lstm_inputs(time=9, batch=4, hidden=16, seed=2)
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    inputs = jax.random.normal(keys[0], (9, 4, 5))  # [time, batch, features]
    input_kernel, bias = jax.random.normal(keys[1], (5, 64)) / 3, jax.random.normal(keys[2], (64,))
    with jax.default_matmul_precision("highest"):  # no TF32 on a GPU, for a float32 comparison
        gate_inputs = input_projection(inputs, input_kernel, bias, jnp.float32)
        cudnn = _cudnn_from_inputs(inputs, input_kernel, bias)
        assert_close(cudnn(kernel, gate_inputs, carry), reference_lstm(kernel, gate_inputs, carry))
        expected = jax.grad(lambda *a: _weighted_sum(reference_lstm, *a), argnums=(0, 2))(kernel, gate_inputs, carry)
        actual = jax.grad(lambda *a: _weighted_sum(cudnn, *a), argnums=(0, 2))(kernel, gate_inputs, carry)
    assert_close(actual, expected)


def test_cudnn_lstm_refuses_matmul_precisions_that_jax_cudnn_cannot_honour(cudnn_anywhere):
    with jax.default_matmul_precision("bfloat16"), pytest.raises(AbcjaxError, match="precision is bfloat16: unset"):
        check_runs_here("cudnn")
    with jax.default_matmul_precision("highest"):
        check_runs_here("cudnn")
    with jax.default_matmul_precision("bfloat16"):
        check_runs_here("fused")


# Two CPU devices, each with half the batch and the same (replicated) weights, around the stand-in
# for cuDNN: the weights' gradient must be the whole batch's, summed over the devices.
REPLICATED_WEIGHTS_GRADIENT = (
    cudnn_reference.SCRIPT_PREAMBLE
    + """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from abcjax.cudnn_lstm import cudnn_lstm
from abcjax.lstm import reference_lstm
from abcjax.model import input_projection

keys = jax.random.split(jax.random.PRNGKey(0), 3)
inputs = jax.random.normal(keys[0], (6, 4, 5))  # [time, batch, features]
input_kernel, kernel = jax.random.normal(keys[1], (5, 32)) / 3, jax.random.normal(keys[2], (8, 32)) / 3
bias = jnp.zeros(32)

def loss(lstm, kernels, x):
    zeros = jnp.zeros_like(x[0, :, :1]) + jnp.zeros(8)  # [batch, hidden], typed like x
    return (lstm(x, *kernels, (zeros, zeros))[1] ** 2).sum()

def cudnn(x, input_kernel, kernel, carry):
    return cudnn_lstm(x, input_kernel, kernel, bias, carry)

def reference(x, input_kernel, kernel, carry):
    return reference_lstm(kernel, input_projection(x, input_kernel, bias, jnp.float32), carry)

mesh = jax.make_mesh((2,), ("data",))
rows = P(None, "data")
per_device = jax.shard_map(lambda k, x: jax.grad(loss, 1)(cudnn, k, x), mesh=mesh, in_specs=(P(), rows), out_specs=P())
got = per_device((input_kernel, kernel), jax.device_put(inputs, NamedSharding(mesh, rows)))
want = jax.grad(loss, 1)(reference, (input_kernel, kernel), inputs)
print(max(float(np.abs(g - w).max() / np.abs(w).max()) for g, w in zip(got, want)))
"""
)


def test_cudnn_lstm_sums_the_gradient_of_weights_shared_by_the_devices():
    result = run_python(REPLICATED_WEIGHTS_GRADIENT, devices=2)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split()[-1]) <= TOLERANCE


def _model(lstm, layers=2, dropout=0.0):
    return CharLstm(ModelConfig(13, 6, 16, layers, dropout=dropout, dtype=jnp.dtype("float32"), lstm=lstm))


@pytest.mark.parametrize("lstm", LSTM_IMPLEMENTATIONS)
def test_every_configured_implementation_gives_the_reference_logits_and_gradients(
    lstm, cudnn_anywhere, gate_arithmetic
):
    """Two layers: the first fed from the embedding table, the second from the first's outputs."""
    params = init_params(_model("reference"), jax.random.PRNGKey(2))
    tokens = jax.random.randint(jax.random.PRNGKey(3), (4, 9), 0, 13)

    def loss(model, params):
        logits, carries = model.apply({"params": params}, tokens)
        final_cells = sum(cell.sum() for cell, _ in carries)
        return jax.nn.log_softmax(logits)[..., 0].mean() + 0.01 * final_cells

    fast, reference = _model(lstm), _model("reference")
    with jax.default_matmul_precision("highest"):
        assert_close(jax.grad(loss, argnums=1)(fast, params), jax.grad(loss, argnums=1)(reference, params))
        assert_close(loss(fast, params), loss(reference, params))


def test_the_decoder_step_by_step_gives_the_model_logits(gate_arithmetic):
    """The sampler's one-character step (first layer from a precomputed table, the cell by the CPU
    kernel or by XLA) against the whole sequence."""
    model = _model("fused")
    params = init_params(model, jax.random.PRNGKey(4))
    tokens = jax.random.randint(jax.random.PRNGKey(5), (1, 11), 0, 13)
    expected, _ = model.apply({"params": params}, tokens)
    decode = jax.jit(make_decoder(model.config, params))
    carries = jax.tree_util.tree_map(lambda x: x[0], zero_carries(model.config, jnp.zeros(1)))
    steps = []
    for token in tokens[0]:
        logits, carries = decode(token, carries)
        steps.append(logits)
    assert_close(jnp.stack(steps), expected[0])

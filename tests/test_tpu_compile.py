"""`abcjax compile`: the real train step, eval step and sampler compile for TPU slices on this CPU-only
machine (libtpu's compile-only devices), with their memory per chip; the analytic FLOPs and bytes
against hand counts; the command's one-line errors."""

import importlib.util
import json

import pytest

from abcjax import accelerators, roofline, tpu_compile
from abcjax.accelerators import TPU_V5E, find_topology
from abcjax.config import load_config
from abcjax.errors import AbcjaxError
from abcjax.model import ModelConfig
from conftest import REPO, TINY_CONFIG, run_abcjax

pytestmark = pytest.mark.xdist_group("test_tpu_compile")  # one worker: its module fixture is built once

DEMO_CONFIG = REPO / "configs" / "demo.py"
# configs/demo.py shrunk: the same model, optimizer and schedule, in sizes that compile in seconds.
SMALL_DEMO = ["--config.model.hidden_size=32", "--config.model.embed_dim=16", "--config.data.seq_length=16"]
NUM_TUNES = 64
DEFAULT_VOCAB = 83  # characters of the bundled corpus


def _skip_unless_compiler_loads(topology: str) -> None:
    """Skips, saying why, where JAX cannot load the compiler for `topology` (libtpu, or the CUDA plugin)."""
    try:
        tpu_compile.load_devices(find_topology(topology))
    except AbcjaxError as error:
        pytest.skip(f"cannot compile for {topology} here: {error}")


@pytest.fixture(scope="module")
def libtpu():
    """Skips, saying why, where libtpu cannot load (the `tpu` extra is not installed)."""
    _skip_unless_compiler_loads("v5e:2x4")


def _demo(*overrides: str):
    return load_config(DEMO_CONFIG, [*SMALL_DEMO, "--config.train.batch_size=16", *overrides])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("topology, chips, hosts", [("v5e:2x4", 8, 1), ("v5e:4x4", 16, 4)])
def test_every_step_compiles_for_the_slice_within_its_hbm(libtpu, topology, chips, hosts, dtype):
    config = _demo(f"--config.model.dtype={dtype}")
    report = tpu_compile.compile_for_topology(config, topology, NUM_TUNES)

    assert (report["chips"], report["hosts"], report["dtype"]) == (chips, hosts, dtype)
    assert report["train_windows_per_chip"] == 16 // chips and report["sample_slots_per_chip"] == NUM_TUNES // chips
    hbm = report["hbm_bytes_per_chip"]
    assert hbm == 16 * 2**30
    programs = {name: tpu_compile.Program(**fields) for name, fields in report["programs"].items()}
    assert list(programs) == ["train step", "eval step", "sampler"]
    for program in programs.values():
        assert program.out_of_memory is None and program.seconds > 0
        assert 0 < program.peak < hbm
    # Every chip holds the float32 parameters and both Adam moments, and the training text.
    state = 3 * 4 * report["parameters"]
    assert programs["train step"].argument >= state
    assert programs["train step"].alias >= state  # the state's buffers are donated to the new state
    # Each chip samples its share of the chunk: 8 tunes per slot, 1,000 int32 characters each.
    primes_per_chip = NUM_TUNES * 8 * 1000 * 4 // chips
    assert programs["sampler"].argument >= 4 * report["parameters"] + primes_per_chip
    assert report["fits"] and report["lower"] == []
    assert report["training_bytes_per_chip"] >= programs["train step"].peak
    assert "fits: training needs" in tpu_compile.format_report(report)


def test_a_model_too_large_for_the_chip_is_reported_as_not_fitting(libtpu):
    config = _demo("--config.model.hidden_size=32768", "--config.train.batch_size=4096")
    report = tpu_compile.compile_for_topology(config, "v5e:2x4", 8)

    assert not report["fits"]
    assert all("RESOURCE_EXHAUSTED" in program["out_of_memory"] for program in report["programs"].values())
    assert report["training_bytes_per_chip"] is None and report["sampling_bytes_per_chip"] is None
    # 4.3 G float32 parameters: they alone overflow 16 GiB, whatever the batch.
    parameters = f"{report['parameters'] * 4 / 2**30:.2f} GiB"
    assert parameters == "16.02 GiB"
    assert report["lower"] == [f"model.hidden_size (parameters {parameters} per chip, 48.06 GiB with Adam's moments)"]
    verdict = "does not fit: training runs out of memory, sampling 8 tunes at once runs out of memory: lower"
    assert f"{verdict} model.hidden_size (parameters {parameters}" in tpu_compile.format_report(report)


def _default_model(dtype="float32") -> ModelConfig:
    config = load_config(REPO / "configs" / "default.py", [f"--config.model.dtype={dtype}"])
    return ModelConfig.from_config(config, DEFAULT_VOCAB)


def test_training_flops_of_the_default_model_are_6_per_matmul_weight():
    embed, hidden, vocab = 256, 1024, DEFAULT_VOCAB
    matmul_weights = embed * 4 * hidden + hidden * 4 * hidden + hidden * vocab  # 5,327,872
    model = _default_model()

    flops = roofline.model_flops_per_char(model)
    assert abs(flops - 6 * matmul_weights) <= 0.01 * 6 * matmul_weights
    assert 31.5e6 < flops < 32.5e6
    # What abcjax runs: the first layer's products come from a table of the vocabulary's rows,
    # computed once per step (forward and two backward matmuls of [83, 256] x [256, 4096]).
    shapes = roofline.Shapes(model, seq_length=100, rows_per_chip=32, slots_per_chip=1024)
    table_per_char = 6 * vocab * embed * 4 * hidden / (32 * 100)
    assert roofline.train_flops_per_char(shapes) == pytest.approx(
        6 * (hidden * 4 * hidden + hidden * vocab) + table_per_char
    )
    assert roofline.sample_flops_per_char(model) == 2 * (hidden * 4 * hidden + hidden * vocab)


def test_ceilings_of_the_default_model_on_v5e_follow_a_hand_count():
    hidden, vocab, rows, seq, slots = 1024, DEFAULT_VOCAB, 32, 100, 1024
    model = _default_model("bfloat16")
    shapes = roofline.Shapes(model, seq_length=seq, rows_per_chip=rows, slots_per_chip=slots)
    num_params = 5_353_299
    report = roofline.estimate(shapes, num_params, TPU_V5E, chips=8)

    # Training: the bfloat16 recurrent kernel read at each of 100 forward and 100 backward steps,
    # 32 bytes per parameter for the optimizer, 26 float32 activations per unit and character.
    per_step = 2 * seq * hidden * 4 * hidden * 2 + 32 * num_params
    train_bytes = per_step / (rows * seq) + 26 * 4 * hidden
    assert report["train_bytes_per_char"] == round(train_bytes)
    assert report["train_bandwidth_bound_chars_per_sec"] == pytest.approx(8 * 819e9 / train_bytes)
    # Sampling: the bfloat16 weights once per step for 1,024 slots, each slot's table row and carries.
    sample_bytes = (hidden * 4 * hidden + hidden * vocab) * 2 / slots + 4 * hidden * 2 + 2 * 2 * hidden * 4
    assert report["sample_bytes_per_char"] == round(sample_bytes)
    assert report["sample_compute_bound_chars_per_sec"] == pytest.approx(
        8 * 197e12 / (2 * (hidden * 4 * hidden + hidden * vocab))
    )


def test_float32_peak_follows_jax_matmul_precision():
    assert roofline.matmul_peak(TPU_V5E, "bfloat16") == 197e12
    assert roofline.matmul_peak(TPU_V5E, "float32", "default") == 197e12  # one bfloat16 pass
    assert roofline.matmul_peak(TPU_V5E, "float32", "highest") == pytest.approx(197e12 / 6)
    assert roofline.matmul_peak(accelerators.H100, "float32", "highest") == 67e12


def test_topologies_are_found_by_name_or_accelerator_type():
    assert find_topology("v5litepod-16") is find_topology("v5e:4x4")
    with pytest.raises(AbcjaxError, match=r"unknown topology 'v5e:9x9': give one of v4:2x2x1 \(v4-8\), "):
        find_topology("v5e:9x9")


def test_the_command_prints_the_report_as_json(libtpu):
    result = run_abcjax("compile", "--config", str(TINY_CONFIG), "--topology", "v5litepod-4", "--num_tunes=8", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["topology"], report["chips"], report["fits"]) == ("v5e:2x2", 4, True)
    assert "compiled the train step in" in result.stderr


def _one_line_error(*args: str, variables: dict[str, str] | None = None) -> str:
    """Runs `abcjax compile --config configs/tiny.py ARGS`, checks it failed with one line and exit
    code 2, and returns the line."""
    result = run_abcjax("compile", "--config", str(TINY_CONFIG), *args, variables=variables)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("abcjax: error: "), result.stderr
    return result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--topology", "v9:1x1"], "unknown topology 'v9:1x1': give one of v4:2x2x1 (v4-8), v4:2x2x2 (v4-16)"),
        (["--topology", "v5e:2x4", "--num_tunes", "0"], "--num_tunes 0 must be at least 1"),
        (["--topology", "v5e:2x4", "--config.model.lstm=cudnn"], "model.lstm=cudnn runs only on NVIDIA GPUs"),
    ],
)
def test_bad_usage_is_one_line_and_exit_code_2(args, message):
    assert message in _one_line_error(*args)


def test_a_batch_that_does_not_split_over_the_chips_is_one_line(libtpu):
    line = _one_line_error("--topology", "v5e:2x4", "--config.train.batch_size=12")
    assert "train.batch_size=12 does not split over 8 devices: use a multiple of 8" in line


def test_without_libtpu_the_command_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("TPU_LIBRARY_PATH", raising=False)  # set by importing libtpu in this process
    (tmp_path / "libtpu").mkdir()  # shadows an installed libtpu, as where the tpu extra is missing
    (tmp_path / "libtpu" / "__init__.py").write_text("raise ImportError('not installed')\n")
    line = _one_line_error("--topology", "v5e:2x4", variables={"PYTHONPATH": str(tmp_path)})
    assert "compiling for v5e:2x4 needs libtpu: pip install -e '.[tpu]' in the abcjax checkout" in line


def _cuda_plugin_installed() -> bool:
    return importlib.util.find_spec("jax_plugins") is not None and bool(
        importlib.util.find_spec("jax_plugins.xla_cuda12")
    )


@pytest.mark.skipif(not _cuda_plugin_installed(), reason="JAX's CUDA 12 plugin is not installed (docs/tpu-compile.md)")
def test_every_step_compiles_for_gpus_without_one():
    # In a fresh process: JAX registers its CUDA plugin without a GPU only under JAX_PLATFORMS=cpu.
    result = run_abcjax("compile", "--config", str(TINY_CONFIG), "--topology", "h100:1x8", "--num_tunes=8", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["fits"] and report["chips"] == 8 and report["chip"] == "H100 SXM"
    assert all(0 < tpu_compile.Program(**fields).peak for fields in report["programs"].values())

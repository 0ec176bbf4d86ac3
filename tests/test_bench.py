"""`abcjax bench`: the figures it promises, over every device, and the compilation cache it fills."""

import importlib.util
import json
import os

import pytest

from abcjax import bench
from abcjax.errors import AbcjaxError
from abcjax.torch_peer import TorchPeer
from conftest import TINY_CONFIG, run_abcjax, tiny_config

KEYS = {
    "backend",
    "devices",
    "dtype",
    "host_allocator",
    "cpu_kernels",
    "compile_seconds",
    "train_chars_per_sec",
    "sample_chars_per_sec",
    "sample_tunes_per_sec",
    "seed_sample_chars_per_sec",
    "peak_rss_mb",
}


def _tiny_bench(*args: str, devices: int = 1):
    """`abcjax bench --json` of configs/tiny.py with two timed steps."""
    return run_abcjax("bench", "--config", str(TINY_CONFIG), "--steps", "2", "--json", *args, devices=devices)


def test_bench_json_reports_every_figure_over_all_devices_and_fills_the_compilation_cache(tmp_path, monkeypatch):
    monkeypatch.setitem(os.environ, "ABCJAX_COMPILATION_CACHE", str(tmp_path / "cache"))
    result = _tiny_bench("--num_tunes", "4", "--sample_length", "5", "--config.train.batch_size=4", devices=2)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == KEYS
    assert (report["backend"], report["devices"]) == ("cpu", 2)
    assert report["host_allocator"] == "reuse"  # the CLI applies it; tests/test_host_memory.py checks what it does
    assert report["dtype"] == "float32"
    assert report["cpu_kernels"] == "on"  # built by the install, as tests/test_lstm.py requires
    assert all(report[key] > 0 for key in KEYS - {"backend", "devices", "dtype", "host_allocator", "cpu_kernels"})
    # Every tune is exactly --sample_length characters (no early stop); the figures are rounded.
    assert abs(report["sample_chars_per_sec"] / report["sample_tunes_per_sec"] - 5) < 0.01
    assert any((tmp_path / "cache").iterdir())


def test_bench_constrain_times_both_samplers_side_by_side():
    result = _tiny_bench("--num_tunes", "4", "--sample_length", "20", "--constrain")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == KEYS | {
        "unconstrained_sample_chars_per_sec",
        "constrained_sample_chars_per_sec",
        "constrained_speed_fraction",
    }
    assert report["constrained_sample_chars_per_sec"] > 0 and report["unconstrained_sample_chars_per_sec"] > 0
    ratio = report["constrained_sample_chars_per_sec"] / report["unconstrained_sample_chars_per_sec"]
    assert abs(report["constrained_speed_fraction"] - ratio) < 0.01


def test_bench_refuses_bad_figures_in_one_line():
    result = run_abcjax("bench", "--config", str(TINY_CONFIG), "--steps", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == "abcjax: error: --steps 0 must be at least 1"
    result = run_abcjax("bench", "--config", str(TINY_CONFIG), "--num_tunes", "3", devices=2)
    assert result.returncode == 2
    assert "--num_tunes=3 does not split over 2 devices" in result.stderr
    result = run_abcjax("bench", "--config", str(TINY_CONFIG), "--config.model.lstm=cudnn")
    assert result.returncode == 2
    assert "model.lstm=cudnn needs an NVIDIA GPU, and JAX runs on cpu here" in result.stderr


@pytest.mark.parametrize("dtype, autocast", [("float32", "off"), ("bfloat16", "bfloat16")])
def test_compare_torch_adds_the_peer_and_the_speedups_or_says_how_to_install_torch(dtype, autocast):
    result = _tiny_bench("--num_tunes", "2", "--sample_length", "3", "--compare_torch", f"--config.model.dtype={dtype}")
    if importlib.util.find_spec("torch") is None:
        assert result.returncode == 2
        assert result.stderr.strip() == "abcjax: error: --compare_torch needs PyTorch: pip install -e '.[torch]'"
        return
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    peer = {"torch_train_chars_per_sec", "torch_sample_chars_per_sec", "train_speedup_vs_torch"}
    assert peer <= set(report)
    # --steps 2 trains in two turns; sampling takes every turn.
    assert (report["train_turns"], report["sample_turns"]) == (2, bench.ROUNDS_AGAINST_TORCH)
    assert (report["dtype"], report["torch_autocast"]) == (dtype, autocast)  # both sides at one precision
    assert report["torch_device"] == "cpu"  # where abcjax runs
    assert report["train_speedup_vs_torch"] > 0 and report["sample_speedup_vs_torch"] > 0


def test_sides_take_turns_block_by_block_and_each_is_charged_its_own_time():
    now, turns = [0.0], []

    def side(name: str, seconds_per_step: float):
        def run(block: int):
            turns.append((name, block))
            now[0] += block * seconds_per_step

        return run

    work = {"abcjax": side("abcjax", 1.0), "torch": side("torch", 2.0)}
    seconds = bench._seconds_in_turns(work, [2, 1, 3], clock=lambda: now[0])
    # Who goes first alternates, so a steady drift of the machine's speed favours neither.
    assert turns == [("abcjax", 2), ("torch", 2), ("torch", 1), ("abcjax", 1), ("abcjax", 3), ("torch", 3)]
    assert seconds == {"abcjax": [2.0, 1.0, 3.0], "torch": [4.0, 2.0, 6.0]}


def test_speedup_is_the_median_turn_so_one_stalled_turn_does_not_swing_it():
    abcjax_seconds = [1.0, 1.0, 1.0, 1.0, 1.0]
    assert bench.speedup(abcjax_seconds=abcjax_seconds, torch_seconds=[2.0, 2.2, 9.0, 2.1, 2.0]) == 2.1
    # abcjax slower in the typical turn: below 1, whatever one fast turn of abcjax says.
    assert bench.speedup(abcjax_seconds=[2.0, 0.1, 2.0], torch_seconds=[1.0, 1.0, 1.0]) == 0.5


def test_the_torch_peer_on_a_gpu_without_cuda_is_one_line():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine's torch has a CUDA device")
    expected = "a CPU build: install a CUDA one" if torch.version.cuda is None else "sees no GPU: check the NVIDIA"
    with pytest.raises(AbcjaxError, match=f"^--compare_torch on a GPU.*{expected}"):
        TorchPeer(tiny_config(), vocab_size=83, num_tunes=2, sample_length=3, device="cuda")

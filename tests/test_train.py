"""The trainer end to end: data parallelism, resume, checkpoints, signals and what it logs."""

import functools
import json
import re
import shutil
import signal
import subprocess

import cudnn_reference
import jax
import jax.numpy as jnp
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from abcjax import abc_constraint, abc_grammar
from abcjax.checkpoint import Checkpoints
from abcjax.errors import AbcjaxError
from abcjax.metrics import TENSORBOARD_TAGS
from abcjax.parallel import make_mesh
from abcjax.train import train_and_evaluate
from abcjax.trained import load_trained
from conftest import TINY_CONFIG, interrupt_abcjax, latest_saved, run_abcjax, run_python, tiny_config


def _metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _saved_steps(workdir):
    with Checkpoints(workdir, read_only=True) as store:
        return store.steps()


def _relative_difference(a, b):
    return abs(a - b) / max(abs(a), abs(b))


def _assert_same_losses(metrics, expected):
    """Two runs' logged steps agree: train loss, gradient norm and eval loss within 1e-4 relative."""
    assert [m["step"] for m in metrics] == [m["step"] for m in expected]
    for got, want in zip(metrics, expected, strict=True):
        for key in ("train_loss", "grad_norm") + (("eval_loss",) if "eval_loss" in want else ()):
            assert _relative_difference(got[key], want[key]) <= 1e-4, (want["step"], key)


@pytest.mark.parametrize("dropout", ["0.0", "0.3"])
def test_one_and_four_devices_give_the_same_losses(tmp_path, dropout):
    """Same batches and, with dropout, the same masks: each row's mask follows its place in the batch."""
    runs = {}
    for devices in (1, 4):
        workdir = tmp_path / f"devices{devices}"
        result = run_abcjax(
            "train",
            "--config",
            str(TINY_CONFIG),
            "--workdir",
            str(workdir),
            "--config.train.steps=6",
            "--config.train.log_every=1",
            f"--config.model.dropout={dropout}",
            devices=devices,
        )
        assert result.returncode == 0, result.stderr
        assert f"over {devices} CPU device" in result.stdout
        runs[devices] = _metrics(workdir)
    assert [m["step"] for m in runs[1]] == [1, 2, 3, 4, 5, 6]
    _assert_same_losses(runs[4], runs[1])
    assert runs[1][-1]["train_loss"] < runs[1][0]["train_loss"]


def test_the_cpu_kernels_train_as_xla_kernels_do(tmp_path, monkeypatch):
    runs = {}
    for setting in ("off", "on"):
        monkeypatch.setenv("ABCJAX_CPU_KERNELS", setting)
        train_and_evaluate(tiny_config("--config.train.log_every=1"), tmp_path / setting)
        runs[setting] = _metrics(tmp_path / setting)
    assert [m["step"] for m in runs["on"]] == [1, 2, 3, 4]
    _assert_same_losses(runs["on"], runs["off"])


def test_resume_matches_uninterrupted_run(tmp_path):
    straight = train_and_evaluate(tiny_config("--config.train.steps=12"), tmp_path / "straight")
    train_and_evaluate(tiny_config("--config.train.steps=6"), tmp_path / "resumed")
    resumed = train_and_evaluate(tiny_config("--config.train.steps=12"), tmp_path / "resumed")
    assert straight.step == resumed.step == 12
    for key in ("train_loss", "eval_loss"):
        assert _relative_difference(straight.last_metrics[key], resumed.last_metrics[key]) <= 1e-5
    assert [m["step"] for m in _metrics(tmp_path / "resumed")] == [2, 4, 6, 8, 10, 12]


def test_metrics_jsonl_has_one_object_per_logged_step(tmp_path):
    train_and_evaluate(tiny_config("--config.train.steps=4", "--config.train.eval_every=4"), tmp_path)
    lines = _metrics(tmp_path)
    assert [line["step"] for line in lines] == [2, 4]
    train_keys = {"step", "train_loss", "train_bpc", "learning_rate", "grad_norm", "chars_per_sec", "step_time"}
    assert set(lines[0]) == train_keys
    assert set(lines[1]) == train_keys | {"eval_loss", "eval_bpc"}
    assert lines[1]["train_bpc"] == pytest.approx(lines[1]["train_loss"] / 0.6931471805599453)


def test_tensorboard_events_hold_every_scalar_and_the_config(tmp_path):
    train_and_evaluate(tiny_config("--config.train.steps=4"), tmp_path)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    scalars = {tag for tag in events.Tags()["scalars"] if not tag.startswith("hparams/")}  # see test_metrics.py
    assert scalars == {tag for tag in TENSORBOARD_TAGS.values() if not tag.startswith("samples/")}
    assert [event.step for event in events.Scalars("train/loss")] == [2, 4]
    assert [event.step for event in events.Scalars("eval/bpc")] == [2, 4]
    assert "config/text_summary" in events.Tags()["tensors"]


def test_checkpoints_keep_the_last_k_with_config_and_vocabulary(tmp_path):
    config = tiny_config("--config.train.steps=8", "--config.train.keep_checkpoints=2")
    train_and_evaluate(config, tmp_path)
    with Checkpoints(tmp_path, read_only=True) as store:
        assert store.steps() == [6, 8]
        saved_config, vocab, _ = store.restore_metadata(8)
    assert saved_config["train"]["steps"] == 8
    assert len(vocab["chars"]) == 83 and vocab["chars"] == sorted(vocab["chars"])


def test_rerun_past_the_last_step_trains_nothing(tmp_path):
    train_and_evaluate(tiny_config("--config.train.steps=2"), tmp_path)
    result = train_and_evaluate(tiny_config("--config.train.steps=2"), tmp_path)
    assert result.step == 2 and result.last_metrics == {}


def test_resuming_with_another_model_shape_is_refused(tmp_path):
    train_and_evaluate(tiny_config("--config.train.steps=2"), tmp_path)
    with pytest.raises(AbcjaxError, match="model.hidden_size=16, but the config says 32"):
        train_and_evaluate(tiny_config("--config.train.steps=4", "--config.model.hidden_size=32"), tmp_path)
    assert _saved_steps(tmp_path) == [2]


def test_resuming_on_another_corpus_is_refused(tmp_path, small_corpus):
    train_and_evaluate(tiny_config("--config.train.steps=2"), tmp_path)
    with pytest.raises(AbcjaxError, match="trained on other characters"):
        train_and_evaluate(tiny_config("--config.train.steps=4", f"--config.data.path={small_corpus}"), tmp_path)


def test_cudnn_lstm_trains_as_the_fused_one_does_and_its_checkpoint_samples_on_a_cpu(tmp_path, cudnn_anywhere):
    """The real trainer with model.lstm=cudnn (on a CPU, around JAX's reference of the cuDNN call)."""
    runs = {}
    for lstm in ("fused", "cudnn"):
        config = tiny_config("--config.train.log_every=1", f"--config.model.lstm={lstm}")
        with jax.default_matmul_precision("highest"):
            train_and_evaluate(config, tmp_path / lstm)
        runs[lstm] = _metrics(tmp_path / lstm)
    assert [m["step"] for m in runs["cudnn"]] == [1, 2, 3, 4]
    _assert_same_losses(runs["cudnn"], runs["fused"])
    tunes = tmp_path / "tunes.abc"
    result = run_abcjax(
        "sample", "--workdir", str(tmp_path / "cudnn"), "--num_tunes", "2", "--out", str(tunes), "--no-constrain"
    )
    assert result.returncode == 0, result.stderr
    header = tunes.read_text().splitlines()[0]
    assert header.startswith("% abcjax sample: checkpoint step 4 (the best; ")
    assert header.endswith(f"of {tmp_path / 'cudnn'}")


# Trains with model.lstm=cudnn over the process's devices, around JAX's reference of the cuDNN call.
CUDNN_RUN_ON_CPU = (
    cudnn_reference.SCRIPT_PREAMBLE
    + """
from conftest import tiny_config
from abcjax.train import train_and_evaluate

train_and_evaluate(tiny_config("--config.train.log_every=1", "--config.model.lstm=cudnn"), {workdir!r})
"""
)


def test_cudnn_lstm_over_two_devices_gives_the_losses_of_one_device(tmp_path):
    """Each device's gradient is its own rows' (cuDNN's untyped output would otherwise have JAX sum
    the hidden states' gradients over the devices). On CPU, around the stand-in for cuDNN."""
    runs = {}
    for devices in (1, 2):
        result = run_python(CUDNN_RUN_ON_CPU.format(workdir=str(tmp_path / str(devices))), devices=devices)
        assert result.returncode == 0, result.stderr
        assert f"over {devices} CPU device" in result.stdout
        runs[devices] = _metrics(tmp_path / str(devices))
    assert [m["step"] for m in runs[2]] == [1, 2, 3, 4]
    _assert_same_losses(runs[2], runs[1])


def test_cudnn_lstm_off_an_nvidia_gpu_is_one_line_and_leaves_no_workdir(tmp_path):
    workdir = tmp_path / "run"
    result = run_abcjax("train", "--config", str(TINY_CONFIG), "--workdir", str(workdir), "--config.model.lstm=cudnn")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "abcjax: error: model.lstm=cudnn needs an NVIDIA GPU, and JAX runs on cpu here: "
        "use --config.model.lstm=fused (the same model and results)"
    )
    assert not workdir.exists()


def test_default_config_prints_the_seed_parameter_count(tmp_path):
    result = run_abcjax(
        "train",
        "--config",
        "configs/default.py",
        "--workdir",
        str(tmp_path),
        "--config.train.steps=1",
        "--config.data.val_fraction=0",
    )
    assert result.returncode == 0, result.stderr
    assert "model: 5,353,299 parameters" in result.stdout
    assert "vocabulary 83 characters" in result.stdout


def _interrupt_training(workdir, *overrides, at_step, how):
    """Starts a long tiny training run, applies `how` to its process once it logs `at_step`, and
    returns (stdout, stderr, exit code)."""
    return interrupt_abcjax(
        *("train", "--config", str(TINY_CONFIG), "--workdir", str(workdir)),
        *("--config.train.steps=100000", "--config.train.log_every=1", *overrides),
        when=lambda line: line.startswith(f"step {at_step}/"),
        how=how,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_the_next_run_resumes_from_it(tmp_path, signum):
    stdout, stderr, returncode = _interrupt_training(
        tmp_path,
        *("--config.train.checkpoint_every=100000", "--config.train.eval_every=100000"),  # no best to save either
        at_step=3,
        how=lambda process: process.send_signal(signum),
    )
    assert returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    stopped_at = int(stdout.split(f"stopped by {signal.Signals(signum).name} at step ")[1].split(":")[0])
    assert stopped_at >= 3
    assert _saved_steps(tmp_path) == [stopped_at]

    resumed = run_abcjax(
        "train", "--config", str(TINY_CONFIG), "--workdir", str(tmp_path), f"--config.train.steps={stopped_at + 2}"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint of step {stopped_at}" in resumed.stdout
    assert f"step {stopped_at + 2}/{stopped_at + 2}" in resumed.stdout


def test_tunes_sampled_during_training_reach_tensorboard_with_their_quality(tmp_path):
    config = tiny_config("--config.train.steps=4", "--config.train.sample_every=2", "--config.train.sample_tunes=3")
    train_and_evaluate(config, tmp_path)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    for name in ("well_formed", "bars_match_meter", "repeats_another", "copied"):
        shares = [line[f"sample_{name}_fraction"] for line in _metrics(tmp_path)]
        assert len(shares) == 2 and all(share in (0, 1 / 3, 2 / 3, 1) for share in shares)
        assert [event.step for event in events.Scalars(f"samples/{name}_fraction")] == [2, 4]
    texts = [event.tensor_proto.string_val[0].decode() for event in events.Tensors("samples/text_summary")]
    assert len(texts) == 2 and all(text.count("X:1") == 3 for text in texts)


def test_tunes_sampled_during_training_under_the_constraint_are_ones_its_reader_writes(tmp_path):
    config = tiny_config("--config.train.steps=2", "--config.train.sample_every=2", "--config.train.sample_tunes=3")
    config.train.sample_constrained = True
    train_and_evaluate(config, tmp_path)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    (text,) = [event.tensor_proto.string_val[0].decode() for event in events.Tensors("samples/text_summary")]
    tunes = re.findall(r"```\n(.*?)\n```", text, re.DOTALL)
    vocab = load_trained(tmp_path, "latest", make_mesh()).vocab
    tables = abc_grammar.build_tables(vocab.chars, abc_grammar.Options())
    read = jax.jit(functools.partial(abc_constraint.step, tables))
    assert len(tunes) == 3
    for tune in tunes:  # the barely trained model writes nothing the reader refuses (unconstrained: at once)
        reader = abc_constraint.initial(jnp.int32(0))
        for token in vocab.encode(tune):
            reader, ok, _ = read(reader, jnp.int32(token))
            assert ok, tune


def test_a_kill_mid_save_resumes_from_the_last_complete_checkpoint(tmp_path):
    """SIGKILL while checkpoints are written at every step, plus a fabricated half-written one:
    the next run takes neither as complete and resumes from the last complete step."""
    model = ("--config.model.hidden_size=512", "--config.train.keep_checkpoints=100")  # 16 MB per save
    _interrupt_training(tmp_path, *model, "--config.train.checkpoint_every=1", at_step=5, how=subprocess.Popen.kill)
    complete = _saved_steps(tmp_path)
    assert complete and max(complete) >= 3
    latest = max(complete)
    half_written = tmp_path / "checkpoints" / f"{latest + 1}.orbax-checkpoint-tmp-1"  # Orbax's temporary name
    shutil.copytree(tmp_path / "checkpoints" / str(latest), half_written)
    shutil.rmtree(half_written / "state")

    resumed = run_abcjax(
        "train", "--config", str(TINY_CONFIG), "--workdir", str(tmp_path), *model, f"--config.train.steps={latest + 2}"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint of step {latest}" in resumed.stdout
    assert max(_saved_steps(tmp_path)) == latest + 2


@pytest.mark.parametrize("override", ["--config.seed=1", "--config.data.val_fraction=0.2"])
def test_resuming_with_another_split_is_refused(tmp_path, override):
    train_and_evaluate(tiny_config("--config.train.steps=2"), tmp_path)
    with pytest.raises(AbcjaxError, match="use the same value to resume"):
        train_and_evaluate(tiny_config("--config.train.steps=4", override), tmp_path)


def test_a_trained_model_loads_the_saved_parameters_and_only_them(tiny_workdir):
    """Sampling reads the parameters alone (not Adam's moments), equal to those of the whole state."""
    trained, saved = latest_saved(tiny_workdir)
    assert jax.tree.structure(trained.params) == jax.tree.structure(saved.params)
    for loaded, whole in zip(jax.tree.leaves(trained.params), jax.tree.leaves(saved.params), strict=True):
        assert loaded.sharding.is_fully_replicated and (loaded == whole).all()

"""Multi-process runs on JAX's own runtime: 2 processes x 2 CPU devices do what 1 process x 4 does.

The processes are the real `python -m abcjax`, joined through a coordinator on 127.0.0.1 at a free
port; each trained layout is shared by the tests through one module fixture.
"""

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import jax
import pytest

from abcjax import lock, parallel
from abcjax.cli import main
from conftest import REPO, TINY_CONFIG, abcjax_env, free_port, run_abcjax

pytestmark = pytest.mark.xdist_group("test_distributed")  # one worker: its module fixture is built once

TIMEOUT = 120  # seconds for a whole group of processes; a hung group is killed
TRAIN = ("train", "--config", str(TINY_CONFIG), "--config.train.steps=6", "--config.train.log_every=1")
SAMPLE = ("sample", "--num_tunes", "10", "--max_length", "200", "--batch_size", "4", "--no-constrain")


def _run_together(
    runs: list[tuple[tuple[str, ...], dict[str, str]]], returncode: int = 0
) -> list[subprocess.CompletedProcess]:
    """Starts `abcjax ARGS` with ENV for each (ARGS, ENV) at once, waits for all of them, and checks
    that each exits with `returncode`.

    Output goes to files, not pipes, so a process that writes much never blocks on a full pipe;
    every process is killed when the group overruns TIMEOUT or a wait fails.
    """
    deadline = time.monotonic() + TIMEOUT
    with contextlib.ExitStack() as stack:
        files = [[stack.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2)] for _ in runs]
        processes = []
        try:
            for (args, env), (out, err) in zip(runs, files, strict=True):
                command = [sys.executable, "-m", "abcjax", *args]
                processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err, text=True))
            for process in processes:
                process.wait(timeout=max(deadline - time.monotonic(), 0))
        finally:
            for process in processes:
                process.kill()
                process.wait()
        results = []
        for process, (out, err) in zip(processes, files, strict=True):
            out.seek(0)
            err.seek(0)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read()))
    for result in results:
        assert result.returncode == returncode, result.stderr
    return results


def _two_processes(args: tuple[str, ...], how: str = "flags") -> list[tuple[tuple[str, ...], dict[str, str]]]:
    """The runs of `abcjax ARGS` as processes 0 and 1 of 2, with 2 devices each, joined by `how`:
    the --coordinator_address/--num_processes/--process_id flags, or the ABCJAX_* variables."""
    address = f"127.0.0.1:{free_port()}"
    if how == "flags":
        group = ("--coordinator_address", address, "--num_processes", "2")
        return [((*args, *group, "--process_id", str(i)), abcjax_env(2)) for i in range(2)]
    variables = {"ABCJAX_COORDINATOR_ADDRESS": address, "ABCJAX_NUM_PROCESSES": "2"}
    return [(args, abcjax_env(2, ABCJAX_PROCESS_ID=str(i), **variables)) for i in range(2)]


def _only_process_0_talks(process0: subprocess.CompletedProcess, process1: subprocess.CompletedProcess) -> None:
    """Process 0 printed abcjax's lines and process 1 none of them. (Both print what gloo, the CPU
    collectives, says from its threads, sometimes mid-line: those lines are left out.)"""
    lines = [
        line for line in process0.stdout.splitlines() if line.strip() and "Gloo" not in line and "peer" not in line
    ]
    assert lines and not [line for line in lines if line in process1.stdout]


def _metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 6-step tiny run trained as 1 process x 4 devices and as 2 processes x 2, all at once."""
    root = tmp_path_factory.mktemp("distributed")
    one, two = root / "one", root / "two"
    _, process0, process1 = _run_together(
        [((*TRAIN, "--workdir", str(one)), abcjax_env(4))] + _two_processes((*TRAIN, "--workdir", str(two)))
    )
    return {"one": one, "two": two, "process0": process0, "process1": process1}


def test_two_processes_log_the_same_losses_as_one(runs):
    one, two = _metrics(runs["one"]), _metrics(runs["two"])
    assert [m["step"] for m in one] == [m["step"] for m in two] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "grad_norm") + (("eval_loss",) if "eval_loss" in a else ()):
            assert abs(a[key] - b[key]) <= 1e-4 * max(abs(a[key]), abs(b[key])), (a["step"], key)
    assert "data-parallel over 4 CPU devices in 2 process(es)" in runs["process0"].stdout


def test_only_process_zero_writes_the_log_metrics_and_tensorboard(runs):
    assert "step 6/6" in runs["process0"].stdout
    _only_process_0_talks(runs["process0"], runs["process1"])
    assert len(list(runs["two"].glob("events.out.tfevents.*"))) == 1
    assert sorted(path.name for path in (runs["two"] / "checkpoints").iterdir()) == ["2", "4", "6"]


def test_two_processes_sample_the_tunebook_of_one_byte_for_byte(runs, tmp_path):
    """From the 2-process checkpoint: 2 processes (ABCJAX_* variables) and 1 process on 1 device."""
    outputs = {}
    for name in ("two", "one"):
        out = tmp_path / name
        out.mkdir()
        args = (*SAMPLE, "--workdir", str(runs["two"]), "--out", str(out / "tunes.abc"))
        args += ("--split_dir", str(out / "split"), "--jsonl", str(out / "tunes.jsonl"))
        if name == "two":
            results = _run_together(_two_processes(args, how="env"))
            _only_process_0_talks(*results)
            assert "wrote" in results[0].stdout
        else:
            assert run_abcjax(*args).returncode == 0
        outputs[name] = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert len(outputs["one"]) == 12  # tunebook, JSON lines, 10 split files
    assert outputs["two"] == outputs["one"]
    assert outputs["one"][pathlib.Path("tunes.abc")].count(b"\nX:") == 10


def test_a_tpu_pod_slice_joins_without_flags(runs, tmp_path):
    """A Cloud TPU environment as GKE sets it (worker host names, this worker's number) makes JAX's own
    cluster detection start the coordinator; JAX_FORCE_TPU_INIT stands in for the TPU chips."""
    port = free_port()
    pod = {
        "JAX_FORCE_TPU_INIT": "1",
        "TPU_WORKER_HOSTNAMES": "127.0.0.1,127.0.0.1",
        "JAX_COORDINATOR_PORT": str(port),
        "MEGASCALE_COORDINATOR_ADDRESS": "127.0.0.1",  # else read from the TPU metadata server
        "MEGASCALE_NUM_SLICES": "1",
        "MEGASCALE_SLICE_ID": "0",
    }
    books = [tmp_path / "pod.abc", tmp_path / "single.abc"]
    args = (*SAMPLE, "--workdir", str(runs["two"]))
    results = _run_together(
        [((*args, "--out", str(books[0])), abcjax_env(2, TPU_WORKER_ID=str(i), **pod)) for i in range(2)]
    )
    _only_process_0_talks(*results)  # were it alone, process 1 would be a process 0 and talk
    assert run_abcjax(*args, "--out", str(books[1])).returncode == 0
    assert books[0].read_bytes() == books[1].read_bytes()


def test_sigterm_to_one_process_stops_both_at_one_saved_step_and_both_resume(tmp_path):
    """A spot VM's notice may reach one worker only: both stop at the same step, save it, and exit."""
    args = (*TRAIN[:3], "--workdir", str(tmp_path), "--config.train.steps=100000", "--config.train.log_every=1")
    args += ("--config.train.checkpoint_every=100000", "--config.train.eval_every=100000")  # no best to save
    (args0, env0), (args1, env1) = _two_processes(args)
    with tempfile.TemporaryFile("w+") as log1:
        command = [sys.executable, "-m", "abcjax"]
        process0 = subprocess.Popen([*command, *args0], cwd=REPO, env=env0, stdout=subprocess.PIPE, text=True)
        process1 = subprocess.Popen([*command, *args1], cwd=REPO, env=env1, stdout=log1, stderr=log1, text=True)
        try:
            for line in process0.stdout:
                if line.startswith("step 3/"):
                    process1.send_signal(signal.SIGTERM)
                    break
            stdout, _ = process0.communicate(timeout=TIMEOUT)
            process1.wait(timeout=TIMEOUT)
        finally:
            for process in (process0, process1):
                process.kill()
                process.wait()
        log1.seek(0)
        assert (process0.returncode, process1.returncode) == (128 + signal.SIGTERM,) * 2, log1.read()
    stopped_at = int(stdout.split("stopped by SIGTERM at step ")[1].split(":")[0])
    assert stopped_at > 3
    assert sorted(int(path.name) for path in (tmp_path / "checkpoints").iterdir()) == [stopped_at]

    resume = (*TRAIN[:3], "--workdir", str(tmp_path), f"--config.train.steps={stopped_at + 2}")
    process0, _ = _run_together(_two_processes(resume))
    assert f"resuming from the checkpoint of step {stopped_at}" in process0.stdout
    assert f"step {stopped_at + 2}/{stopped_at + 2}" in process0.stdout


def test_a_workdir_held_by_another_train_stops_both_processes_in_one_line_each(tmp_path):
    """Process 0 takes the workdir's lock for the run; when it cannot, every process stops."""
    with lock.holding(tmp_path):
        process0, process1 = _run_together(_two_processes((*TRAIN, "--workdir", str(tmp_path))), returncode=2)
    for process in (process0, process1):
        assert "Traceback" not in process.stderr
    assert f"is in use by another abcjax train (pid {os.getpid()} on host" in process0.stderr
    assert f"abcjax: error: process 0 could not lock {tmp_path}: see its error" in process1.stderr
    assert not (tmp_path / "checkpoints").exists()


GROUP = ("--coordinator_address", "10.0.0.1:8476", "--num_processes", "2", "--process_id", "1")


@pytest.mark.parametrize(
    "flags, variables, message",
    [
        (GROUP[:4], {}, "missing --process_id (or ABCJAX_PROCESS_ID): give all three, or none for one process"),
        ((), {"ABCJAX_NUM_PROCESSES": "2"}, "missing --coordinator_address (or ABCJAX_COORDINATOR_ADDRESS), --proc"),
        (("--coordinator_address", "10.0.0.1", *GROUP[2:]), {}, "--coordinator_address '10.0.0.1' is not HOST:PORT"),
        (("--coordinator_address", "host:http", *GROUP[2:]), {}, "'host:http' is not HOST:PORT"),
        ((*GROUP[:3], "0", *GROUP[4:]), {}, "--num_processes 0 must be at least 1"),
        ((*GROUP[:5], "2"), {}, "--process_id 2 must be in [0, 2)"),
        ((*GROUP[:5], "-1"), {}, "--process_id -1 must be in [0, 2)"),
        (GROUP[:4], {"ABCJAX_PROCESS_ID": "one"}, "ABCJAX_PROCESS_ID='one' is not a whole number"),
    ],
)
def test_bad_process_settings_are_one_line_and_exit_2(capsys, monkeypatch, tmp_path, flags, variables, message):
    for name in parallel.DISTRIBUTED_ENV.values():
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--workdir", str(tmp_path), "--out", str(tmp_path / "t.abc"), *flags])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("abcjax: error: ") and message in lines[0], lines


def test_flags_win_over_the_environment():
    environ = {"ABCJAX_NUM_PROCESSES": "many", "ABCJAX_PROCESS_ID": "0", "ABCJAX_COORDINATOR_ADDRESS": "a:1"}
    group = parallel.process_group("10.0.0.1:8476", 2, None, environ=environ)
    assert group == parallel.ProcessGroup("10.0.0.1:8476", 2, 0)
    assert parallel.process_group(environ={}) is None


@pytest.mark.parametrize(
    "on_tpu_vm, flags, expected_calls",
    [
        (False, (), []),
        (False, ("h:1", 1, 0), []),
        (False, ("h:1", 2, 1), [{"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}]),
        (True, (), [{}]),  # no arguments: JAX reads the pod slice from the TPU metadata
    ],
)
def test_only_a_group_of_several_or_a_tpu_vm_starts_the_distributed_runtime(
    monkeypatch, on_tpu_vm, flags, expected_calls
):
    """One process on a laptop starts nothing; on a Cloud TPU VM, JAX detects the pod slice itself."""
    calls = []
    monkeypatch.setattr(parallel.cloud_tpu_init, "running_in_cloud_tpu_vm", on_tpu_vm)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **settings: calls.append(settings))
    for name in parallel.DISTRIBUTED_ENV.values():
        monkeypatch.delenv(name, raising=False)
    parallel.initialize_distributed(*flags)
    assert calls == expected_calls

"""launch/tpu_vm.sh and launch/gpu.sh, run with fake gcloud, ssh, scp, tar and abcjax first on PATH that
record their arguments: the commands the scripts build, their --dry-run output, and their usage errors."""

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

TPU_VM = REPO / "launch" / "tpu_vm.sh"
GPU = REPO / "launch" / "gpu.sh"
FAKED = ("gcloud", "ssh", "scp", "tar", "abcjax")
# A fake command: appends [its name, *its arguments] as one JSON line to $FAKE_LOG; exits 3 when an
# argument contains $FAKE_FAIL_ON.
FAKE = f"""#!{sys.executable}
import json, os, sys
argv = [os.path.basename(sys.argv[0])] + sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\\n")
fail_on = os.environ.get("FAKE_FAIL_ON")
sys.exit(3 if fail_on and any(fail_on in arg for arg in argv) else 0)
"""


@pytest.fixture
def launch(tmp_path):
    """Runs a launch script with the fakes; returns (completed process, the commands the fakes ran)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in FAKED:
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "commands.jsonl"
    base_env = {key: value for key, value in os.environ.items() if not key.startswith("ABCJAX_")}
    base_env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(log), TMPDIR=str(tmp_path))

    def run(script, *args, **env):
        log.write_text("")
        result = subprocess.run(
            ["bash", str(script), *args], capture_output=True, text=True, env={**base_env, **env}, timeout=30
        )
        commands = [json.loads(line) for line in log.read_text().splitlines()]
        return result, commands

    return run


def remote_command(gcloud_ssh: list[str]) -> str:
    """The --command=... of a gcloud ssh command line."""
    (command,) = [arg.removeprefix("--command=") for arg in gcloud_ssh if arg.startswith("--command=")]
    return command


def test_create_takes_accelerator_zone_runtime_and_spot_from_flags(launch):
    result, commands = launch(
        TPU_VM, "create", "--name", "jigs", "--zone=europe-west4-a", "--accelerator", "v5litepod-16", "--spot"
    )
    assert result.returncode == 0, result.stderr
    assert commands == [
        [
            "gcloud",
            *"compute tpus tpu-vm create jigs".split(),
            "--accelerator-type=v5litepod-16",
            "--version=v2-alpha-tpuv5-lite",
            "--spot",
            "--zone=europe-west4-a",
        ]
    ]


def test_create_takes_its_settings_from_environment_variables(launch):
    env = dict(
        ABCJAX_TPU_NAME="reels",
        ABCJAX_ZONE="us-central2-b",
        ABCJAX_ACCELERATOR="v4-32",
        ABCJAX_SPOT="true",
        ABCJAX_PROJECT="folk-project",
    )
    result, commands = launch(TPU_VM, "create", **env)
    assert result.returncode == 0, result.stderr
    (create,) = commands
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "reels"]
    assert set(create[6:]) == {
        "--accelerator-type=v4-32",
        "--version=tpu-ubuntu2204-base",
        "--spot",
        "--zone=us-central2-b",
        "--project=folk-project",
    }


def test_flags_override_environment_variables_and_defaults_are_on_demand_v5e(launch):
    _, (create,) = launch(TPU_VM, "create", "--zone", "us-west4-a", ABCJAX_ZONE="us-central1-a")
    assert "--zone=us-west4-a" in create
    assert "--accelerator-type=v5litepod-8" in create and "--version=v2-alpha-tpuv5-lite" in create
    assert "--spot" not in create
    _, (create,) = launch(TPU_VM, "create", "--accelerator", "v6e-8", "--runtime", "v2-alpha-tpuv6e-test")
    assert "--version=v2-alpha-tpuv6e-test" in create


def test_train_runs_one_command_on_all_workers_with_the_bucket_workdir_and_extra_args(launch):
    result, commands = launch(
        TPU_VM, "train", "--workdir", "gs://tunes/run1", "--config.train.steps=5000", "--", "--config.seed=3"
    )
    assert result.returncode == 0, result.stderr
    (ssh,) = commands
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "abcjax"]
    assert "--worker=all" in ssh
    words = shlex.split(remote_command(ssh))
    start = words.index(".venv/bin/abcjax")
    assert words[start : start + 8] == [
        ".venv/bin/abcjax",
        "train",
        *("--config", "configs/default.py", "--workdir", "gs://tunes/run1"),
        "--config.train.steps=5000",
        "--config.seed=3",
    ]
    assert words[-3:] == ["tee", "-a", "logs/train.log"]  # each worker's own log file


def test_train_workdir_from_the_bucket_and_detached_under_nohup(launch):
    _, (ssh,) = launch(TPU_VM, "train", "--detach", ABCJAX_BUCKET="tunes", ABCJAX_TPU_NAME="jigs")
    command = remote_command(ssh)
    assert "--workdir gs://tunes/runs/jigs" in command
    assert "nohup .venv/bin/abcjax train" in command and ">> logs/train.log 2>&1 < /dev/null &" in command


def test_sample_runs_on_all_workers_and_copy_fetches_the_tunebook_from_worker_0(launch):
    _, (ssh,) = launch(TPU_VM, "sample", "--workdir=gs://tunes/run1", "--tunes", "reels.abc", "--", "--num_tunes", "9")
    assert "--worker=all" in ssh
    assert ".venv/bin/abcjax sample --workdir gs://tunes/run1 --out out/reels.abc --num_tunes 9" in remote_command(ssh)
    _, (scp,) = launch(TPU_VM, "copy", "--tunes", "reels.abc", "--dest", "runs/")
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert scp[5:8] == ["abcjax:abcjax/out/reels.abc", "runs/", "--worker=0"]


def test_setup_copies_the_checkout_to_every_worker_then_installs_jax_tpu(launch, tmp_path):
    result, commands = launch(TPU_VM, "setup")
    assert result.returncode == 0, result.stderr
    tar, scp, ssh = commands
    tarball = str(tmp_path / "abcjax-src.tar.gz")
    assert tar[:3] == ["tar", "-czf", tarball] and tar[-3:] == ["-C", str(REPO), "."]
    assert scp[5:8] == [tarball, "abcjax:abcjax-src.tar.gz", "--worker=all"]
    assert "--worker=all" in ssh
    install = remote_command(ssh)
    assert install.startswith("mkdir -p abcjax && tar -xzf abcjax-src.tar.gz -C abcjax && ")
    assert shlex.split(install)[-4:] == ["-e", "./abcjax[gcs]", "jax[tpu]", "tensorboard"]


def test_setup_from_a_git_url_clones_on_the_workers_and_copies_nothing(launch):
    _, commands = launch(TPU_VM, "setup", "--git", "https://example.org/abcjax.git", "--ref", "v1")
    (ssh,) = commands
    assert "git clone https://example.org/abcjax.git abcjax" in remote_command(ssh)
    assert "fetch --depth 1 origin v1" in remote_command(ssh)


def test_tensorboard_runs_on_worker_0_and_forwards_its_port(launch):
    _, (ssh,) = launch(TPU_VM, "tensorboard", "--bucket", "tunes", "--port", "6010")
    assert "--worker=0" in ssh and "--ssh-flag=-L 6010:localhost:6010" in ssh
    assert remote_command(ssh) == "abcjax/.venv/bin/tensorboard --logdir gs://tunes/runs/abcjax --port 6010"


def test_delete_asks_no_questions(launch):
    _, commands = launch(TPU_VM, "delete", "--name", "jigs", "--zone", "us-west4-a")
    assert commands == [["gcloud", *"compute tpus tpu-vm delete jigs --quiet --zone=us-west4-a".split()]]


@pytest.mark.parametrize(
    "args",
    [
        ("create", "--spot", "--accelerator", "v4-8"),
        ("setup",),
        ("train", "--bucket", "tunes", "--detach", "--", "--config.model.dtype=it's $HOME", "--x=a b", "--y z=1"),
        ("sample", "--workdir", "gs://tunes/run1", "--", "--prime", 'X:1\\nT:"Reel"\\n'),
        ("logs", "--worker", "all"),
        ("tensorboard", "--bucket", "tunes"),
        ("copy",),
        ("delete", "--project", "folk"),
    ],
)
def test_dry_run_runs_nothing_and_prints_the_commands_a_shell_reads_back_exactly(launch, args):
    dry, nothing_ran = launch(TPU_VM, *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert nothing_ran == []
    _, commands = launch(TPU_VM, *args)
    assert [shlex.split(line) for line in dry.stdout.splitlines()] == commands


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("deploy",), {}, "unknown subcommand 'deploy'"),
        ((), {}, "no subcommand given"),
        (("create", "--colour", "red"), {}, "unknown flag --colour"),
        (("create", "--zone"), {}, "--zone needs a value"),
        (("create", "--zone", "--spot"), {}, "--zone needs a value"),
        (("train",), {}, "train needs a workdir"),
        (("train", "--workdir", "runs/local"), {}, "give a gs:// path"),
        (("create", "--", "--config.train.steps=5"), {}, "create passes no arguments to abcjax"),
        (("create", "stray"), {}, "unexpected argument stray"),
        (("create", "--accelerator", "v9-8"), {}, "no default runtime for accelerator v9-8"),
        (("create",), {"ABCJAX_SPOT": "maybe"}, "ABCJAX_SPOT=maybe"),
        (("copy", "--tunes", "../x.abc"), {}, "give a file name"),
        (("logs", "--worker", "first"), {}, "give a worker number or all"),
    ],
)
def test_bad_usage_is_one_line_on_stderr_and_runs_nothing(launch, args, env, message):
    result, commands = launch(TPU_VM, *args, **env)
    assert result.returncode == 2
    assert commands == []
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_help_prints_the_usage_with_its_common_problems(launch):
    result, commands = launch(TPU_VM, "--help")
    assert result.returncode == 0 and commands == []
    assert result.stdout.startswith("Train abcjax on a Cloud TPU VM")
    assert "Common problems:" in result.stdout and "Spot preemption" in result.stdout
    assert "abcjax compile --config configs/default.py --topology v5litepod-8" in result.stdout
    assert "set -euo pipefail" not in result.stdout


def test_gpu_two_hosts_start_process_0_and_1_with_the_coordinator_flags(launch):
    result, commands = launch(GPU, "train", "--hosts", "me@gpu1,gpu2", "--", "--config", "c.py", "--workdir", "/nfs/r")
    assert result.returncode == 0, result.stderr
    by_host = {command[2]: shlex.split(command[3]) for command in sorted(commands)}
    assert sorted(commands)[0][:2] == ["ssh", "-n"]
    for process_id, host in enumerate(["me@gpu1", "gpu2"]):
        words = by_host[host]
        start = words.index(".venv/bin/abcjax")
        assert words[start : start + 12] == [
            ".venv/bin/abcjax",
            "train",
            *("--config", "c.py", "--workdir", "/nfs/r"),
            *("--coordinator_address", "gpu1:8476", "--num_processes", "2", "--process_id", str(process_id)),
        ]
        assert words[-1] == f"logs/train-{process_id}.log"


def test_gpu_one_host_or_none_runs_one_process_without_coordinator_flags(launch):
    _, ((ssh, _, host, command),) = launch(GPU, "sample", "--hosts", "gpu1", "--", "--workdir", "/r", "--out", "t.abc")
    assert host == "gpu1" and "--coordinator_address" not in command
    _, commands = launch(GPU, "train", "--", "--config", "c.py", "--workdir", "/r", "--config.train.steps=2")
    assert commands == [["abcjax", "train", "--config", "c.py", "--workdir", "/r", "--config.train.steps=2"]]


def test_gpu_coordinator_and_port_from_flags_and_environment(launch):
    _, commands = launch(GPU, "train", "--coordinator", "10.0.0.5", "--", "--workdir", "/r", ABCJAX_HOSTS="a,b,c")
    assert len(commands) == 3
    assert all("--coordinator_address 10.0.0.5:8476 --num_processes 3" in command[3] for command in commands)
    _, commands = launch(GPU, "train", "--hosts", "a,b", "--port=9999", "--", "--workdir", "/r")
    assert all("--coordinator_address a:9999" in command[3] for command in commands)


def test_gpu_a_failed_host_fails_the_launch_and_is_named(launch):
    result, commands = launch(GPU, "train", "--hosts", "gpu1,gpu2", "--", "--workdir", "/r", FAKE_FAIL_ON="gpu2")
    assert len(commands) == 2
    assert result.returncode != 0
    assert "process 1 on gpu2 failed" in result.stderr


def test_gpu_setup_copies_and_installs_jax_cuda_on_each_host(launch):
    _, commands = launch(GPU, "setup", "--hosts", "gpu1,gpu2")
    assert [command[0] for command in commands] == ["tar", "scp", "ssh", "scp", "ssh"]
    targets = [command[2] for command in commands[1:]]  # scp's destination, ssh's host
    assert targets == ["gpu1:abcjax-src.tar.gz", "gpu1", "gpu2:abcjax-src.tar.gz", "gpu2"]
    assert shlex.split(commands[2][3])[-2:] == ["jax[cuda13]", "tensorboard"]


def test_gpu_dry_run_runs_nothing_and_prints_the_commands(launch):
    args = ("train", "--hosts", "gpu1,gpu2", "--", "--workdir", "/r", "--config.model.dtype=it's")
    dry, nothing_ran = launch(GPU, *args, "--dry-run")
    assert nothing_ran == []
    _, commands = launch(GPU, *args)
    assert sorted(shlex.split(line) for line in dry.stdout.splitlines()) == sorted(commands)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "--", "--config", "c.py"), "train needs abcjax's --workdir"),
        (("train", "--gpus", "8"), "unknown flag --gpus"),
        (("setup",), "setup needs --hosts"),
        (("train", "--hosts", "a,,b", "--", "--workdir", "/r"), "an empty host name"),
        (("serve",), "unknown subcommand 'serve'"),
    ],
)
def test_gpu_bad_usage_is_one_line_on_stderr_and_runs_nothing(launch, args, message):
    result, commands = launch(GPU, *args)
    assert result.returncode == 2 and commands == []
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


@pytest.mark.parametrize("script", [TPU_VM, GPU, REPO / "launch" / "common.sh"])
def test_scripts_parse_and_pass_shellcheck_when_it_is_installed(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", "-x", "-s", "bash", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_the_remote_train_command_runs_abcjax_in_its_directory_keeps_a_log_and_its_exit_code(launch, tmp_path):
    _, (ssh,) = launch(TPU_VM, "train", "--workdir", "gs://tunes/run1", "--", "--config.model.dtype=it's")
    home = tmp_path / "worker"
    (home / "abcjax" / ".venv" / "bin").mkdir(parents=True)
    abcjax = home / "abcjax" / ".venv" / "bin" / "abcjax"
    abcjax.write_text('#!/bin/sh\nprintf "%s|" "$@"; echo; exit 5\n')
    abcjax.chmod(0o755)
    worker = subprocess.run(["bash", "-c", remote_command(ssh)], cwd=home, capture_output=True, text=True)
    assert worker.returncode == 5
    expected = "train|--config|configs/default.py|--workdir|gs://tunes/run1|--config.model.dtype=it's|\n"
    assert worker.stdout == expected
    assert (home / "abcjax" / "logs" / "train.log").read_text() == expected

"""Shared helpers: the repository's paths, tiny configs, a short test tune, and running the real `abcjax` command."""

import atexit
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

import cudnn_reference
import pytest

from abcjax.config import load_config


def _use_own_compilation_cache() -> None:
    """The suite compiles into its own cache (inherited by the processes it starts), not the user's,
    and removes it when the run ends: a run leaves about 15 MB of compiled programs."""
    if "ABCJAX_COMPILATION_CACHE" in os.environ:
        return
    directory = tempfile.mkdtemp(prefix="abcjax-test-xla-")
    os.environ["ABCJAX_COMPILATION_CACHE"] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


_use_own_compilation_cache()

REPO = pathlib.Path(__file__).resolve().parents[1]
BUNDLED_CORPUS = REPO / "data" / "irish.abc"
TINY_CONFIG = REPO / "configs" / "tiny.py"
GOOD_BODY = "|:DFA dAF|GBd gdB|AFD EFE|1 D3 D2:|2 D3 D3||"  # a jig's part that passes every check


def abc_tune(body: str = GOOD_BODY, header: str = "X:1\nT:Test\nM:6/8\nL:1/8\nK:D") -> str:
    """A tune from a header and a body, so a test changes only the part it is about."""
    return f"{header}\n{body}"


def tiny_config(*overrides: str):
    """configs/tiny.py with `--config.KEY=VALUE` overrides applied."""
    return load_config(TINY_CONFIG, overrides)


def abcjax_env(devices: int = 1, **variables: str) -> dict[str, str]:
    """The environment of an `abcjax` subprocess: this one's, CPU only, `devices` devices, plus `variables`."""
    return dict(
        os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu", **variables
    )


def run_abcjax(
    *args: str,
    devices: int = 1,
    timeout: float = 300,
    variables: dict[str, str] | None = None,
    max_file_bytes: int | None = None,
) -> subprocess.CompletedProcess:
    """Runs `python -m abcjax ARGS` in a fresh process with `devices` CPU devices and `variables` set.

    `max_file_bytes` caps the size of each file it writes (RLIMIT_FSIZE): a write past it fails as
    on a full disk, with "File too large".
    """
    return _run_python(["-m", "abcjax", *args], devices, timeout, variables, max_file_bytes)


def run_python(
    script: str, variables: dict[str, str] | None = None, timeout: float = 120, devices: int = 1
) -> subprocess.CompletedProcess:
    """Runs `python -c SCRIPT` in a fresh process, as run_abcjax runs the command."""
    return _run_python(["-c", script], devices, timeout, variables)


def _run_python(
    arguments: list[str],
    devices: int,
    timeout: float,
    variables: dict[str, str] | None,
    max_file_bytes: int | None = None,
):
    command = [sys.executable, *arguments]
    if max_file_bytes:  # set in the child itself: a preexec_fn would fork this multithreaded process
        command = [sys.executable, "-c", _LIMIT_FILE_SIZE_AND_EXEC, str(max_file_bytes), *command]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=abcjax_env(devices, **(variables or {})),
        cwd=REPO,
    )


# python -c this BYTES COMMAND...: runs COMMAND with each file it writes capped at BYTES.
_LIMIT_FILE_SIZE_AND_EXEC = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
os.execv(sys.argv[2], sys.argv[2:])
"""


def interrupt_abcjax(*args: str, when, how) -> tuple[str, str, int]:
    """Runs `python -m abcjax ARGS`, applies `how` to its process at the first stdout line for
    which `when(line)` holds, and returns (stdout, stderr, exit code); the process never outlives the call."""
    command = [sys.executable, "-m", "abcjax", *args]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(command, cwd=REPO, env=abcjax_env(), text=True, **pipes) as process:
        try:
            for line in process.stdout:
                if when(line):
                    how(process)
                    break
            stdout, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
    return stdout, stderr, process.returncode


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def latest_saved(workdir):
    """(the latest checkpoint of `workdir` as sampling loads it, the whole state saved with it)."""
    import jax

    from abcjax.checkpoint import Checkpoints
    from abcjax.parallel import make_mesh
    from abcjax.steps import create_train_state, make_optimizer
    from abcjax.trained import load_trained

    mesh = make_mesh()
    trained = load_trained(workdir, "latest", mesh)
    tx = make_optimizer(trained.config)
    target = jax.eval_shape(lambda: create_train_state(trained.model, tx, trained.config.seed))
    with Checkpoints(workdir, read_only=True) as store:
        return trained, store.restore_state(trained.step, target, mesh)


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory):
    """A workdir holding the checkpoints of a 4-step tiny run (steps 2 and 4), shared by the tests."""
    from abcjax.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("tiny_run")
    train_and_evaluate(tiny_config(), workdir)
    return workdir


@pytest.fixture
def cudnn_anywhere(monkeypatch):
    """model.lstm=cudnn on this machine. On an NVIDIA GPU that is cuDNN itself. Elsewhere cuDNN's two
    primitives are the stand-in of tests/cudnn_reference.py, so that everything abcjax does around
    them (packing the weights, layouts, carries, typing, the model and the trainer) is checked on CPU too."""
    from abcjax import cudnn_lstm

    if not cudnn_lstm.cudnn_available():
        cudnn_reference.install(monkeypatch.setattr)


@pytest.fixture
def small_corpus(tmp_path):
    """Six short tunes in one file: enough to split and train on, small enough to read at a glance."""
    tunes = [f"X:{i}\nT:Tune {i}\nM:6/8\nL:1/8\nK:D\n|:DFA dAF|GBd gdB|AFD EFE|1 D3 D2:|2 D3 D3||" for i in range(1, 7)]
    path = tmp_path / "small.abc"
    path.write_text("\n\n".join(tunes) + "\n", encoding="utf-8")
    return path

"""The fault catalogue: bad input and the faults of long unattended runs, each through the real
`abcjax` command in a subprocess.

Every case checks the exit code, that stderr is at most a few lines with no traceback (nor the
"Event loop is closed" echoes of Orbax's threads), and what the workdir holds afterwards: what is
kept, and that the same command resumes. docs/reliability.md lists the cases with these tests.
"""

import concurrent.futures
import dataclasses
import shutil
import socket
import subprocess
import sys

import pytest

from abcjax.checkpoint import Checkpoints
from conftest import REPO, TINY_CONFIG, abcjax_env, run_abcjax

pytestmark = pytest.mark.xdist_group("test_faults")  # one worker: its module fixture is built once

TRAIN = ("train", "--config", str(TINY_CONFIG))


def _clean_failure(result: subprocess.CompletedProcess) -> str:
    """The error line of a run that failed as a user should see it: exit code 2, no traceback, and
    one line on stderr, abcjax's error."""
    assert result.returncode == 2, result.stderr
    _assert_no_traceback(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("abcjax: error: ") or "error: " in lines[0], lines
    return lines[0]


def _assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    for noise in ("Traceback", "Event loop is closed", "Exception ignored", "ERROR:"):
        assert noise not in result.stderr, result.stderr


def _saved_steps(workdir) -> list[int]:
    with Checkpoints(workdir, read_only=True) as store:
        return store.steps()


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------------------------------------
# Bad input: a wrong corpus, config, flag or workdir is one line, exit 2, and nothing written.
# All of them run at once (each is mostly a Python and JAX start-up).


@dataclasses.dataclass(frozen=True)
class BadInput:
    args: object  # tmp dir -> the command's arguments
    message: str  # part of the error line
    devices: int = 1


def _train_in(directory, *overrides):
    return [*TRAIN, "--workdir", str(directory / "run"), *overrides]


def _corpus_case(make_corpus, message) -> BadInput:
    return BadInput(lambda d: _train_in(d, f"--config.data.path={make_corpus(d)}"), message)


def _sample_case(*args, message) -> BadInput:
    """`abcjax sample` of the shared tiny workdir (set in the fixture) with `args`, to d/never.abc."""
    return BadInput(
        lambda d: ["sample", "--workdir", str(d.parent / "tiny"), "--out", str(d / "never.abc"), *args], message
    )


BAD_INPUT = {
    "corpus-missing": _corpus_case(lambda d: d / "missing.abc", "missing.abc: no such file or directory"),
    "corpus-empty": _corpus_case(lambda d: _write(d / "empty.abc", b""), "empty.abc is empty"),
    "corpus-blank": _corpus_case(lambda d: _write(d / "blank.abc", b"\n  \n"), "blank.abc is empty"),
    "corpus-no-tunes": _corpus_case(
        lambda d: _write(d / "notes.abc", b"just some text\n"), "notes.abc: no tunes found"
    ),
    "corpus-bad-declared-charset": _corpus_case(
        lambda d: _write(d / "u.abc", b"%abc-charset utf-8\nX:1\nT:Caf\xe9\nK:D\nabc\n"),
        "not valid utf-8 at byte 28 (line 3), though the file declares it",
    ),
    "corpus-unknown-charset": _corpus_case(
        lambda d: _write(d / "k.abc", b"%abc-charset klingon\nX:1\nK:D\nabc\n"), "unknown character set 'klingon'"
    ),
    "corpus-no-key": _corpus_case(lambda d: _write(d / "nokey.abc", b"X:1\nT:No key\nabc|\n"), "every tune in"),
    "corpus-too-short": _corpus_case(lambda d: _write(d / "short.abc", b"X:1\nK:D\nab\n"), "fewer than one window"),
    "corpus-dir-without-abc": _corpus_case(lambda d: d, "directory has no *.abc files"),
    "config-unknown-key": BadInput(lambda d: _train_in(d, "--config.train.stepz=3"), "unknown config key train.stepz"),
    "config-wrong-type": BadInput(lambda d: _train_in(d, "--config.train.steps=lots"), "train.steps takes an integer"),
    "config-out-of-range": BadInput(
        lambda d: _train_in(d, "--config.model.dropout=2.0"), "model.dropout=2.0 is out of range"
    ),
    "config-negative-seed": BadInput(lambda d: _train_in(d, "--config.seed=-1"), "seed=-1 is out of range"),
    "config-huge-seed": BadInput(
        lambda d: _train_in(d, "--config.seed=99999999999999999999"), "seed=99999999999999999999 is out of range"
    ),
    "config-early-stop": BadInput(
        lambda d: _train_in(d, "--config.train.early_stop_evals=-1"), "train.early_stop_evals=-1 is out of range"
    ),
    "config-cudnn-bfloat16": BadInput(
        lambda d: _train_in(d, "--config.model.lstm=cudnn", "--config.model.dtype=bfloat16"),
        "model.lstm=cudnn computes in float32 only, not model.dtype=bfloat16",
    ),
    "config-file-missing": BadInput(
        lambda d: ["train", "--config", str(d / "none.py"), "--workdir", str(d / "run")], "none.py not found"
    ),
    "workdir-is-a-file": BadInput(lambda d: [*TRAIN, "--workdir", str(_write(d / "run", b"keep me"))], "cannot use"),
    "batch-does-not-split": BadInput(
        lambda d: _train_in(d, "--config.train.batch_size=6"),
        "train.batch_size=6 does not split over 4 devices: use a multiple of 4",
        devices=4,
    ),
    "unknown-flag": BadInput(lambda d: [*_train_in(d), "--stepz=3"], "unrecognised arguments: --stepz=3"),
    "sample-num-tunes": _sample_case("--num_tunes", "0", message="--num_tunes 0 must be at least 1"),
    "sample-temperature": _sample_case("--temperature", "-1", message="--temperature -1.0 must be above 0"),
    "sample-step-missing": _sample_case("--step", "3", message="no checkpoint for step 3"),
    "sample-step-not-a-step": _sample_case("--step", "first", message="'first' is not best, latest or a step number"),
    "sample-prime-vocabulary": _sample_case(
        "--prime", "X:1\\nK:Ü", message="characters 'Ü' are not in the model's vocabulary"
    ),
    "sample-max-length": _sample_case("--max_length", "3", message="prime 1 has 4 characters: raise --max_length"),
    "sample-batch-size": _sample_case("--batch_size", "0", message="--batch_size 0 must be at least 1"),
    "sample-seed": _sample_case("--seed", "-1", message="--seed -1 must be in [0, 2**32)"),
    "sample-free-form": _sample_case(
        "--bars_per_part", "8", "--no-constrain", message="--bars_per_part and --parts shape the body, which"
    ),
    "sample-no-checkpoints": BadInput(
        lambda d: ["sample", "--workdir", str(d), "--out", str(d / "never.abc")], "no checkpoint in"
    ),
    "sample-out-in-missing-dir": BadInput(
        lambda d: ["sample", "--workdir", str(d.parent / "tiny"), "--out", str(d / "nodir" / "never.abc")],
        "its directory does not exist",
    ),
}


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory, tiny_workdir):
    """{case: (its directory, its finished run)} for every BAD_INPUT case, run four at a time."""
    root = tmp_path_factory.mktemp("bad_input")
    shutil.copytree(tiny_workdir, root / "tiny")

    def run(name: str):
        directory = root / name
        directory.mkdir()
        case = BAD_INPUT[name]
        return directory, run_abcjax(*case.args(directory), devices=case.devices)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return dict(zip(BAD_INPUT, pool.map(run, BAD_INPUT), strict=True))


@pytest.mark.parametrize("name", BAD_INPUT)
def test_bad_input_is_one_line_and_writes_nothing(bad_input_runs, name):
    directory, result = bad_input_runs[name]
    line = _clean_failure(result)
    assert BAD_INPUT[name].message in line
    assert "sampling" not in result.stdout  # refused before any work
    assert not (directory / "never.abc").exists()
    if (directory / "run").is_file():
        assert (directory / "run").read_bytes() == b"keep me"
    else:
        assert not (directory / "run").exists()


# ---------------------------------------------------------------------------------------------
# Divergence: a NaN or a runaway loss stops the run before anything of the diverged model is saved.


@pytest.mark.parametrize(
    "learning_rate, message",
    [
        ("1e38", "training diverged at step 6: the training loss or gradient norm became NaN or infinite"),
        ("1e30", "training ran away at step 6: the training loss"),
    ],
    ids=["nan", "runaway"],
)
def test_divergence_stops_in_one_line_and_keeps_the_earlier_checkpoints(tmp_path, tiny_workdir, learning_rate, message):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_workdir, workdir)
    before = (workdir / "metrics.jsonl").read_text()
    result = run_abcjax(
        *TRAIN, "--workdir", str(workdir), "--config.train.steps=8", f"--config.train.learning_rate={learning_rate}"
    )
    line = _clean_failure(result)
    assert message in line and "the best checkpoint (step 4)" in line and "lower train.learning_rate" in line
    assert _saved_steps(workdir) == [2, 4]
    assert (workdir / "metrics.jsonl").read_text() == before  # no figure of the diverged steps is logged


# ---------------------------------------------------------------------------------------------
# A full disk: each file may be at most a few kilobytes (RLIMIT_FSIZE), so writes fail as they
# would on a full disk, part-way through, with the kernel's own error.


def test_a_full_disk_fails_the_save_in_one_line_keeps_what_was_saved_and_the_same_command_resumes(tmp_path):
    train = (*TRAIN, "--workdir", str(tmp_path), "--config.train.steps=6")
    first = run_abcjax(*train[:-1], "--config.train.steps=2")  # also fills the compilation cache
    assert first.returncode == 0, first.stderr

    full = run_abcjax(*train, max_file_bytes=16_000)
    line = _clean_failure(full)
    assert f"cannot write the checkpoint of step 4 to {tmp_path / 'checkpoints' / '4'} (File too large)" in line
    assert "the checkpoints up to step 2 are kept" in line and "run the same command to resume from step 2" in line
    assert _saved_steps(tmp_path) == [2]  # the partial step 4 is not taken as complete

    freed = run_abcjax(*train)
    assert freed.returncode == 0, freed.stderr
    assert "resuming from the checkpoint of step 2" in freed.stdout
    assert _saved_steps(tmp_path) == [2, 4, 6]
    assert not list((tmp_path / "checkpoints").glob("*tmp*"))  # the partial save is cleaned up


def test_a_full_disk_leaves_the_earlier_tunebook_whole(tmp_path, tiny_workdir):
    book = tmp_path / "book.abc"
    sample = ("sample", "--workdir", str(tiny_workdir), "--num_tunes", "40", "--max_length", "300", "--no-constrain")
    sample += ("--out", str(book))
    first = run_abcjax(*sample)
    assert first.returncode == 0, first.stderr
    before = book.read_bytes()
    assert len(before) > 4096

    line = _clean_failure(run_abcjax(*sample, "--seed", "1", max_file_bytes=4096))
    assert f"cannot write the tunebook {book} (File too large): free space on its disk" in line
    assert book.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["book.abc"]


def test_a_full_disk_stops_render_in_one_line(tmp_path):
    tune = "X:{}\nT:Tune {}\nM:4/4\nL:1/8\nK:D\nDEFG ABcd|defg abag|fedc BAGF|EDCB, A,4|"
    book = _write(tmp_path / "book.abc", "\n\n".join(tune.format(i, i) for i in (1, 2)).encode())
    out = tmp_path / "out"
    line = _clean_failure(run_abcjax("render", str(book), "--out", str(out), "--wav", max_file_bytes=100_000))
    assert f"cannot write the rendered files into {out} (File too large)" in line
    assert not list(out.glob("*.wav"))


# ---------------------------------------------------------------------------------------------
# One writer per workdir.


def test_a_second_train_is_refused_naming_the_first_and_a_dead_holders_lock_is_taken_over(tmp_path):
    train = (*TRAIN, "--workdir", str(tmp_path), "--config.train.log_every=1")
    command = [sys.executable, "-m", "abcjax", *train, "--config.train.steps=100000"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL}
    with subprocess.Popen(command, cwd=REPO, env=abcjax_env(), text=True, **pipes) as holder:
        try:
            next(line for line in holder.stdout if line.startswith("step 5/"))  # step 2 is saved by now
            second = run_abcjax(*train, "--config.train.steps=2")
            line = _clean_failure(second)
            assert (
                f"{tmp_path} is in use by another abcjax train (pid {holder.pid} on host {socket.gethostname()}" in line
            )
        finally:
            holder.kill()  # dies holding the lock: the system releases it, the holder file stays
    latest = max(_saved_steps(tmp_path))

    third = run_abcjax(*train, f"--config.train.steps={latest + 2}")
    assert third.returncode == 0, third.stderr
    assert f"note: taking over {tmp_path} from an abcjax train that ended without releasing it (pid {holder.pid}" in (
        third.stdout
    )
    assert f"resuming from the checkpoint of step {latest}" in third.stdout
    assert not (tmp_path / "train.lock.holder").exists()


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints: bytes flipped in a step's arrays, which Orbax's checksums catch.


def _damage(step_dir) -> None:
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(bytes(byte ^ 0xFF for byte in path.read_bytes()))


@pytest.fixture
def damaged_workdir(tmp_path, tiny_workdir):
    """A copy of the tiny workdir (steps 2 and 4) whose step 4, the latest and best, is damaged."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_workdir, workdir)
    _damage(workdir / "checkpoints" / "4")
    return workdir


def test_train_resumes_from_the_newest_checkpoint_that_reads_and_moves_the_damaged_one_aside(damaged_workdir):
    result = run_abcjax(*TRAIN, "--workdir", str(damaged_workdir), "--config.train.steps=6")
    assert result.returncode == 0, result.stderr
    _assert_no_traceback(result)
    skipped = next(line for line in result.stdout.splitlines() if line.startswith("skipping"))
    assert skipped.startswith("skipping the checkpoint of step 4: it cannot be read (DATA_LOSS: ")
    assert "tensorstore_spec" not in skipped and len(skipped) < 300
    _assert_resumed_from_2_with_4_aside(result, damaged_workdir)


def test_a_damaged_metrics_file_is_named_by_sample_and_moved_aside_by_train(tmp_path, tiny_workdir):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_workdir, workdir)
    (workdir / "checkpoints" / "4" / "metrics" / "metrics").write_text("{garbage")
    line = _clean_failure(run_abcjax("sample", "--workdir", str(workdir), "--out", str(tmp_path / "never.abc")))
    assert f"the checkpoint of step 4 in {workdir / 'checkpoints'} cannot be read (its metrics: " in line

    result = run_abcjax(*TRAIN, "--workdir", str(workdir), "--config.train.steps=6")
    assert result.returncode == 0, result.stderr
    _assert_no_traceback(result)
    assert "skipping the checkpoint of step 4: its metrics cannot be read (Expecting" in result.stdout
    _assert_resumed_from_2_with_4_aside(result, workdir)


def _assert_resumed_from_2_with_4_aside(result, workdir) -> None:
    assert "resuming from the checkpoint of step 2" in result.stdout
    assert (workdir / "damaged-checkpoints" / "4" / "state").is_dir()
    assert _saved_steps(workdir) == [2, 4, 6]


@pytest.mark.parametrize(
    "step, outcome",
    [
        ("latest", "skipping the checkpoint of step 4"),
        ("4", "the checkpoint of step 4 in"),
        ("best", "the checkpoint of step 4 in"),
    ],
)
def test_sample_falls_back_only_for_latest_and_names_a_damaged_step(tmp_path, damaged_workdir, step, outcome):
    book = tmp_path / "book.abc"
    result = run_abcjax(
        *("sample", "--workdir", str(damaged_workdir), "--num_tunes", "2", "--out", str(book), "--step", step),
        "--no-constrain",
    )
    if step == "latest":
        assert result.returncode == 0, result.stderr
        _assert_no_traceback(result)
        assert outcome in result.stdout
        assert book.read_text().startswith("% abcjax sample: checkpoint step 2 (the latest; validation ")
    else:
        line = _clean_failure(result)
        assert outcome in line and "cannot be read (DATA_LOSS: " in line and "tensorstore_spec" not in line
        assert not book.exists()
    assert _saved_steps(damaged_workdir) == [2, 4]  # sample changes nothing


def test_train_with_no_readable_checkpoint_is_one_line_and_keeps_them(damaged_workdir):
    _damage(damaged_workdir / "checkpoints" / "2")
    result = run_abcjax(*TRAIN, "--workdir", str(damaged_workdir), "--config.train.steps=6")
    assert result.returncode == 2, result.stderr
    _assert_no_traceback(result)
    assert result.stderr.strip().splitlines() == [
        f"abcjax: error: no checkpoint in {damaged_workdir / 'checkpoints'} can be read (steps 4, 2; see above): "
        "delete the checkpoints folder to start again, or use a new --workdir"
    ]
    assert _saved_steps(damaged_workdir) == [2, 4]


# ---------------------------------------------------------------------------------------------
# Character sets: an undeclared ISO-8859-1 file is read, with one notice.


def test_an_undeclared_iso_8859_1_file_is_read_with_one_notice(tmp_path):
    old = _write(tmp_path / "old.abc", "X:1\nT:Caf\xe9\nM:4/4\nL:1/8\nK:D\nDEFG ABcd|defg abag|\n".encode("iso-8859-1"))
    result = run_abcjax("evaluate", str(old), "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"abcjax: note: {old} is not UTF-8 and declares no character set: read as ISO-8859-1 "
        "(add a line %abc-charset iso-8859-1 to say so, or re-save the file as UTF-8)"
    ]
    assert "Caf\\u00e9" in result.stdout or "Café" in result.stdout

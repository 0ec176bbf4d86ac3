"""`abcjax train` on bad input: one clear line on stderr, exit code 2, and the workdir untouched."""

import gc

import pytest

from abcjax.cli import main
from conftest import TINY_CONFIG, run_abcjax


def _train_error(capsys, workdir, *args):
    """Runs `abcjax train` in this process; returns its one stderr line after checking the exit."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(TINY_CONFIG), "--workdir", str(workdir), *args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("abcjax: error: "), lines
    return lines[0]


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "make_corpus, message",
    [
        (lambda d: d / "missing.abc", "missing.abc: no such file or directory"),
        (lambda d: _write(d / "empty.abc", b""), "empty.abc is empty"),
        (lambda d: _write(d / "blank.abc", b"\n  \n"), "blank.abc is empty"),
        (lambda d: _write(d / "notes.abc", b"just some text\n"), "notes.abc: no tunes found"),
        (lambda d: _write(d / "latin1.abc", b"X:1\nT:Caf\xe9\nK:D\nabc\n"), "not valid UTF-8 at byte 9 (line 2)"),
        (lambda d: _write(d / "nokey.abc", b"X:1\nT:No key\nabc|\n"), "every tune in"),
        (lambda d: _write(d / "short.abc", b"X:1\nK:D\nab\n"), "fewer than one window"),
        (lambda d: d, "directory has no *.abc files"),
    ],
)
def test_bad_corpus_is_one_line_and_leaves_no_workdir(tmp_path, capsys, make_corpus, message):
    corpus = make_corpus(tmp_path)
    workdir = tmp_path / "run"
    line = _train_error(capsys, workdir, f"--config.data.path={corpus}")
    assert message in line
    assert not workdir.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.train.stepz=3"], "unknown config key train.stepz"),
        (["--config.train.steps=lots"], "train.steps takes an integer"),
        (["--config.model.dropout=2.0"], "model.dropout=2.0 is out of range"),
        (["--config.seed=-1"], "seed=-1 is out of range: it must be in [0, 2**32)"),
        (["--config.seed=99999999999999999999"], "seed=99999999999999999999 is out of range"),
        (
            ["--config.model.lstm=cudnn", "--config.model.dtype=bfloat16"],
            "model.lstm=cudnn computes in float32 only, not model.dtype=bfloat16",
        ),
    ],
)
def test_bad_config_override_is_one_line(tmp_path, capsys, args, message):
    assert message in _train_error(capsys, tmp_path / "run", *args)
    assert not (tmp_path / "run").exists()


def test_missing_config_file_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(tmp_path / "none.py"), "--workdir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "none.py not found" in capsys.readouterr().err


def test_workdir_that_is_a_file_is_one_line(tmp_path, capsys):
    workdir = _write(tmp_path / "run", b"keep me")
    assert "cannot use" in _train_error(capsys, workdir)
    assert workdir.read_bytes() == b"keep me"


# Orbax restores the arrays concurrently; when one fails, the failures of the others are left in
# futures nobody reads, which pytest reports when it collects them. The user sees one line (above).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_unreadable_checkpoint_is_one_line_and_kept(tmp_path, capsys):
    main_args = ["train", "--config", str(TINY_CONFIG), "--workdir", str(tmp_path), "--config.train.steps=2"]
    with pytest.raises(SystemExit):
        main(main_args)
    capsys.readouterr()
    state_dir = tmp_path / "checkpoints" / "2" / "state"
    for path in state_dir.rglob("*"):
        if path.is_file() and path.name != "_METADATA":
            path.write_bytes(b"garbage")
    line = _train_error(capsys, tmp_path, "--config.train.steps=4")
    assert "could not be read" in line and "checkpoints/2" in line
    assert (tmp_path / "checkpoints" / "2").exists()
    gc.collect()  # collect Orbax's unread futures here, under this test's filter


def test_batch_that_does_not_split_over_the_devices_is_named():
    result = run_abcjax(
        "train", "--config", str(TINY_CONFIG), "--workdir", "/tmp/unused", "--config.train.batch_size=6", devices=4
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "abcjax: error: train.batch_size=6 does not split over 4 devices: use a multiple of 4"
    )


def test_unknown_flag_is_refused_by_the_real_command():
    result = run_abcjax("train", "--config", str(TINY_CONFIG), "--workdir", "/tmp/unused", "--stepz=3")
    assert result.returncode == 2
    assert "unrecognised arguments: --stepz=3" in result.stderr
    assert "Traceback" not in result.stderr

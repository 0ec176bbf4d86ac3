"""abcjax plot: a real run's metrics.jsonl drawn as a PNG, and a one-line error for each thing that can be wrong."""

import struct
import sys

import pytest

from abcjax import cli
from abcjax.plot import quality_keys, read_metrics
from conftest import tiny_config

pytestmark = pytest.mark.xdist_group("test_plot")  # one worker: its module fixture is built once

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_plot(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `abcjax plot ARGS`, run through the real entry point in this process."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["plot", *map(str, args)])
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header chunk, which must come first."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_one_line_error(code: int, err: str, *phrases: str) -> None:
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("abcjax: error: ")
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in err


@pytest.fixture(scope="module")
def sampled_workdir(tmp_path_factory):
    """A tiny run that also samples tunes at every logged step, so its metrics.jsonl has the quality figures."""
    from abcjax.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("tiny_sampled_run")
    train_and_evaluate(tiny_config("--config.train.sample_every=2", "--config.train.sample_tunes=8"), workdir)
    return workdir


def test_plot_of_a_tiny_run_is_a_png_of_sensible_size(tiny_workdir, tmp_path, capsys):
    out = tmp_path / "curves.png"

    code, stdout, _ = run_plot(capsys, tiny_workdir, "--out", out)

    assert code == 0
    assert stdout == f"wrote {out}: 2 logged steps of {tiny_workdir}, up to step 4\n"
    data = out.read_bytes()
    assert png_size(data) == (960, 840)
    assert 10_000 < len(data) < 1_000_000
    assert sorted(path.name for path in tmp_path.iterdir()) == ["curves.png"]  # no temporary file left
    image = pytest.importorskip("matplotlib.image").imread(out)
    assert image.shape[:2] == (840, 960) and image.min() < image.max()  # decodes, and is not blank


def test_plot_draws_the_quality_figures_of_the_sampled_tunes(sampled_workdir, tmp_path, capsys):
    records = read_metrics(sampled_workdir / "metrics.jsonl")
    assert quality_keys(records) == [
        "sample_well_formed_fraction",
        "sample_bars_match_meter_fraction",
        "sample_repeats_another_fraction",
        "sample_copied_fraction",
    ]
    out = tmp_path / "curves.png"

    code, _, _ = run_plot(capsys, sampled_workdir, "--out", out)

    assert code == 0
    assert png_size(out.read_bytes()) == (960, 840)


def test_plot_replaces_an_earlier_plot(tiny_workdir, tmp_path, capsys):
    out = tmp_path / "curves.png"
    out.write_bytes(b"an old plot")

    code, _, _ = run_plot(capsys, tiny_workdir, "--out", out)

    assert code == 0
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_of_a_missing_workdir_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run_plot(capsys, tmp_path / "no-such-run", "--out", tmp_path / "curves.png")

    assert_one_line_error(code, err, "no such workdir", "no-such-run")
    assert not (tmp_path / "curves.png").exists()


def test_plot_of_a_workdir_without_metrics_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run_plot(capsys, tmp_path, "--out", tmp_path / "curves.png")

    assert_one_line_error(code, err, "has no metrics.jsonl")
    assert not (tmp_path / "curves.png").exists()


def test_plot_of_an_empty_metrics_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("")

    code, _, err = run_plot(capsys, tmp_path, "--out", tmp_path / "curves.png")

    assert_one_line_error(code, err, "metrics.jsonl is empty")
    assert not (tmp_path / "curves.png").exists()


def test_plot_of_a_file_that_is_not_json_lines_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"step": 2, "train_bpc": 6.3}\nstep 4 loss 4.3\n')

    code, _, err = run_plot(capsys, tmp_path, "--out", tmp_path / "curves.png")

    assert_one_line_error(code, err, "line 2 is not JSON")


def test_plot_to_an_unwritable_path_is_a_one_line_error(tiny_workdir, tmp_path, capsys):
    code, _, err = run_plot(capsys, tiny_workdir, "--out", tmp_path / "no-such-dir" / "curves.png")

    assert_one_line_error(code, err, "cannot write the plot", "no-such-dir")
    assert not (tmp_path / "no-such-dir").exists()


def test_plot_without_matplotlib_says_to_install_the_extra(tiny_workdir, tmp_path, capsys, monkeypatch):
    for name in [name for name in sys.modules if name.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # an import of any of them now fails as if not installed

    code, _, err = run_plot(capsys, tiny_workdir, "--out", tmp_path / "curves.png")

    assert_one_line_error(code, err, "needs matplotlib", "pip install 'abcjax[plot]'")
    assert not (tmp_path / "curves.png").exists()

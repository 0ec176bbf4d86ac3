"""The `abcjax` command itself, before any subcommand: --version, and the help for a bare `abcjax`."""

import importlib.metadata

import pytest

from abcjax import cli
from conftest import run_abcjax


def test_version_prints_the_installed_packages_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])

    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"abcjax {importlib.metadata.version('abcjax')}\n"


def test_abcjax_alone_prints_the_help_and_exits_0():
    result = run_abcjax(timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: abcjax")
    for command in ("train", "sample", "evaluate", "render", "bench", "compile", "plot"):
        assert command in result.stdout
    assert result.stderr == ""


def test_an_unknown_flag_without_a_command_is_still_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--no-such-flag"])

    assert exit_.value.code == 2
    assert "unrecognised arguments: --no-such-flag" in capsys.readouterr().err

"""`abcjax sample --require`: the i-th passing candidate, in candidate order, whatever the chunks or devices.

The tiny model's own tunes are noise that no check passes, so most tests prime it with a whole
well-formed tune and let it add a few characters: some additions keep the tune well-formed and its
bars full, many do not, which gives a requirement about a quarter of the candidates meet.
"""

import contextlib
import json
import os
import select
import signal
import subprocess
from itertools import pairwise

import pytest

from abcjax import tune_checks
from abcjax.cli import main
from abcjax.generate import numbered_tune
from abcjax.parallel import make_mesh
from abcjax.sample import SamplingOptions, make_sampler
from abcjax.selection import Requirement, Selector
from abcjax.trained import load_trained
from conftest import abc_tune, interrupt_abcjax, run_abcjax, run_python

PRIME = abc_tune() + "\n"
ADDED = 5  # characters the model adds to PRIME
PRIME_FLAG = PRIME.replace("\n", "\\n")
FREE = "--no-constrain"  # the tiny model's free tunes pass now and then: what selection is for
REQUIRED = ("well_formed", "bars_match_meter")


def _judged(tunes):
    return tune_checks.verdicts([numbered_tune(tune, 1) for tune in tunes], REQUIRED, frozenset())


class _Recorded:
    """The real sampler, with each chunk's start written down beside the judging of its tunes."""

    def __init__(self, sampler, events):
        self._sampler, self._events, self.mesh = sampler, events, sampler.mesh

    def start(self, params, seed, first, count, batch_size):
        self._events.append(("start", first, count))
        return self._sampler.start(params, seed, first, count, batch_size)

    def written(self, tune):
        self._events.append(("judge", tune.index))
        return numbered_tune(tune, 1)


def test_the_tunes_are_the_passing_candidates_in_order_and_chunks_overlap_the_judging(tiny_workdir):
    mesh = make_mesh()
    trained = load_trained(tiny_workdir, "latest", mesh)
    sampler = make_sampler(trained.model, trained.vocab, mesh, SamplingOptions(max_length=len(PRIME) + ADDED), [PRIME])
    candidates = sampler(trained.params, 0, 128, 128)
    verdicts = _judged(candidates)
    passing = [tune for tune, verdict in zip(candidates, verdicts, strict=True) if all(verdict.values())]
    assert 8 < len(passing) < 48  # a requirement many candidates fail, but not most

    events = []
    recorded = _Recorded(sampler, events)
    selector = Selector(recorded, Requirement(REQUIRED, 1000, frozenset()), recorded.written)
    tunes = selector(trained.params, 0, 8, 2)
    assert tunes == passing[:8]
    assert selector.passed >= 8 and selector.checked <= sum(count for *_, count in _starts(events))
    assert selector.passed_each["well_formed"] == sum(v["well_formed"] for v in verdicts[: selector.checked])

    starts = _starts(events)
    assert [first for _, first, _ in starts] == [sum(count for *_, count in starts[:k]) for k in range(len(starts))]
    assert all(count % 2 == 0 and count <= 2 * 8 for *_, count in starts)  # whole batches, at most 8 per slot
    # Some chunk was started before the one ahead of it was judged: the devices sampled meanwhile.
    judged = [event for event in starts if ("judge", event[1]) in events]
    assert any(events.index(later) < events.index(("judge", earlier[1])) for earlier, later in pairwise(judged))


def _starts(events):
    return [event for event in events if event[0] == "start"]


def test_chunks_follow_the_acceptance_rate_and_stop_at_max_candidates():
    selector = Selector(None, Requirement(REQUIRED, 1000, frozenset()), str)
    selector.num_tunes = 100
    assert selector._next_count(batch_size=16, drawn=0, unchecked=0) == 128  # 100 + 2 x 10, in whole batches
    assert selector._next_count(batch_size=64, drawn=0, unchecked=0) == 128
    assert selector._next_count(batch_size=8, drawn=0, unchecked=0) == 64  # at most 8 tunes per slot
    assert selector._next_count(batch_size=16, drawn=128, unchecked=128) == 0  # those in flight should do
    selector.checked, selector.passed = 127, 31  # a quarter pass: 69 + 2 x 8.3 wanted, at 1 in 4
    assert selector._next_count(batch_size=16, drawn=128, unchecked=0) == 128
    assert selector._next_count(batch_size=16, drawn=128, unchecked=300) == 48
    assert selector._next_count(batch_size=16, drawn=990, unchecked=0) == 10  # never past max_candidates
    selector.passed = 100
    assert selector._next_count(batch_size=16, drawn=128, unchecked=0) == 0


def _sample(workdir, tmp_path, name, *args, devices=1):
    out, jsonl = tmp_path / f"{name}.abc", tmp_path / f"{name}.jsonl"
    result = run_abcjax(
        *("sample", "--workdir", str(workdir), "--out", str(out), "--jsonl", str(jsonl)),
        *("--prime", PRIME_FLAG, "--max_length", str(len(PRIME) + ADDED), "--require", ",".join(REQUIRED), FREE, *args),
        devices=devices,
    )
    records = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    return result, out, records


def test_tune_i_does_not_depend_on_num_tunes_or_the_device_count(tmp_path, tiny_workdir):
    """Tunes 1..8 of 32 on 4 devices, 4 slots, are the 8 tunes of a one-device run: different chunks too."""
    eight, out, records_8 = _sample(tiny_workdir, tmp_path, "eight", "--num_tunes", "8")
    many, _, records_32 = _sample(tiny_workdir, tmp_path, "many", "--num_tunes", "32", "--batch_size", "4", devices=4)
    assert eight.returncode == 0 and many.returncode == 0, eight.stderr + many.stderr
    assert records_32[:8] == records_8 and len(records_32) == 32
    assert all(record["well_formed"] and record["bars_match_meter"] for record in records_32)
    indices = [record["index"] for record in records_32]  # candidate indices, rising, with gaps
    assert indices == sorted(set(indices)) and indices[-1] > 32
    header = out.read_text().split("\n\n")[0].splitlines()
    assert header[-1].startswith("% required well_formed, bars_match_meter: ") and "candidates passed (" in header[-1]
    assert "per delivered tune" in eight.stdout and "ms per candidate" in eight.stdout
    assert "candidates, " in eight.stdout and "ETA" in eight.stdout


def test_a_requirement_too_few_meet_stops_at_max_candidates_and_writes_what_passed(tmp_path, tiny_workdir):
    result, out, records = _sample(tiny_workdir, tmp_path, "short", "--num_tunes", "20", "--max_candidates", "24")
    assert result.returncode == 2
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1 and f"tunes passed {','.join(REQUIRED)} in 24 candidates (" in error
    assert "try a lower --temperature" in error
    assert 0 < len(records) < 20 and f"only {len(records)} of 20 tunes passed" in error
    header = out.read_text().split("\n\n")[0].splitlines()
    assert header[-2:] == [
        "% --max_candidates 24 reached before 20 passed",
        f"% stopped early: the first {len(records)} of 20 tunes",
    ]
    assert all(record["index"] < 24 for record in records)


def test_a_requirement_nothing_meets_writes_nothing(tmp_path, tiny_workdir, capsys):
    out = tmp_path / "none.abc"
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["sample", "--workdir", str(tiny_workdir), "--out", str(out), "--num_tunes", "2", "--max_length", "40"]
            + ["--require", "well_formed", "--max_candidates", "16", FREE]
        )
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "only 0 of 2 tunes passed well_formed in 16 candidates (0.00% passed)" in captured.err
    assert "nothing written" in captured.out and not out.exists()


def test_ctrl_c_writes_the_tunes_passed_in_the_chunks_judged(tmp_path, tiny_workdir):
    out = tmp_path / "stopped.abc"
    stdout, stderr, returncode = interrupt_abcjax(
        *("sample", "--workdir", str(tiny_workdir), "--out", str(out), "--num_tunes", "100000", "--batch_size", "8"),
        *("--prime", PRIME_FLAG, "--max_length", str(len(PRIME) + ADDED), "--require", "well_formed", FREE),
        when=lambda line: "/100000 tunes (" in line and not line.startswith("  0/"),
        how=lambda process: process.send_signal(signal.SIGINT),
    )
    assert returncode == 128 + signal.SIGINT, stderr
    assert out.exists(), stdout + stderr
    header = out.read_text().split("\n\n")[0].splitlines()
    finished = int(header[-1].split()[-4])
    assert header[-1] == f"% stopped early: the first {finished} of 100000 tunes" and finished > 0
    assert f"stopped by SIGINT after {finished} of 100000 tunes" in stdout
    assert header[-2].startswith("% required well_formed: ")


def test_the_judging_workers_exit_when_sampling_is_killed(tmp_path, tiny_workdir):
    judges = []

    def kill(process):
        found = subprocess.run(["pgrep", "-P", str(process.pid), "-f", "spawn_main"], capture_output=True, text=True)
        judges.extend(os.pidfd_open(int(pid)) for pid in found.stdout.split())
        process.kill()

    interrupt_abcjax(
        *("sample", "--workdir", str(tiny_workdir), "--out", str(tmp_path / "killed.abc"), "--num_tunes", "100000"),
        *("--batch_size", "8", "--prime", PRIME_FLAG, "--max_length", str(len(PRIME) + ADDED)),
        *("--require", "novel", FREE),
        when=lambda line: "/100000 tunes (" in line,
        how=kill,
    )
    try:
        assert judges
        for judge in judges:  # a pidfd turns readable when its process ends
            assert select.select([judge], [], [], 30)[0] == [judge]
    finally:
        for judge in judges:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(judge, signal.SIGKILL)
            os.close(judge)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--require", "well_formed,tuneful"],
            "unknown check 'tuneful'; give a comma list of well_formed, bars_match_meter, repeats_balanced, novel",
        ),
        (["--require", ","], "no check named"),
        (
            ["--require", "novel", "--num_tunes", "8", "--max_candidates", "7"],
            "--max_candidates 7 must be at least --num_tunes 8",
        ),
        (["--max_candidates", "100"], "give --require CHECKS with it"),
    ],
)
def test_bad_requirements_are_one_line(tmp_path, capsys, tiny_workdir, args, message):
    out = tmp_path / "never.abc"
    assert message in _one_line_error(capsys, "--workdir", str(tiny_workdir), "--out", str(out), *args)
    assert not out.exists()


def test_novel_needs_the_training_phrases_and_every_check_needs_abc2midi(tmp_path, capsys, monkeypatch):
    args = ["--workdir", str(tmp_path), "--out", str(tmp_path / "x.abc"), "--require"]
    assert "training_phrases.npy not found" in _one_line_error(capsys, *args, "well_formed,novel")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "--require needs abc2midi" in _one_line_error(capsys, *args, "bars_match_meter")


def _one_line_error(capsys, *args) -> str:
    """The error `abcjax sample ARGS` stops with: one line, exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", *args])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(error.splitlines()) == 1, error
    return error


def test_the_judging_workers_import_no_jax():
    result = run_python(
        "import sys, abcjax.tune_checks; print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

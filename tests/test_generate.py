"""`abcjax sample`: the tunebook, per-tune files and JSON lines, reproducible to the byte."""

import json
import signal

import pytest

from abcjax import parallel
from abcjax.cli import main
from abcjax.generate import numbered_tune, sampling_slots
from abcjax.sample import SampledTune
from conftest import interrupt_abcjax, run_abcjax


def _sample_files(tmp_path, workdir, name, *args, devices=1):
    out = tmp_path / f"{name}.abc"
    result = run_abcjax(
        "sample", "--workdir", str(workdir), "--out", str(out), "--max_length", "80", *args, devices=devices
    )
    assert result.returncode == 0, result.stderr
    return out.read_bytes(), result


def _eval_bpc(workdir, step: int) -> float:
    """The validation bits/char the run logged at `step`."""
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return next(line["eval_bpc"] for line in lines if line["step"] == step)


def test_on_a_cpu_each_slot_writes_several_tunes_unless_batch_size_says_otherwise():
    """On a CPU a step's time grows with the slots, so a run is given about num_tunes / 8 of them (at
    least 32, at most 1,024); --batch_size is taken as given; --require chunks like a CPU run anywhere."""
    mesh = parallel.make_mesh()
    assert [sampling_slots(n, None, False, mesh) for n in (1, 10, 100, 1000, 100_000)] == [1, 10, 32, 125, 1024]
    assert [sampling_slots(1000, b, False, mesh) for b in (4, 1024, 5000)] == [4, 1000, 1000]
    assert [sampling_slots(1000, b, True, mesh) for b in (None, 64)] == [125, 64]


def test_same_tunes_on_one_and_four_devices_and_on_every_rerun(tmp_path, tiny_workdir):
    # tests/test_constraint.py checks the same of constrained sampling.
    free = ("--num_tunes", "6", "--no-constrain")
    one, result = _sample_files(tmp_path, tiny_workdir, "one", *free)
    again, _ = _sample_files(tmp_path, tiny_workdir, "again", *free)
    four, _ = _sample_files(tmp_path, tiny_workdir, "four", *free, "--batch_size", "4", devices=4)
    assert one == again == four
    assert "sampled 6 tunes" in result.stdout and "tunes/s" in result.stdout and "chars/s" in result.stdout


def test_tunebook_of_the_default_sampler_is_numbered_with_a_header_and_blank_lines(tmp_path, tiny_workdir):
    text, _ = _sample_files(tmp_path, tiny_workdir, "book", "--num_tunes", "3", "--seed", "7", "--temperature", "0.5")
    header, *tunes, after_last = text.decode().split("\n\n")
    assert header.splitlines() == [
        f"% abcjax sample: checkpoint step 4 (the best; validation {_eval_bpc(tiny_workdir, 4):.3f} bits/char) "
        f"of {tiny_workdir}",
        "% seed 7, temperature 0.5, top_k 0, top_p 1.0, max_length 80",
        '% primes ["X:1\\n"]',
        "% constrained: well-formed, every bar full",
    ]
    assert [tune.splitlines()[0] for tune in tunes] == ["X:1", "X:2", "X:3"]
    assert after_last == ""  # the last tune ends with its blank line too


def test_the_tunebook_header_says_what_a_header_constraint_asked(tmp_path, tiny_workdir):
    text, _ = _sample_files(tmp_path, tiny_workdir, "free", "--num_tunes", "2", "--no-constrain")
    assert text.decode().split("\n\n")[0].splitlines()[3] == "% unconstrained (--no-constrain)"
    form = ("--num_tunes", "2", "--meter", "6/8", "--key", "Ador", "--no-constrain")
    text, _ = _sample_files(tmp_path, tiny_workdir, "book", *form)
    assert text.decode().split("\n\n")[0].splitlines()[3] == "% header constrained, meter 6/8, key Ador"


def test_split_dir_and_jsonl_hold_every_tune(tmp_path, tiny_workdir):
    split_dir, jsonl = tmp_path / "tunes", tmp_path / "tunes.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "sample",
                "--workdir",
                str(tiny_workdir),
                "--num_tunes",
                "3",
                "--max_length",
                "50",
                "--split_dir",
                str(split_dir),
                "--jsonl",
                str(jsonl),
                "--step",
                "2",
                "--no-constrain",
            ]
        )
    assert exit_info.value.code == 0
    files = sorted(split_dir.iterdir())
    assert [file.name for file in files] == ["tune-0001.abc", "tune-0002.abc", "tune-0003.abc"]
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [record["index"] for record in records] == [0, 1, 2]
    for record, file in zip(records, files, strict=True):
        assert record["abc"] == file.read_text()
        assert set(record) >= {"index", "abc", "length", "finished", "log_likelihood", "well_formed", "meter", "key"}
        # At most --max_length sampled characters, plus the newline that ends the tune's last line.
        assert record["length"] == len(record["abc"]) <= 51
        assert record["log_likelihood"] < 0


def test_split_dir_keeps_no_tune_of_an_earlier_larger_run(tmp_path, tiny_workdir):
    split_dir = tmp_path / "tunes"
    split_dir.mkdir()
    (split_dir / "notes.txt").write_text("the user's own file")
    for num_tunes in ("3", "2"):
        result = run_abcjax(
            "sample",
            "--workdir",
            str(tiny_workdir),
            "--num_tunes",
            num_tunes,
            "--max_length",
            "30",
            "--split_dir",
            str(split_dir),
            "--no-constrain",
        )
        assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in split_dir.iterdir()) == ["notes.txt", "tune-0001.abc", "tune-0002.abc"]


def test_prime_file_primes_are_cycled_over_the_tunes(tmp_path, tiny_workdir):
    primes = tmp_path / "primes.txt"
    primes.write_text("X:1\\nM:6/8\\nK:D\\n\nX:1\\nM:4/4\\nK:G\\n\n")
    jsonl = tmp_path / "t.jsonl"
    result = run_abcjax(
        *("sample", "--workdir", str(tiny_workdir), "--num_tunes", "4", "--prime_file", str(primes)),
        *("--jsonl", str(jsonl), "--no-constrain"),
    )
    assert result.returncode == 0, result.stderr
    starts = [json.loads(line)["abc"][:16] for line in jsonl.read_text().splitlines()]
    assert [start.split("\n")[1:3] for start in starts] == [["M:6/8", "K:D"], ["M:4/4", "K:G"]] * 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("X:1\nT:A\nK:D\nabc|", "X:7\nT:A\nK:D\nabc|\n"),
        ("X:1\nT:A\nK:D\nabc|\nX:2\nT:B\nK:G\ndef|", "X:7\nT:A\nK:D\nabc|\n"),
        ("X:1\nT:A\nK:D\nabc|\n   \ndef|", "X:7\nT:A\nK:D\nabc|\n"),
        ("T:A\nK:D\nabc|", "X:7\nT:A\nK:D\nabc|\n"),
    ],
)
def test_a_tune_is_renumbered_and_ends_where_an_abc_reader_would_end_it(text, expected):
    tune = SampledTune(index=6, text=text, finished=True, log_likelihood=-1.0)
    assert numbered_tune(tune, 7) == expected


def _send(signum, times):
    def how(process):
        for _ in range(times):
            process.send_signal(signum)

    return how


@pytest.mark.parametrize("signum, times", [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 2)])
def test_a_stopped_run_writes_the_tunes_finished_so_far(tmp_path, tiny_workdir, signum, times):
    """Stopped after its first chunk (16 tunes: 8 per slot), a long run still writes its first
    tunes, the same as a run asked for exactly those, marked as stopped early, and exits 128 + the
    signal. One signal lets the chunk under way finish; a second stops at once."""
    out = tmp_path / "stopped.abc"
    stdout, stderr, returncode = interrupt_abcjax(
        *("sample", "--workdir", str(tiny_workdir), "--out", str(out), "--jsonl", str(tmp_path / "stopped.jsonl")),
        *("--num_tunes", "100000", "--batch_size", "2", "--max_length", "80", "--no-constrain"),
        when=lambda line: line.startswith("  16/100000 tunes"),
        how=_send(signum, times),
    )
    assert returncode == 128 + signum, stderr
    header, body = out.read_text().split("\n\n", 1)
    finished = int(header.splitlines()[-1].split()[-4])
    assert header.splitlines()[-1] == f"% stopped early: the first {finished} of 100000 tunes"
    assert 16 <= finished < 100000 and finished % 16 == 0
    if times == 1:
        assert finished >= 32  # the chunk under way when the signal came was kept
    assert f"stopped by {signal.Signals(signum).name} after {finished} of 100000 tunes" in stdout
    assert len((tmp_path / "stopped.jsonl").read_text().splitlines()) == finished
    whole, _ = _sample_files(
        tmp_path, tiny_workdir, "whole", "--num_tunes", str(finished), "--batch_size", "2", "--no-constrain"
    )
    assert whole.decode().split("\n\n", 1) == [header.rsplit("\n", 1)[0], body]

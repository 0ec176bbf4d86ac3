"""Promises of abcjax.render: real tools turn each tune into MIDI, WAV and SVG files, and what goes
wrong (a broken tune, a hung tool, a missing tool) costs only what it must."""

import os
import pathlib
import shutil
import sys
import wave

import numpy as np
import pytest

from abcjax import render
from abcjax.corpus import read_corpus
from abcjax.errors import AbcjaxError
from conftest import BUNDLED_CORPUS

pytestmark = pytest.mark.xdist_group("test_render")  # one worker: its module fixture is built once

ALL_TOOLS = ("abc2midi", "timidity", "abcm2ps")
BROKEN = "X:2\nT:Broken\nK:Qxyz\n@@AB|"  # No MIDI for a key abc2midi cannot read; abcm2ps exits 1 on "@".


def _tune(number: int, title: str) -> str:
    return f"X:{number}\nT:{title}\nM:4/4\nL:1/8\nK:D\nDEFG ABcd|"


def _tunebook(path: pathlib.Path, *tunes: str) -> str:
    path.write_text("\n\n".join(tunes) + "\n", encoding="utf-8")
    return str(path)


def _listing(directory: pathlib.Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[render.RenderReport, pathlib.Path]:
    """Two real tunes of the bundled corpus, renumbered 1-2 as `abcjax sample --out` writes, rendered to all formats."""
    tmp = tmp_path_factory.mktemp("rendered")
    corpus = read_corpus(str(BUNDLED_CORPUS)).tunes
    tunes = [next(tune for tune in corpus if f"\nT:{title}\n" in tune) for title in ("Crowley's No. 1", "Bonnie Kate")]
    renumbered = [f"X:{number}\n" + tune.partition("\n")[2] for number, tune in enumerate(tunes, start=1)]
    out = tmp / "new" / "out"
    report = render.render_tunebook(_tunebook(tmp / "book.abc", *renumbered), str(out), set(), progress=False)
    return report, out


@pytest.fixture
def only_tools(tmp_path, monkeypatch):
    """Makes PATH a fresh directory holding links to just the named real tools; returns the directory."""

    def use(*tools: str) -> pathlib.Path:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for tool in tools:
            (bin_dir / tool).symlink_to(shutil.which(tool))
        monkeypatch.setenv("PATH", str(bin_dir))
        return bin_dir

    return use


def _fake_tool(bin_dir: pathlib.Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)


def test_no_format_given_renders_midi_wav_and_svg_named_by_number_and_title(rendered) -> None:
    report, out = rendered
    stems = ["001-crowleys-no-1", "002-bonnie-kate"]
    assert _listing(out) == sorted(f"{stem}.{ext}" for stem in stems for ext in ("mid", "wav", "svg"))
    assert report.written == {
        fmt: tuple(str(out / f"{stem}.{ext}") for stem in stems)
        for fmt, ext in [("midi", "mid"), ("wav", "wav"), ("svg", "svg")]
    }
    assert (report.failures, report.skipped, report.unread) == ((), {}, ())
    assert report.summary() == f"rendered 2 tunes into {out}: 2 midi, 2 wav, 2 svg"


@pytest.mark.parametrize(
    ("ext", "start", "min_size"),
    [("mid", b"MThd", 500), ("wav", b"RIFF", 10 * 44_100 * 4), ("svg", b"<svg", 5_000)],
)
def test_each_file_is_a_real_file_of_its_format(rendered, ext: str, start: bytes, min_size: int) -> None:
    # A WAV of either tune holds over 10 s of 44.1 kHz 16-bit stereo; the SVG's "<svg" follows an XML prolog.
    _, out = rendered
    for path in out.glob(f"*.{ext}"):
        data = path.read_bytes()
        assert start in data[:200] and len(data) > min_size, path


def test_broken_tune_is_reported_and_the_good_ones_still_render(tmp_path, capsys) -> None:
    cut_off = "X:4\nT:Cut off\nK:D\n\nABcd|"
    book = _tunebook(tmp_path / "book.abc", _tune(1, "One"), BROKEN, _tune(3, "Three"), cut_off)
    report = render.render_tunebook(book, str(tmp_path / "out"), set(), progress=False)
    assert _listing(tmp_path / "out") == [
        f"{stem}.{ext}" for stem in ("001-one", "003-three") for ext in ("mid", "svg", "wav")
    ]
    midi_failure, svg_failure = report.failures
    assert (midi_failure.number, midi_failure.title, midi_failure.formats) == (2, "Broken", ("midi", "wav"))
    assert midi_failure.message.startswith("abc2midi wrote no file: Error in line-char 3-0 : First K: field")
    assert (svg_failure.number, svg_failure.formats) == (2, ("svg",))
    assert svg_failure.message == "abcm2ps failed (exit code 1): 002-broken.abc:4:0: error: Bad character"
    assert report.unread == ((f"{book}:20", "no music"),)
    assert report.summary().endswith("2 midi, 2 wav, 2 svg; failed: 1 midi, 1 wav, 1 svg; unreadable tunes: 1")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("tools", "made", "hints"),
    [
        (("abc2midi", "timidity"), {"mid", "wav"}, {"svg": "sudo apt-get install abcm2ps"}),
        (("timidity", "abcm2ps"), {"svg"}, {"midi": "apt-get install abcmidi", "wav": "apt-get install abcmidi"}),
        (("abc2midi", "abcm2ps"), {"mid", "svg"}, {"wav": "apt-get install timidity"}),
    ],
    ids=["no-abcm2ps", "no-abc2midi", "no-synthesizer"],
)
def test_missing_tool_skips_its_formats_with_the_package_to_install(tmp_path, only_tools, tools, made, hints) -> None:
    only_tools(*tools)
    book = _tunebook(tmp_path / "book.abc", _tune(1, "One"))
    report = render.render_tunebook(book, str(tmp_path / "out"), set(), progress=False)
    assert {path.suffix[1:] for path in (tmp_path / "out").iterdir()} == made
    missing = {fmt for fmt, hint in render.available_formats().items() if hint and fmt in render.DEFAULT_FORMATS}
    assert report.skipped.keys() == hints.keys() == missing
    for fmt, hint in hints.items():
        assert hint in report.skipped[fmt]
    assert f"; no {min(hints)}: " in report.summary()


@pytest.mark.parametrize(
    ("tools", "formats", "packages"),
    [
        ((), set(), ["abcmidi", "abcm2ps", "timidity", "fluidsynth fluid-soundfont-gm"]),
        (("abc2midi", "timidity"), {"svg"}, ["abcm2ps"]),
        (("abcm2ps",), {"midi", "wav"}, ["abcmidi"]),
    ],
    ids=["no-tools", "svg-without-abcm2ps", "sound-without-abc2midi"],
)
def test_no_asked_format_possible_is_an_error_naming_the_packages(
    tmp_path, only_tools, tools, formats, packages
) -> None:
    only_tools(*tools)
    book = _tunebook(tmp_path / "book.abc", _tune(1, "One"))
    with pytest.raises(AbcjaxError, match="cannot make any of the asked formats") as error:
        render.render_tunebook(book, str(tmp_path / "out"), formats, progress=False)
    assert all(package in str(error.value) for package in packages)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("has_soundfont", [True, False], ids=["soundfont", "no-soundfont"])
def test_fluidsynth_plays_the_wav_when_a_soundfont_is_installed_else_timidity(
    tmp_path, only_tools, monkeypatch, has_soundfont: bool
) -> None:
    # The fake fluidsynth writes its arguments, so the test sees it ran, with which soundfont and files.
    bin_dir = only_tools("abc2midi", "timidity")
    fake = "import sys\nargs = sys.argv[1:]\nopen(args[args.index('-F') + 1], 'w').write('RIFF ' + ' '.join(args))\n"
    _fake_tool(bin_dir, "fluidsynth", f"#!{sys.executable}\n{fake}")
    soundfont = tmp_path / "gm.sf2"
    if has_soundfont:
        soundfont.write_bytes(b"sfbk")
    monkeypatch.setattr(render, "SOUNDFONTS", (str(tmp_path / "absent.sf2"), str(soundfont)))
    book = _tunebook(tmp_path / "book.abc", _tune(1, "One"))
    render.render_tunebook(book, str(tmp_path / "out"), {"wav"}, progress=False)
    wav = (tmp_path / "out" / "001-one.wav").read_bytes()
    fluidsynth_args = f"RIFF -ni -g 1.0 -T wav -F 001-one.wav -r 44100 {soundfont} 001-one.mid".encode()
    assert (wav == fluidsynth_args) == has_soundfont
    assert (wav[8:12] == b"WAVE") != has_soundfont
    assert _listing(tmp_path / "out") == ["001-one.wav"]  # The MIDI it was played from is not kept.


def test_hung_tool_is_stopped_at_the_timeout_and_only_its_format_is_lost(tmp_path, only_tools) -> None:
    sleep = shutil.which("sleep")
    bin_dir = only_tools("abc2midi")
    _fake_tool(bin_dir, "abcm2ps", f"#!/bin/sh\nexec {sleep} 60\n")
    book = _tunebook(tmp_path / "book.abc", _tune(1, "One"))
    report = render.render_tunebook(book, str(tmp_path / "out"), {"midi", "svg"}, progress=False, timeout=0.3)
    assert report.failures == (render.Failure(1, "One", ("svg",), "abcm2ps took longer than 0.3s and was stopped"),)
    assert _listing(tmp_path / "out") == ["001-one.mid"]


@pytest.mark.parametrize(
    ("numbers", "names"),
    [
        ((7, 12), ["007-a.mid", "012-b.mid"]),
        ((2, 1000), ["0002-a.mid", "1000-b.mid"]),
        ((7, 7), ["001-a.mid", "002-b.mid"]),
    ],
    ids=["x-numbers", "wider-numbers", "repeated-x-numbers-use-positions"],
)
def test_files_are_named_by_x_number_unless_numbers_repeat(tmp_path, numbers, names) -> None:
    book = _tunebook(tmp_path / "book.abc", _tune(numbers[0], "A"), _tune(numbers[1], "B"))
    render.render_tunebook(book, str(tmp_path / "out"), {"midi"}, progress=False)
    assert _listing(tmp_path / "out") == names


def test_rendering_again_overwrites_the_same_files(tmp_path) -> None:
    book = _tunebook(tmp_path / "book.abc", _tune(1, "One"), _tune(2, "Two"))
    first = render.render_tunebook(book, str(tmp_path / "out"), {"midi", "svg"}, progress=False)
    (tmp_path / "out" / "001-one.mid").write_bytes(b"stale")
    second = render.render_tunebook(book, str(tmp_path / "out"), {"midi", "svg"}, progress=False)
    assert first == second
    assert _listing(tmp_path / "out") == ["001-one.mid", "001-one.svg", "002-two.mid", "002-two.svg"]
    assert (tmp_path / "out" / "001-one.mid").read_bytes().startswith(b"MThd")


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("The Kesh", "the-kesh"),
        ("Alexander's", "alexanders"),
        ("Crowley’s No. 1", "crowleys-no-1"),
        ("Kesh, The", "kesh-the"),
        ("Port na bPúcaí", "port-na-bpucai"),
        ("  --!!--  ", "untitled"),
        ("A" * 30 + " " + "B" * 30, "a" * 30 + "-" + "b" * 9),
    ],
)
def test_slug_is_a_short_lowercase_ascii_file_name_part(title: str, expected: str) -> None:
    assert render.slug(title) == expected


@pytest.mark.parametrize(
    ("name", "formats", "jobs", "message"),
    [
        ("missing.abc", {"midi"}, None, "missing.abc: no such file or directory"),
        ("book.abc", {"midi", "mp3"}, None, "unknown format mp3: choose from abc, midi, wav, ogg, svg"),
        ("book.abc", {"midi"}, 0, "--jobs 0 must be at least 1"),
    ],
)
def test_bad_request_is_an_error_before_any_output(tmp_path, name, formats, jobs, message) -> None:
    _tunebook(tmp_path / "book.abc", _tune(1, "One"))
    with pytest.raises(AbcjaxError, match=message):
        render.render_tunebook(str(tmp_path / name), str(tmp_path / "out"), formats, progress=False, jobs=jobs)
    assert not (tmp_path / "out").exists()


def test_progress_says_what_is_skipped_once_each_failure_and_the_count_with_eta(tmp_path, only_tools, capsys) -> None:
    only_tools("abc2midi")
    tunes = [_tune(1, "One"), BROKEN, *(_tune(number, f"T{number}") for number in range(3, 21))]
    render.render_tunebook(_tunebook(tmp_path / "book.abc", *tunes), str(tmp_path / "out"), set(), progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"skipping {fmt}: {render.available_formats()[fmt]}" for fmt in ("wav", "svg")]
    assert [line for line in lines if line.startswith("tune ")] == [
        "tune 2 (Broken): no midi: abc2midi wrote no file: Error in line-char 3-0 : "
        "First K: field must specify key signature"
    ]
    counts = [line.split(" tunes done, ETA ")[0].strip() for line in lines if "tunes done" in line]
    assert counts == [f"{done}/20" for done in range(2, 21, 2)]
    assert lines[-1].endswith("failures so far: 1")


@pytest.mark.parametrize("synth", ["default", "timidity"])
def test_ogg_is_compressed_vorbis_and_abc_is_the_tunes_own_text(tmp_path, only_tools, synth) -> None:
    if synth == "timidity":  # the synthesizer of a machine without fluidsynth and its soundfont
        only_tools("abc2midi", "timidity")
    book = _tunebook(tmp_path / "book.abc", _tune(1, "One"))
    report = render.render_tunebook(book, str(tmp_path / "out"), {"ogg", "abc"}, progress=False)
    assert _listing(tmp_path / "out") == ["001-one.abc", "001-one.ogg"]  # the MIDI it was played from is not kept
    ogg = (tmp_path / "out" / "001-one.ogg").read_bytes()
    assert ogg.startswith(b"OggS") and b"vorbis" in ogg[:100]
    assert (tmp_path / "out" / "001-one.abc").read_text(encoding="utf-8") == _tune(1, "One") + "\n"
    assert report.summary() == f"rendered 1 tunes into {tmp_path / 'out'}: 1 abc, 1 ogg"


def test_tune_audio_is_the_tune_as_mono_samples_as_long_as_its_wav(rendered) -> None:
    # The same tune, played by the same tools as `render --wav` at 44.1 kHz, lasts as long at 16 kHz.
    _, out = rendered
    with wave.open(str(out / "002-bonnie-kate.wav"), "rb") as wav:
        seconds = wav.getnframes() / wav.getframerate()
    tune = next(tune for tune in read_corpus(str(BUNDLED_CORPUS)).tunes if "\nT:Bonnie Kate\n" in tune)
    samples = render.tune_audio(tune, 16_000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / 16_000 - seconds) < 0.1, (len(samples), seconds)
    assert 0.1 < np.abs(samples).max() < 0.9  # neither faint nor clipped
    assert render.tune_audio(BROKEN, 16_000) is None

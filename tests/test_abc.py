"""Promises of abcjax.abc, the judge: headers, abcjax's reading and abc2midi's, bars, repeats, bad input."""

import subprocess
import time

import pytest

from abcjax import abc
from abcjax.errors import AbcjaxError
from conftest import GOOD_BODY, abc_tune


@pytest.mark.parametrize(
    ("tune", "ok"),
    [
        (abc_tune(header="X:1\nT:Test\nM:6/8\nL:1/8\nK:D"), True),
        (abc_tune(header="X:1\nT:Test\nM:6/8\nK:D"), True),
        (abc_tune(header="X:1\nT:Test\nZ:someone\nR:jig\nM:6/8\nL:1/8\nK:D"), True),
        (abc_tune(header="X:1\nT:Test\nM:6/8\nL:1/8"), False),
        ("X:1\nT:Test\nM:6/8\nL:1/8", False),
        (abc_tune(header="X:1\nT:Test\nK:D\nM:6/8\nL:1/8"), False),
        (abc_tune(header="T:Test\nX:1\nM:6/8\nL:1/8\nK:D"), False),
        (abc_tune(header="X:one\nT:Test\nM:6/8\nL:1/8\nK:D"), False),
        (abc_tune(header="X:1\nM:6/8\nL:1/8\nK:D"), False),
        (abc_tune(header="X:1\nT:Test\nM:6/8\nDFA dAF|\nK:D"), False),
        (abc_tune(header="X:1\nT:Test\nM:FREI4/4\nK:D"), False),
        (abc_tune(header="X:1\nT:Test\nM:6/8\nL:1/0\nK:D"), False),
        (abc_tune(header="X:1\nT:Test\nM:6/8\nK:Bn"), False),
    ],
    ids=[
        "all",
        "no-L",
        "extra-fields",
        "no-K",
        "fields-only-no-K",
        "K-before-M",
        "X-not-first",
        "X-not-a-number",
        "no-T",
        "music-in-header",
        "unreadable-M",
        "unreadable-L",
        "unknown-mode",
    ],
)
def test_headers_need_x_first_t_and_m_and_k_last_all_readable(tune: str, ok: bool) -> None:
    checks = abc.check_tune(tune)
    assert checks["headers_ok"] is ok
    assert checks["well_formed"] is ok
    assert bool(checks["header_errors"]) is not ok


@pytest.mark.parametrize(
    ("body", "reading", "message"),
    [
        ("DFA dA^|GBd gdB|", "unexpected '^'", "Malformed note"),
        ("DFA dA]F|GBd gdB|", "unexpected ']'", "Chord already finished"),
        ('DFA "dAF|GBd gdB|', 'unclosed quote "', "Guitar chord name not properly closed"),
        ("DFA dAF|GBd {gdB|", "unclosed grace notes {", "No note found to follow grace notes"),
    ],
    ids=["lone-accidental", "stray-bracket", "open-quote", "open-grace"],
)
def test_what_both_readers_reject_is_not_well_formed(body: str, reading: str, message: str) -> None:
    checks = abc.check_tune(abc_tune(body))
    assert checks["headers_ok"] and not checks["parses"] and not checks["well_formed"]
    assert any(reading in error for error in checks["syntax_errors"])
    assert any(message in error for error in checks["parse_errors"])
    assert checks["disagreements"] == []


def test_abc2midi_style_notes_and_ties_are_warnings_not_errors() -> None:
    tune = 'X:1\nT:Test\nR:hornpipe\nM:C|\nL:1/8\nK:G\n"p"AB "xtended"cd G2-A2|A2>B2 cdef|'
    checks = abc.check_tune(tune)
    assert checks["well_formed"] and checks["parse_errors"] == []
    warnings = "\n".join(checks["parse_warnings"])
    for message in ("Hornpipe must be in", "Guitar chord does not start", "Could not find note to be tied"):
        assert message in warnings


def test_abc2midi_repeat_complaints_about_valid_abc_do_not_count() -> None:
    # As in 56 bundled tunes: abc2midi says "found [1 or like before |:" for a part without |:.
    checks = abc.check_tune(abc_tune("DFA dAF|GBd gdB:|\nfed cBA|[1 d3 d3:|[2 d3 A3|]"))
    assert checks["parses"] and checks["well_formed"] and checks["repeats_balanced"]


@pytest.mark.parametrize(
    "body",
    [
        'u"A"DFA dAF|GBd gdB|',
        "DFA dAF|GBd gdB H[|]|]",
        "DFA ~(dAF)|GBd gdB|",
        "|:DFA dAF|GBd gdB H[|]:|",
        "|:DFA dAF||1 GBd gdB:|2 AFD EFE||",
        "|:DFA dAF|\\\n1 GBd gdB:|2 AFD EFE||",
    ],
    ids=[
        "bowing-mark-before-a-chord-symbol",
        "invisible-bar-line",
        "roll-before-a-slur",
        "invisible-bar-line-before-a-repeat-end",  # Ryan's Mammoth Collection, John Chambers's copy
        "first-ending-after-a-double-bar",  # Ryan's "Hibernia's Pride"
        "ending-after-a-continued-line",  # Ryan's "Brookside"
    ],
)
def test_valid_abc_that_abc2midi_misreads_is_well_formed_and_the_disagreement_named(body: str) -> None:
    checks = abc.check_tune(abc_tune(body))
    assert checks["well_formed"] and checks["parse_errors"] == []
    assert checks["disagreements"] and all("abc2midi misreads" in line for line in checks["disagreements"])


def test_what_abcjax_cannot_read_but_abc2midi_plays_is_named() -> None:
    checks = abc.check_tune(abc_tune("DFA dAF \\ GBd|gdB DFA|"))
    assert not checks["well_formed"] and checks["parses"]
    assert checks["disagreements"] == ["abc2midi plays what abcjax cannot read: line 6: unexpected '\\\\'"]


@pytest.mark.parametrize(
    "tune",
    [abc_tune(""), abc_tune("\nDFA dAF|GBd gdB|"), "X:1\nT:Test\nM:6/8\nDFA dAF|", abc_tune('"Am" !trill! |')],
    ids=["header-only", "cut-off-by-blank-line", "no-key", "no-notes"],
)
def test_tune_without_music_fails_every_music_check(tune: str) -> None:
    checks = abc.check_tune(tune)
    assert not any(checks[name] for name in ("well_formed", "parses", "bars_match_meter", "repeats_balanced"))
    assert checks["num_bars"] == 0


def test_a_tune_that_stops_abc2midi_fails_alone_in_its_batch() -> None:
    # abc2midi exits on a note length like A/3, dropping the rest of its file.
    tunes = [abc_tune(), abc_tune("DFA dAF|A/3 B|"), abc_tune(), abc_tune("DFA dAF|")]
    checks = abc.check_tunes(tunes)
    assert [tune_checks["parses"] for tune_checks in checks] == [True, False, True, True]
    assert "abc2midi stopped on this tune (exit status 1)" in checks[1]["parse_errors"]


def test_a_batch_costs_two_abc2midi_runs_the_tune_as_read_and_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: runs.append(args) or real_run(*args, **kwargs))
    checks = abc.check_tunes([abc_tune(), abc_tune("DFA dA^|")] * 50)
    assert len(runs) == 2
    assert [tune_checks["parses"] for tune_checks in checks] == [True, False] * 50


# A part closed by a first and a second ending, as Aird's (Tune 172) writes them; the next part, with
# its pickup, starts after the second ending's `||`.
AIRD_PART = "B2c d2e|dcB cBA|[1 B2c d2e|G3 G2:|[2 B2c d2e|"


@pytest.mark.parametrize(
    ("meter", "body", "fits"),
    [
        ("6/8", GOOD_BODY, True),
        ("6/8", "A|DFA dAF|GBd gdB:|\nf|gfe dcB|A3 A2:|", True),
        ("6/8", "A|DFA dAF|GBd gd:|DFA dAF|", True),
        ("6/8", "A|DFA dAF|GBd g:|DFA dAF|", False),
        ("6/8", "A|:DFA dAF|GBd gd:|DFA dAF|", True),
        ("6/8", "DFA dAF|GBd gdBA|AFD EFE|", False),
        ("6/8", "DFA dAFG|GBd gdB|AFD EFE|", False),
        ("6/8", "DFA dAF|GBd |1 gdB:|2 gfe||", True),
        ("6/8", "DFA dAF|GBd gA|1 DFA dAF:|2 DFA d3|]", False),
        ("6/8", "DFA dAF|GBd|AFD EFE|D3 D3|", False),
        ("6/8", "DFA dAF|GBd\ngdB|AFD EFE|", True),
        ("6/8", "DFA dAF|GBd|\ngdB|AFD EFE|", False),
        ("6/8", "DFA dAF|GBd |: gdB|AFD EFE:|", True),
        ("6/8", "DFA dAF|GBd |: gd|AFD EFE:|", False),
        ("6/8", "DFA dAF|GBd gdB||z2A|DFA dAF|", True),
        ("6/8", "DFA dAF|GBd gdB|\nz2A|DFA dAF|", False),
        ("C", "DFAd fdAF|GBdg bgdB|", True),
        ("C|", "DFAd fdAF|GBdg bgdB|", True),
        ("C|", "DFAd fdAF|GBdg bgd|AFDF A4|", False),
        ("2/4", "[DF]A [DA]d|A>B c<d|(3ABc d2|(3:2:4A/B/c/d/ d2|", True),
        ("2/4", 'A2 A/2 A/|A3/2A/ z2|{g}A !trill!A "Am"A2|', True),
        ("2/4", "A2 B2|!\nc2 d2|!\n", True),
        ("6/8", "DFA dAF|(5ABcde f3|DFA dAF|", True),
        ("2/4", "DA dA|(5ABcde f2|DA dA|", True),
        ("6/8", "DFA dAF|(5ABcde f2|DFA dAF|", False),
        ("9/8", "DFA dAF GFE|(2AB A2 B2 c2|DFA dAF GFE|", True),
        ("2/4", "DA dA|Z4|DA dA|", True),
        ("none", "DFA dAF|DF|D|", True),
        ("2+3/8", "DFA dA|DF ADF|", True),
        ("6/8", "c|B2c d2e|dcB cBA|G2G [1 G2:|[2 G3||\nB2G GAB|c2c c3|]", True),
        ("6/8", "c|B2c d2e|dcB cBA|G2G [1 G:|[2 G3||\nB2G GAB|c2c c3|]", False),
        ("6/8", "c|B2c d2e|dcB cBA|G2G [1 G2:|[2 G2||\nB2G GAB|c2c c3|]", False),
        ("6/8", "A|DFA dAF|GBd gd:|\n[1 f|gfe dcB|A3 A2:|", True),
        ("6/8", f"g|{AIRD_PART}G3 G2||\nc|{AIRD_PART}G3 G3|]", True),
        ("6/8", f"g|{AIRD_PART}G3 G2||\nd2|{AIRD_PART}G3 G3|]", False),
    ],
    ids=[
        "repeats-and-endings",
        "pickups-at-repeats",
        "pickup-completed-by-the-last-bar",
        "last-bar-before-repeat-does-not-complete-the-pickup",
        "pickup-before-the-repeat-sign",
        "overfull",
        "overfull-first-bar",
        "bar-split-by-an-ending",
        "short-before-an-ending-and-not-completed",
        "short-mid-section",
        "bar-runs-over-a-line-break",
        "line-break-is-no-section-edge",
        "bar-split-by-a-repeat-sign",
        "split-bar-that-does-not-add-up",
        "pickup-after-a-double-bar",
        "pickup-after-a-plain-bar-line",
        "C-is-4/4",
        "C|-is-2/2",
        "short-in-C|",
        "chords-broken-tuplets",
        "lengths-rests-grace-decorations",
        "bang-line-ends",
        "quintuplet-in-compound-time",
        "quintuplet-in-simple-time",
        "quintuplet-too-short",
        "duplet",
        "multi-bar-rest",
        "free-meter",
        "additive-meter",
        "first-ending-starts-mid-bar",
        "first-ending-mid-bar-falls-short-the-first-time",
        "first-ending-mid-bar-falls-short-the-second-time",
        "a-repeat-end-before-a-first-ending-completes-the-pickup",
        "part-after-a-second-ending-repeats-from-its-pickup",
        "part-after-a-second-ending-with-a-pickup-too-long",
    ],
)
def test_full_bars_last_what_m_and_l_say(meter: str, body: str, fits: bool) -> None:
    checks = abc.check_tune(abc_tune(body, header=f"X:1\nT:Test\nM:{meter}\nL:1/8\nK:D"))
    assert checks["bars_match_meter"] is fits
    assert bool(checks["bar_errors"]) is not fits


def test_an_overfull_bar_of_whole_bars_suggests_a_missing_bar_line() -> None:
    checks = abc.check_tune(abc_tune("DFA dAF GBd gdB|AFD EFE|"))
    assert checks["bar_errors"] == [
        "line 6: bar 1 is overfull: 3/2 of 3/4 (DFAdAFGBdgdB), 2 bars' worth: a bar line missing?"
    ]


@pytest.mark.parametrize(("body", "fits"), [("A4 B4|c8|d8|", True), ("A4 B4|c4|d8|", False)])
def test_without_l_the_unit_is_a_sixteenth_below_3_4(body: str, fits: bool) -> None:
    assert abc.check_tune(abc_tune(body, header="X:1\nT:Test\nM:2/4\nK:D"))["bars_match_meter"] is fits


def test_a_bar_runs_across_continued_lines_and_is_named_by_the_line_it_starts_on() -> None:
    checks = abc.check_tune(abc_tune("DFA dAF|GBd \\\ngdB|AFD\\\nEFE d|"))
    assert checks["bar_errors"] == ["line 7: bar 3 is overfull: 7/8 of 3/4 (AFDEFEd)"]


def test_meter_changes_apply_to_later_bars() -> None:
    body = "DFA dAF|GBd gdB|\nM:9/8\nDFA dAF GFE|[M:6/8]DFA dAF|"
    assert abc.check_tune(abc_tune(body))["bars_match_meter"]


def test_an_unreadable_meter_fails_the_bar_check() -> None:
    checks = abc.check_tune(abc_tune("DFA dAF|\nM:6/8 DFA dAF|\nDFA dAF|"))
    assert not checks["bars_match_meter"] and not checks["well_formed"]


@pytest.mark.parametrize(
    ("body", "balanced"),
    [
        ("|:DFA dAF:|", True),
        ("DFA dAF:|\ngfe dcB:|", True),
        ("|:DFA dAF::gfe dcB:|", True),
        ("|:DFA dAF|1 GBd gdB:|2 AFD EFE||", True),
        ("[1 DFA dAF:|[2 GBd gdB|]", True),
        ("|:DFA dAF|:GBd gdB:|", False),
        ("|:DFA dAF|GBd gdB|]", False),
        ("DFA dAF|2 GBd gdB||", False),
        ("|:DFA dAF|1 GBd gdB|2 AFD EFE||", False),
        ("|:DFA dAF|GBd gdB H[|]:|", True),
        ("|:DFA dAF:|\\\n|:GBd gdB:|", True),
        ("V:1\nV:2\nK:D\n[V:1] |:d8|\n[V:2] |:D8|\n[V:1] d8:|\n[V:2] D8:|", True),
        ("V:1\nV:2\nK:D\n[V:1] |:d8|\n[V:2] |:D8|\n[V:1] d8:|\n[V:2] D8|]", False),
    ],
    ids=[
        "start-and-end",
        "end-without-start",
        "double-repeat",
        "endings",
        "bracket-endings",
        "two-starts",
        "start-never-closed",
        "second-ending-alone",
        "second-ending-before-repeat",
        "invisible-bar-line-then-repeat-end",
        "repeats-either-side-of-a-continuation",
        "each-voice-repeats-on-its-own",
        "a-voice-left-open",
    ],
)
def test_repeats_balanced(body: str, balanced: bool) -> None:
    assert abc.check_tune(abc_tune(body))["repeats_balanced"] is balanced


@pytest.mark.parametrize(
    ("key", "normalised"),
    [("D", "D major"), ("Dmaj", "D major"), ("Ador", "A dorian"), ("G clef=bass", "G major"), ("Bn", "Bn")]
    + [("Dmix=c", "D mixolydian"), ("Dmix =c ^g", "D mixolydian"), ("Dmix=x", "Dmix=x"), ("Dmixm", "D mixolydian")],
)
def test_keys_are_normalised_to_tonic_and_mode(key: str, normalised: str) -> None:
    assert abc.check_tune(abc_tune(header=f"X:1\nT:Test\nM:6/8\nL:1/8\nK:{key}"))["key"] == normalised


@pytest.mark.parametrize(
    "body",
    [
        "DFA dAF|" * 10_000,
        "DFA dAF " * 12_500,
        "DFA [dAF|GBd gdB|",
        "DFA {dAF|GBd gdB|",
        'DFA "dAF|GBd gdB|',
        "DFA (dAF|GBd gdB|",
        "(0DFA dAF|",
        "DFA dAF|\nM:0/0\nDFA|",
        "DFA dAF|[L:1/0]DFA|",
        "DFA dAF|\nK:Dxyz\nDFA|",
        "[[[[{{{{((((" * 1000,
    ],
    ids=[
        "10000-bars",
        "100000-character-line",
        "open-chord",
        "open-grace",
        "open-quote",
        "open-slur",
        "tuplet-0",
        "meter-0/0",
        "unit-1/0",
        "unknown-mode",
        "brackets",
    ],
)
def test_bad_input_gets_a_verdict_quickly(body: str) -> None:
    started = time.monotonic()
    checks = abc.check_tune(abc_tune(body))
    assert time.monotonic() - started < 20  # a verdict, not a hang (a generous bound on a loaded machine)
    assert set(checks) >= {"well_formed", "bars_match_meter", "repeats_balanced"}


def test_missing_abc2midi_names_the_debian_package(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not abc.parser_available()
    with pytest.raises(AbcjaxError, match="apt-get install abcmidi") as raised:
        abc.check_tune(abc_tune())
    assert "\n" not in str(raised.value)
    assert not abc.check_tune(abc_tune(""))["well_formed"]  # nothing to parse: no parser needed

"""Promises of abcjax.abc: each check on good and bad tunes, abc2midi's verdict, and its absence."""

import subprocess

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
        (abc_tune(header="X:1\nM:6/8\nL:1/8\nK:D"), False),
        (abc_tune(header="X:1\nT:Test\nM:6/8\nDFA dAF|\nK:D"), False),
    ],
    ids=[
        "all",
        "no-L",
        "extra-fields",
        "no-K",
        "fields-only-no-K",
        "K-before-M",
        "X-not-first",
        "no-T",
        "music-in-header",
    ],
)
def test_headers_need_x_first_t_and_m_and_k_last(tune: str, ok: bool) -> None:
    checks = abc.check_tune(tune)
    assert checks["headers_ok"] is ok
    assert checks["well_formed"] is ok


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("DFA dA^|GBd gdB|", "Malformed note"),
        ("DFA dA]F|GBd gdB|", "Chord already finished"),
        ('DFA "dAF|GBd gdB|', "Guitar chord name not properly closed"),
        ("DFA dAF|GBd {gdB|", "No note found to follow grace notes"),
        ("DFA dAF|GBd gdB*|", "*'s in middle of line"),
    ],
    ids=["lone-accidental", "stray-bracket", "open-quote", "open-grace", "star"],
)
def test_body_abc2midi_rejects_does_not_parse(body: str, message: str) -> None:
    checks = abc.check_tune(abc_tune(body))
    assert checks["headers_ok"] and not checks["parses"] and not checks["well_formed"]
    assert any(message in error for error in checks["parse_errors"])


def test_abc2midi_repeat_complaints_about_valid_abc_do_not_count() -> None:
    # As in 56 bundled tunes: abc2midi says "found [1 or like before |:" for a part without |:.
    checks = abc.check_tune(abc_tune("DFA dAF|GBd gdB:|\nfed cBA|[1 d3 d3:|[2 d3 A3|]"))
    assert checks["parses"] and checks["well_formed"] and checks["repeats_balanced"]


@pytest.mark.parametrize(
    "tune",
    [abc_tune(""), abc_tune("\nDFA dAF|GBd gdB|"), "X:1\nT:Test\nM:6/8\nDFA dAF|"],
    ids=["header-only", "cut-off-by-blank-line", "no-key"],
)
def test_tune_without_body_fails_every_music_check(tune: str) -> None:
    checks = abc.check_tune(tune)
    assert not any(checks[name] for name in ("well_formed", "parses", "bars_match_meter", "repeats_balanced"))
    assert checks["num_bars"] == 0


def test_a_tune_that_stops_abc2midi_fails_alone_in_its_batch() -> None:
    # abc2midi exits on a note length like A/3, dropping the rest of its file.
    tunes = [abc_tune(), abc_tune("DFA dAF|A/3 B|"), abc_tune(), abc_tune("DFA dAF|")]
    checks = abc.check_tunes(tunes)
    assert [tune_checks["parses"] for tune_checks in checks] == [True, False, True, True]
    assert "abc2midi stopped on this tune (exit status 1)" in checks[1]["parse_errors"]


def test_a_batch_is_parsed_in_one_abc2midi_run(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: runs.append(args) or real_run(*args, **kwargs))
    checks = abc.check_tunes([abc_tune(), abc_tune("DFA dA^|")] * 50)
    assert len(runs) == 1
    assert [tune_checks["parses"] for tune_checks in checks] == [True, False] * 50


@pytest.mark.parametrize(
    ("meter", "body", "fits"),
    [
        ("6/8", GOOD_BODY, True),
        ("6/8", "A|DFA dAF|GBd gdB:|\nf|gfe dcB|A3 A2:|", True),
        ("6/8", "DFA dAF|GBd gdBA|AFD EFE|", False),
        ("6/8", "DFA dAFG|GBd gdB|AFD EFE|", False),
        ("6/8", "DFA dAF|GBd gA|1 DFA dAF:|2 DFA d3|]", True),
        ("6/8", "DFA dAF|GBd|AFD EFE|D3 D3|", False),
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
        ("none", "DFA dAF|", False),
    ],
    ids=[
        "repeats-and-endings",
        "pickups-at-repeats",
        "overfull",
        "overfull-first-bar",
        "short-before-ending",
        "short-mid-section",
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
        "no-meter",
    ],
)
def test_full_bars_last_what_m_and_l_say(meter: str, body: str, fits: bool) -> None:
    checks = abc.check_tune(abc_tune(body, header=f"X:1\nT:Test\nM:{meter}\nL:1/8\nK:D"))
    assert checks["bars_match_meter"] is fits


@pytest.mark.parametrize(("body", "fits"), [("A4 B4|c8|d8|", True), ("A4 B4|c4|d8|", False)])
def test_without_l_the_unit_is_a_sixteenth_below_3_4(body: str, fits: bool) -> None:
    assert abc.check_tune(abc_tune(body, header="X:1\nT:Test\nM:2/4\nK:D"))["bars_match_meter"] is fits


def test_inline_meter_change_applies_to_later_bars() -> None:
    body = "DFA dAF|GBd gdB|\nM:9/8\nDFA dAF GFE|[M:6/8]DFA dAF|"
    assert abc.check_tune(abc_tune(body))["bars_match_meter"]


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
    ],
)
def test_repeats_balanced(body: str, balanced: bool) -> None:
    assert abc.check_tune(abc_tune(body))["repeats_balanced"] is balanced


@pytest.mark.parametrize(
    ("key", "normalised"),
    [
        ("D", "D major"),
        ("Dmaj", "D major"),
        ("D Major", "D major"),
        ("D ionian", "D major"),
        ("Em", "E minor"),
        ("E Minor", "E minor"),
        ("Eaeolian", "E minor"),
        ("A Dorian", "A dorian"),
        ("Amix", "A mixolydian"),
        ("F#m", "F# minor"),
        ("Bb", "Bb major"),
        ("G clef=bass", "G major"),
        ("HP", "HP"),
    ],
)
def test_keys_are_normalised_to_tonic_and_mode(key: str, normalised: str) -> None:
    assert abc.check_tune(abc_tune(header=f"X:1\nT:Test\nM:6/8\nL:1/8\nK:{key}"))["key"] == normalised


def test_missing_abc2midi_names_the_debian_package(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not abc.parser_available()
    with pytest.raises(AbcjaxError, match="apt-get install abcmidi") as raised:
        abc.check_tune(abc_tune())
    assert "\n" not in str(raised.value)
    assert not abc.check_tune(abc_tune(""))["well_formed"]  # nothing to parse: no parser needed

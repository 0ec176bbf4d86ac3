"""Promises of abcjax.abc_reader: every bar timed as ABC 2.1 times it, and what cannot be read named."""

from fractions import Fraction as F

import pytest

from abcjax.abc_reader import read_body


def durations(body: str, meter: str = "4/4", unit: str | None = "1/8") -> list[F]:
    """Each bar's length in whole notes, voice by voice."""
    reading = read_body(body.split("\n"), meter, unit, first_line=6)
    assert reading.syntax_errors == []
    return [bar.duration for bar in reading.bars]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # A line break ends a line of the score, not a bar; nor does a continuation.
        ("ABcd\nefga|", [F(1)]),
        ("ABcd \\\nefga|", [F(1)]),
        ("A2 B2|c4|", [F(1, 2), F(1, 2)]),
        # Lengths: A2 A/ A// A3/2 A/4 A3/
        ("A2 A/ A// A3/2 A/4 A3/|", [(2 + F(1, 2) + F(1, 4) + F(3, 2) + F(1, 4) + F(3, 2)) / 8]),
        # Broken rhythm: > dots the first and halves the second; >> double-dots; < the other way round.
        ("A>B c<d A>>B|", [F(6, 8)]),
        ("A2>B2|", [F(1, 2)]),
        # Tuplets: (3 is 3 in the time of 2, (3:2:3 likewise, (2 in compound time is 2 in the time of 3.
        ("(3ABc d2|", [F(4, 8)]),
        ("(3:2:3ABc (3::3def|", [F(4, 8)]),
        ("(3A2B2c2|", [F(4, 8)]),
        ("(5ABcde|", [F(2, 8)]),
        # Chords last as long as their first note, times their own length.
        ("[CEG]2 [C2E]G [CE]/ [C/E/]2|", [F(2 + 2 + 1 + F(1, 2) + 1, 8)]),
        # Grace notes, chord symbols, annotations, decorations and ties take no time.
        ('{g}A {/ag}B "Am"c "^text"d !trill!e ~f .g Ta uA vB HC- C|', [F(12, 8)]),
        ("+trill+A2 !fermata!B2 A-A (AB)|", [F(8, 8)]),
        # Rests: z and x take time, Z4 stands for four bars, y is a spacer.
        ("z2 x2 A y B2|Z4|", [F(7, 8), F(4)]),
        # Bar lines of every kind, endings, repeats.
        ("|:AB cd:|[1 ef ga:|[2 bc d2|]", [F(4, 8), F(4, 8), F(4, 8)]),
        ("AB||cd|]ef[|ga::ab:|:cd|1ef:|2ga||", [F(2, 8)] * 8),
        ("AB|[|]cd", [F(2, 8), F(2, 8)]),
        # Meter and unit changes: body lines and inline fields.
        ("ABcd|\nL:1/16\nABcd|[L:1/4]AB|", [F(4, 8), F(4, 16), F(2, 4)]),
        ("[M:3/4]ABc|", [F(3, 8)]),
        # Comments go, \% is a percent sign in text.
        ('AB % cd\ncd|"50\\%"ef|', [F(4, 8), F(2, 8)]),
        # Overlaid voices in a bar (&) last as long as the longest.
        ("AB cd & z4|", [F(4, 8)]),
    ],
    ids=[
        "line-break",
        "continuation",
        "bars",
        "lengths",
        "broken-rhythm",
        "broken-rhythm-unequal",
        "triplet",
        "triplet-p-q-r",
        "triplet-of-quarters",
        "quintuplet-simple",
        "chords",
        "no-time",
        "old-decorations-ties-slurs",
        "rests",
        "repeats-and-endings",
        "every-bar-line",
        "invisible-bar-line",
        "unit-changes",
        "inline-meter",
        "comments",
        "overlay",
    ],
)
def test_bars_last_what_abc_2_1_says(body: str, expected: list[F]) -> None:
    assert durations(body) == expected


def test_compound_meter_tuplets_take_three() -> None:
    assert durations("(5ABcde fga|", meter="6/8") == [F(6, 8)]
    assert durations("(2AB c|", meter="6/8") == [F(4, 8)]


def test_multi_bar_rest_counts_bars() -> None:
    reading = read_body(["Z4|ABcd efga|"], "4/4", "1/8", first_line=6)
    assert [(bar.rest_bars, bar.fills()) for bar in reading.bars] == [(4, True), (0, True)]


def test_voices_are_timed_apart() -> None:
    reading = read_body(["V:1", "ABcd|efga|", "V:2", "A4|B4|", "[V:1]abc'd'|"], "4/4", "1/8", first_line=6)
    assert {name: [bar.duration for bar in bars] for name, bars in reading.voices.items()} == {
        "1": [F(1, 2), F(1, 2), F(1, 2)],
        "2": [F(1, 2), F(1, 2)],
    }


def test_bars_know_their_bar_lines_and_lines() -> None:
    reading = read_body(["A|:BA:|", "|1 AB:|2 BA|]"], "2/4", "1/8", first_line=6)
    bars = reading.bars
    assert [bar.line for bar in bars] == [6, 6, 7, 7]
    assert bars[0].opens is None and bars[0].closes.repeat_start
    assert bars[1].closes.repeat_end and bars[1].closes.section
    # `:|` at a line's end and `|1` at the next line's start meet with nothing between: one bar line.
    assert bars[2].opens.ending == "1" and bars[2].opens.repeat_end
    assert bars[3].opens.ending == "2" and bars[3].closes is not None and bars[3].closes.text == "|]"


def test_default_unit_follows_the_header_meter() -> None:
    assert durations("A4 B4|", meter="2/4", unit=None) == [F(1, 2)]
    assert durations("A4 B4|", meter="6/8", unit=None) == [F(1)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('AB "Am cd|', 'unclosed quote "'),
        ("AB {ga cd|", "unclosed grace notes {"),
        ("AB [ceg cd|", "unclosed chord or field ["),
        ("AB ^| cd|", "unexpected '^'"),
        ("AB , cd|", "unexpected ','"),
        ("AB cd*|", "reserved character '*'"),
        ("A0 B|", "has no length"),
        ("A/0 B|", "has no length"),
        ("A3//4 B|", "has no length"),
        ("(0ABc|", "tuplet (0"),
        ("(1A|", "tuplet (1"),
        ("(3(3ABc|", "starts inside another"),
        ("AB>|c", "runs into the bar line"),
        ("[]AB|", "has no note"),
        ("{}AB|", "have no note"),
        ("[CzE]AB|", "unexpected 'z' in chord"),
        ("AB|\nM:0/0\nAB|", "unreadable meter M:0/0"),
        ("AB|[L:1/0]AB|", "unreadable unit length L:1/0"),
        ("AB|\nK:Bn\nAB|", "unknown key K:Bn"),
        ("(3AB|", "tuplet left unfinished"),
    ],
)
def test_what_cannot_be_read_is_a_syntax_error_with_its_line(body: str, message: str) -> None:
    errors = read_body(body.split("\n"), "4/4", "1/8", first_line=6).syntax_errors
    assert len(errors) >= 1 and message in errors[0] and errors[0].startswith("line ")


def test_undefined_decoration_letters_are_warnings_and_u_defines_them() -> None:
    reading = read_body(["kA2 wB2|"], "4/4", "1/8", first_line=6)
    assert reading.syntax_errors == [] and len(reading.syntax_warnings) == 2
    assert read_body(["kA2 B2|"], "4/4", "1/8", first_line=6, user_decorations="k").syntax_warnings == []


def test_abc2midi_is_given_the_music_without_what_it_misreads() -> None:
    reading = read_body(["uA>.B !trill!c H[|]|]", "M:3/4"], "4/4", "1/8", first_line=6)
    assert reading.for_abc2midi == ["A>B c |]", "M:3/4"]

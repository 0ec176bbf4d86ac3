"""Promises of abcjax.abc_notation: ABC 2.1's meters, unit lengths, note lengths, tuplets and keys, read exactly."""

from fractions import Fraction

import pytest

from abcjax import abc_notation as notation


@pytest.mark.parametrize(
    ("value", "bar", "compound"),
    [
        ("6/8", Fraction(3, 4), True),
        ("9/8", Fraction(9, 8), True),
        ("12/8", Fraction(3, 2), True),
        ("3/8", Fraction(3, 8), False),
        ("3/4", Fraction(3, 4), False),
        ("C", Fraction(1), False),
        ("C|", Fraction(1), False),
        ("2+3/8", Fraction(5, 8), False),
        ("(2+2+3)/8", Fraction(7, 8), False),
        ("9/8 % Aird bars it in 6/8", Fraction(9, 8), True),
        (" 4/2 ", Fraction(2), False),
    ],
)
def test_meters_give_the_bar_length_in_whole_notes(value: str, bar: Fraction, compound: bool) -> None:
    assert notation.parse_meter(value) == notation.Meter(bar, compound)


@pytest.mark.parametrize("value", ["none", "None", "", None])
def test_none_and_an_absent_meter_are_free_meter(value) -> None:
    assert notation.parse_meter(value).free


@pytest.mark.parametrize("value", ["0/0", "3/0", "FREI4/4", "4/4 3/4", "C||", "3/4]", "6/8 EDC DA,B,|"])
def test_unreadable_meters_are_none(value: str) -> None:
    assert notation.parse_meter(value) is None


@pytest.mark.parametrize(("value", "unit"), [("1/8", Fraction(1, 8)), ("1/16", Fraction(1, 16)), ("1", Fraction(1))])
def test_unit_lengths(value: str, unit: Fraction) -> None:
    assert notation.parse_unit(value) == unit


@pytest.mark.parametrize("value", ["1/0", "0/8", "x", "1/8/2", ""])
def test_unreadable_unit_lengths_are_none(value: str) -> None:
    assert notation.parse_unit(value) is None


@pytest.mark.parametrize(
    ("meter", "unit"),
    [("2/4", Fraction(1, 16)), ("3/4", Fraction(1, 8)), ("6/8", Fraction(1, 8)), ("none", Fraction(1, 8))],
)
def test_without_l_the_unit_is_a_sixteenth_below_three_quarters(meter: str, unit: Fraction) -> None:
    assert notation.default_unit(notation.parse_meter(meter)) == unit


@pytest.mark.parametrize(
    ("suffix", "length"),
    [
        ("", Fraction(1)),
        ("2", Fraction(2)),
        ("/", Fraction(1, 2)),
        ("//", Fraction(1, 4)),
        ("///", Fraction(1, 8)),
        ("3/2", Fraction(3, 2)),
        ("/4", Fraction(1, 4)),
        ("3/", Fraction(3, 2)),
        ("12", Fraction(12)),
    ],
)
def test_note_length_suffixes(suffix: str, length: Fraction) -> None:
    assert notation.parse_length(suffix) == length


@pytest.mark.parametrize("suffix", ["0", "/0", "3//4", "0/2"])
def test_lengths_of_nothing_are_none(suffix: str) -> None:
    assert notation.parse_length(suffix) is None


@pytest.mark.parametrize(
    ("p", "meter", "q"),
    [
        (2, "6/8", 3),
        (3, "6/8", 2),
        (4, "2/4", 3),
        (6, "2/4", 2),
        (8, "2/4", 3),
        (5, "6/8", 3),
        (5, "2/4", 2),
        (7, "9/8", 3),
    ],
)
def test_tuplets_default_q_as_abc_2_1_says(p: int, meter: str, q: int) -> None:
    assert notation.tuplet_q(p, notation.parse_meter(meter)) == q


@pytest.mark.parametrize(
    ("value", "key"),
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
        ("A Mixolydian", "A mixolydian"),
        ("F#m", "F# minor"),
        ("Bb", "Bb major"),
        ("Bbm", "Bb minor"),
        ("G clef=bass", "G major"),
        ("Dm clef=bass", "D minor"),
        ("C treble", "C major"),
        ("D exp ^f _b", "D major"),
        ("Gmajor % a comment", "G major"),
        ("HP", "HP"),
        ("Hp", "Hp"),
        ("none", "none"),
        ("Dmixm", "D mixolydian"),  # ABC 2.1 reads a mode's first three letters (O'Neill's "Kelly the Rake")
        ("D minorx", "D minor"),
        ("Dmix=c", "D mixolydian"),  # accidentals against the mode, as abc2midi reads them (Ryan's)
    ],
)
def test_keys_read_as_tonic_and_mode(value: str, key: str) -> None:
    assert str(notation.parse_key(value)) == key
    assert notation.normalise_key(value) == key


@pytest.mark.parametrize("value", ["Bn", "H", "Es", "Dmi", "Dmix=x", "D mx", "X"])
def test_unknown_keys_are_none_and_counted_as_written(value: str) -> None:
    assert notation.parse_key(value) is None
    assert notation.normalise_key(value) == value

"""The values of ABC 2.1's fields and note lengths, read exactly: meters, unit lengths, keys, lengths.

One reading for every part of abcjax that needs to know how long a note or a bar is (the judge of
abcjax.abc and the sampler that writes only full bars), so the two can never disagree. Durations
are exact fractions of a whole note: a triplet's thirds add up to a whole beat, never to 0.9999.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from fractions import Fraction

# A meter is (bar length, what M: says); None as the bar length is free meter (M:none): no bar check.
FREE_METER = "none"

_METER = re.compile(r"(C\|?)|\(?(\d+(?:\+\d+)*)\)?/(\d+)")
_UNIT = re.compile(r"(\d+)(?:/(\d+))?")
_LENGTH = re.compile(r"(\d*)(/*)(\d*)")
_TONIC = re.compile(r"([A-G])([#b]?)")
MODES = {
    "": "major",
    "m": "minor",
    "maj": "major",
    "ion": "major",
    "min": "minor",
    "aeo": "minor",
    "mix": "mixolydian",
    "dor": "dorian",
    "phr": "phrygian",
    "lyd": "lydian",
    "loc": "locrian",
}
_MODE_NAMES = ("major", "minor", "ionian", "aeolian", "mixolydian", "dorian", "phrygian", "lydian", "locrian")
_ACCIDENTAL = r"[_^=]{1,2}[A-Ga-g]"  # an explicit accidental of K:, e.g. ^f
# What may follow the tonic and mode in K: (ABC 2.1 section 3.1.14): explicit accidentals, clefs and
# their settings, and words a clef is named by.
_KEY_EXTRA = re.compile(
    rf"(?:{_ACCIDENTAL}|exp|(?:clef|middle|transpose|octave|stafflines|staffscale|m)=\S+"
    r"|treble|bass|alto|tenor|perc|none|[+-]8)$",
    re.IGNORECASE,
)
# Keys with no tonic: none (no key signature) and the Highland bagpipe's HP and Hp.
_TONICLESS_KEYS = ("none", "HP", "Hp")

# ABC 2.1's default q of a tuplet (p:q:r for each p; None: 3 in compound meters, else 2).
TUPLET_Q = {2: 3, 3: 2, 4: 3, 5: None, 6: 2, 7: None, 8: 3, 9: None}


@dataclasses.dataclass(frozen=True)
class Meter:
    """M: as read: the bar's length in whole notes (None for free meter) and whether it is compound."""

    bar: Fraction | None
    compound: bool = False

    @property
    def free(self) -> bool:
        return self.bar is None


def parse_meter(value: str | None) -> Meter | None:
    """M: C (4/4), C| (2/2), N/D, N+N+.../D (2+3/8 is 5/8) or none; None when unreadable.

    An absent M: is free meter, as ABC 2.1 reads it. Compound meters (6/8, 9/8, 12/8: a top number
    divisible by 3 and above 3) set the default q of tuplets such as (5.
    """
    text = _clean(value)
    if text.lower() in (FREE_METER, ""):
        return Meter(None)
    match = _METER.fullmatch(text.replace(" ", ""))
    if not match:
        return None
    if match[1]:
        return Meter(Fraction(1))  # C is 4/4 and C| is 2/2: a whole note either way
    numerator = sum(int(part) for part in match[2].split("+"))
    denominator = int(match[3])
    if numerator == 0 or denominator == 0:
        return None
    return Meter(Fraction(numerator, denominator), numerator % 3 == 0 and numerator > 3)


def parse_unit(value: str | None) -> Fraction | None:
    """L: as a length in whole notes (1/8, 1/16, 1); None when unreadable or zero."""
    match = _UNIT.fullmatch(_clean(value).replace(" ", ""))
    if not match or int(match[1]) == 0 or match[2] == "0":
        return None
    return Fraction(int(match[1]), int(match[2] or 1))


def default_unit(meter: Meter | None) -> Fraction:
    """ABC 2.1's unit without L:: a sixteenth when the header's meter is below 3/4, else an eighth."""
    if meter is not None and meter.bar is not None and meter.bar < Fraction(3, 4):
        return Fraction(1, 16)
    return Fraction(1, 8)


@functools.cache
def parse_length(text: str) -> Fraction | None:
    """A note length suffix in units of L:: "" 1, "2" 2, "/" 1/2, "//" 1/4, "3/2" 3/2, "/4" 1/4.

    None when it has no length (a zero numerator or denominator), which no reader can play.
    """
    match = _LENGTH.fullmatch(text)
    if match is None:
        return None
    digits, slashes, denominator = match.groups()
    if denominator and len(slashes) != 1:
        return None  # "3//4" has no meaning
    top = int(digits) if digits else 1
    bottom = int(denominator) if denominator else 2 ** len(slashes)
    if top == 0 or bottom == 0:
        return None
    return Fraction(top, bottom)


def tuplet_q(p: int, meter: Meter | None) -> int:
    """The default q of a (p tuplet: the time of q notes that p notes take."""
    q = TUPLET_Q.get(p)
    if q is None:
        return 3 if meter is not None and meter.compound else 2
    return q


@dataclasses.dataclass(frozen=True)
class Key:
    """K: as read: tonic ("F#", or "" for none and the bagpipe keys) and mode ("minor", ...)."""

    tonic: str
    mode: str

    def __str__(self) -> str:
        return f"{self.tonic} {self.mode}" if self.tonic else self.mode


def parse_key(value: str | None) -> Key | None:
    """K: as tonic and mode; None for an unknown tonic, mode or trailing word (K:Bn, K:H).

    "D", "Dmaj", "D Major" and "D ionian" are all D major. Explicit accidentals (K:D exp ^g) and
    clef settings (K:G clef=bass) may follow.
    """
    text = _clean(value)
    match = _TONIC.match(text)
    if match is None:
        words = text.split() or ["none"]
        tonic, mode, extras = "", words[0], words[1:]
        if mode not in _TONICLESS_KEYS:
            return None
    else:
        tonic = match[1] + match[2]
        rest = text[match.end() :]
        words = rest.split()
        glued = re.fullmatch(rf"([A-Za-z]+)((?:{_ACCIDENTAL})+)", words[0]) if words else None
        if glued and _is_mode_word(glued[1]):  # K:Dmix=c: accidentals against the mode, as abc2midi reads it
            words[:1] = [glued[1], *re.findall(_ACCIDENTAL, glued[2])]
        attached = rest[:1].isalpha()  # Dmix, Em: the mode written against the tonic
        first = words[0] if words and (attached or not _KEY_EXTRA.match(words[0])) else ""
        if first and not _is_mode_word(first):
            return None
        mode = MODES[first[:3].lower()] if first else "major"
        extras = words[1:] if first else words
    if not all(_KEY_EXTRA.match(word) for word in extras):
        return None
    return Key(tonic, mode)


def _is_mode_word(word: str) -> bool:
    """A mode is written as m, or by a word whose first three letters are its name's (Mix, Mixolydian):
    ABC 2.1 reads only those three, so abc2midi and music21 read K:Dmixm as D mixolydian."""
    lower = word.lower()
    if lower == "m":
        return True
    return len(lower) >= 3 and lower.isalpha() and any(name.startswith(lower[:3]) for name in _MODE_NAMES)


def normalise_key(value: str) -> str:
    """K: as "tonic mode" ("D major"), or as written when unreadable, for counting keys."""
    key = parse_key(value)
    return value.strip() if key is None else str(key)


def _clean(value: str | None) -> str:
    """A field value without its comment and surrounding spaces."""
    return re.sub(r"(?<!\\)%.*", "", value or "").strip()

"""A tune body read the way ABC 2.1 reads it: its symbols, its bars timed exactly, its bar lines.

Bars run from bar line to bar line, across line breaks and `\\` continuations (a line break ends a
line of the score, not a bar). Durations are exact fractions of a whole note: note lengths, broken
rhythm, tuplets, chords (their first note), grace notes (no time), multi-bar rests, and meter and
unit changes in body lines or inline fields all count. What cannot be read (a stray character, an
unclosed chord, grace group or quote, a length of zero) is a syntax error with its line.

The reader also writes the tune back out for abc2midi without the decorations and invisible bar
lines that abc2midi misreads (abcjax.abc2midi says which and why), so abc2midi judges the music.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import re
from fractions import Fraction

from abcjax import abc_notation as notation

# Ticks in a whole note: every length ABC players time (halvings down to 1/65536, tuplets of 2 to 9,
# broken rhythm) is a whole number of them.
TICKS = 2**16 * 3**4 * 5**2 * 7**2
_FIELD_LINE = re.compile(r"[A-Za-z+]:")
_LENGTH = r"\d*/*\d*"
_NOTE = rf"(?:\^\^|\^|__|_|=)?[A-Ga-g][,']*{_LENGTH}"
_TOKEN = re.compile(
    rf"""
    (?P<space>[ \t`]+)                                          # spacing and beaming back-quotes
    | "(?P<text>[^"]*)"                                         # chord symbol or annotation
    | !(?P<decoration>[^!\s|]+)! | \+(?P<plus>[^+\s|]+)\+       # !trill!, +trill+ (ABC 2.0)
    | (?P<bang>!)                                               # line break of ABC 1.6
    | \[(?P<field>[A-Za-z]):(?P<value>[^\]]*)\]                 # inline field: [M:3/4]
    | (?P<bar>\[\|\](?=:+\|)|\.?:*(?:\[\|\]|\[\||\|\]|\|)+:*|::+)(?P<bar_ending>\d+(?:[-,]\d+)*)?  # :|2; [|]:|
    | \[(?P<ending>\d+(?:[-,]\d+)*|(?="))                       # [1, [2, [1,3, ["Last time"
    | \((?P<p>\d+)(?::(?P<q>\d*)(?::(?P<r>\d*))?)?              # tuplet (p:q:r
    | (?P<slur>\.?\(|\))
    | \{{(?P<grace>[^}}]*)\}}                                   # grace notes
    | \[(?P<chord>[^\]|]*)\](?P<chord_length>{_LENGTH})(?P<chord_tie>\.?-)?
    | (?P<note>{_NOTE})(?P<tie>\.?-)?
    | (?P<rest>[zx])(?P<rest_length>{_LENGTH})
    | (?P<bar_rest>[ZX])(?P<count>\d*)                          # Z4: four bars' rest
    | (?P<spacer>y\d*)
    | (?P<broken>>{{1,3}}|<{{1,3}})
    | (?P<tie_alone>\.?-)
    | (?P<shorthand>[.~H-Wh-w])                                 # decorations: ~ roll, T trill, u up-bow
    | (?P<overlay>&)
    | (?P<line_break>\$)
    | (?P<other>.)
    """,
    re.VERBOSE,
)
_CHORD_PART = re.compile(rf'(?P<note>{_NOTE})\.?-?|[ \t]+|"[^"]*"|![^!\s]+!|[.~HLMOPSTuv]|(?P<other>.)')
_GRACE_PART = re.compile(rf"(?P<note>{_NOTE})|[ \t]+|\[[^\]]*\]|![^!\s]+!|[.~H-Wh-w]|(?P<other>.)")
# ABC 2.1's predefined decoration letters; the other letters of H-W and h-w are for U: to define.
_PREDEFINED_DECORATIONS = ".~HLMOPSTuv"
_NOTE_LENGTH = re.compile(rf"(?:\^\^|\^|__|_|=)?[A-Ga-g][,']*({_LENGTH})")
# The alternative of _TOKEN that each group belongs to: a match's last group may be a later part of it.
_KIND = {name: name for name in _TOKEN.groupindex} | {
    "value": "field",
    "bar_ending": "bar",
    "q": "p",
    "r": "p",
    "chord_length": "chord",
    "chord_tie": "chord",
    "tie": "note",
    "rest_length": "rest",
    "count": "bar_rest",
}
# Written out for abc2midi: everything but these, which it misreads (see abcjax.abc2midi).
_NOT_FOR_ABC2MIDI = ("space", "decoration", "plus", "bang", "shorthand", "line_break")


@dataclasses.dataclass(frozen=True)
class BarLine:
    """A bar line as it shapes the music: does a repeat end or start here, does a section edge or
    an ending start here (anything but a plain `|`)."""

    text: str
    repeat_end: bool = False
    repeat_start: bool = False
    section: bool = False
    ending: str = ""  # the ending that starts right after it: "1", "2", "1,3"

    def merged(self, later: BarLine) -> BarLine:
        """Two bar lines with nothing between them (`|` at a line's end, `|:` at the next's start)."""
        return BarLine(
            self.text + later.text,
            self.repeat_end or later.repeat_end,
            self.repeat_start or later.repeat_start,
            self.section or later.section,
            self.ending or later.ending,
        )


@dataclasses.dataclass
class Bar:
    """One bar as written: its symbols (what copy detection compares), how long it lasts, what the
    meter in force asks, and the bar lines either side (None at the tune's start or end)."""

    notes: str
    duration: Fraction
    expected: Fraction | None  # the meter's bar length; None in free meter
    rest_bars: int  # bars a multi-bar rest (Z4) stands for; 0 without one
    line: int  # the tune's line the bar starts on, from 1 at X:
    opens: BarLine | None = None
    closes: BarLine | None = None

    def fills(self) -> bool:
        return self.expected is None or self.duration == self.expected * max(self.rest_bars, 1)


@dataclasses.dataclass
class Reading:
    """What reading a body found: each voice's bars and its bar lines in order, syntax errors and
    warnings, the number of notes and rests, and the body as abc2midi is given it."""

    voices: dict[str, list[Bar]]
    bar_lines: dict[str, list[BarLine]]
    syntax_errors: list[str]
    syntax_warnings: list[str]
    num_notes: int
    for_abc2midi: list[str]
    meter_unreadable: bool  # a body M: field no reader understands: its bars cannot be checked

    @property
    def bars(self) -> list[Bar]:
        return [bar for bars in self.voices.values() for bar in bars]


class _Voice:
    """One voice's reading state: meter, unit, the bar being written, tuplet and broken rhythm.

    Durations are counted in integer ticks (TICKS a whole note), exact for every length ABC
    players time and far faster than fractions.
    """

    def __init__(self, meter: notation.Meter | None, unit: Fraction) -> None:
        self.meter, self.unit_ticks = meter, _ticks(unit)
        self.bars: list[Bar] = []
        self.bar_lines: list[BarLine] = []
        self.opens: BarLine | None = None
        self.tuplet, self.tuplet_left = (1, 1), 0  # (q, p): the time of q notes for p; notes it applies to
        self.broken = (1, 1)  # what a broken rhythm mark leaves for the next note, as (numerator, denominator)
        self.start_bar(1)

    def start_bar(self, line: int) -> None:
        self.notes: list[str] = []
        self.duration = 0
        self.overlaid: list[int] = []  # the durations of the bar's parts before each &
        self.rest_bars, self.line, self.last = 0, line, 0  # last: the last note's duration

    def expected(self) -> Fraction | None:
        return self.meter.bar if self.meter is not None else None

    def close(self, closes: BarLine | None) -> None:
        """Ends the bar being written (one with nothing in it is no bar)."""
        if self.duration or self.overlaid or self.rest_bars:
            duration = Fraction(max([*self.overlaid, self.duration]), TICKS)
            self.bars.append(
                Bar("".join(self.notes), duration, self.expected(), self.rest_bars, self.line, self.opens, closes)
            )
            self.opens = closes
        elif closes is not None:
            if self.bars and self.bars[-1].closes is self.opens:
                self.bars[-1].closes = self.bars[-1].closes.merged(closes)
            self.opens = closes if self.opens is None else self.opens.merged(closes)


class _Reader:
    def __init__(self, meter: str | None, unit: str | None, user_decorations: str) -> None:
        header_meter = notation.parse_meter(meter)
        self.default_unit = notation.parse_unit(unit) or notation.default_unit(header_meter)
        self.header_meter = header_meter
        self.voices: dict[str, _Voice] = {}
        self.voice = self.switch_voice("")
        self.user_decorations = user_decorations
        self.errors: list[str] = []
        self.warnings: list[str] = []  # what a reader ignores: an undefined decoration letter
        self.num_notes = 0
        self.line = 0
        self.meter_unreadable = False

    def switch_voice(self, name: str) -> _Voice:
        if name not in self.voices:
            self.voices[name] = _Voice(self.header_meter, self.default_unit)
        self.voice = self.voices[name]
        return self.voice

    def error(self, message: str) -> None:
        self.errors.append(f"line {self.line}: {message}")

    def field(self, letter: str, value: str) -> None:
        """A field in the body (a line of its own or inline): meter, unit, key and voice change."""
        voice = self.voice
        if letter == "M":
            meter = notation.parse_meter(value)
            if meter is None:
                self.error(f"unreadable meter M:{value}")
                self.meter_unreadable = True
            voice.meter = meter
        elif letter == "L":
            unit = notation.parse_unit(value)
            if unit is None or not _ticks(unit):
                self.error(f"unreadable unit length L:{value}")
                unit = None
            voice.unit_ticks = _ticks(unit) if unit else voice.unit_ticks
        elif letter == "K" and notation.parse_key(value) is None:
            self.error(f"unknown key K:{value}")
        elif letter == "V":
            self.switch_voice(value.split()[0] if value.split() else "")

    def take(self, token: re.Match) -> str:
        """Follows one _TOKEN match of a music line; returns its kind (the alternative it matched)."""
        kind = _KIND[token.lastgroup]
        voice = self.voice
        if kind == "note":
            self.note(token[0], (_length_text(token["note"]),))
        elif kind == "bar":
            self.bar_line(token["bar"], token["bar_ending"] or "")
        elif kind == "rest":
            self.note(token[0], (token["rest_length"],))
        elif kind == "chord":
            self.chord(token)
        elif kind == "broken":
            self.broken_rhythm(token["broken"])
        elif kind == "p":
            self.tuplet(token)
        elif kind == "grace":
            self.grace(token["grace"])
        elif kind == "field":
            self.field(token["field"], token["value"])
        elif kind == "ending":
            self.bar_line("[", token["ending"] or '"')
        elif kind == "bar_rest":
            count = int(token["count"] or 1)
            voice.rest_bars += count
            voice.duration += _ticks(voice.expected() or Fraction(0)) * count
            self.wrote(token[0])
        elif kind == "overlay":
            voice.overlaid.append(voice.duration)
            voice.duration = 0
        elif kind == "shorthand" and token[0] not in _PREDEFINED_DECORATIONS + self.user_decorations:
            self.warnings.append(f"line {self.line}: decoration symbol {token[0]} is not defined by a U: field")
        elif kind == "other":
            self.other(token["other"])
        return kind

    def other(self, char: str) -> None:
        if char == '"':
            self.error('unclosed quote "')
        elif char == "{":
            self.error("unclosed grace notes {")
        elif char == "[":
            self.error("unclosed chord or field [")
        elif char in "#*;?@":
            self.error(f"reserved character {char!r} in the music")
        else:
            self.error(f"unexpected {char!r}")

    def note(self, text: str, lengths: tuple[str, ...]) -> None:
        """A note, rest or chord of the given length suffixes (a chord's: its first note's and its own)."""
        voice = self.voice
        tuplet = voice.tuplet if voice.tuplet_left else (1, 1)
        voice.tuplet_left = max(voice.tuplet_left - 1, 0)
        duration = _note_ticks(voice.unit_ticks, lengths, voice.broken, tuplet)
        if isinstance(duration, str):
            self.error(f"note {text} {duration}")
            duration = 0
        voice.broken, voice.last = (1, 1), duration
        voice.duration += duration
        self.wrote(text)

    def wrote(self, text: str) -> None:
        """A note, rest or chord joins the bar, which starts on the line of its first one."""
        voice = self.voice
        if not voice.notes:
            voice.line = self.line
        voice.notes.append(text)
        self.num_notes += 1

    def chord(self, token: re.Match) -> None:
        """[CEG]2: as long as its first note, times the chord's own length."""
        first = None
        for part in _CHORD_PART.finditer(token["chord"]):
            if part["other"]:
                self.error(f"unexpected {part['other']!r} in chord [{token['chord']}]")
            elif part["note"] and first is None:
                first = _length_text(part["note"])
        if first is None:
            self.error(f"chord [{token['chord']}] has no note")
            first = ""
        self.note(token[0], (first, token["chord_length"]))

    def grace(self, text: str) -> None:
        notes = 0
        for part in _GRACE_PART.finditer(text.removeprefix("/")):
            if part["other"]:
                self.error(f"unexpected {part['other']!r} in grace notes {{{text}}}")
            notes += bool(part["note"])
        if not notes:
            self.error(f"grace notes {{{text}}} have no note")

    def tuplet(self, token: re.Match) -> None:
        """(p:q:r: the next r notes (default p) take the time of q (default ABC 2.1's for p)."""
        voice = self.voice
        p = int(token["p"])
        q = int(token["q"]) if token["q"] else (notation.tuplet_q(p, voice.meter) if 2 <= p <= 9 else 0)
        r = int(token["r"]) if token["r"] else p
        if not (2 <= p <= 9) or q == 0 or r == 0:
            self.error(f"tuplet {token[0]} is not one ABC 2.1 knows (p from 2 to 9)")
            return
        if voice.tuplet_left:
            self.error(f"tuplet {token[0]} starts inside another")
        voice.tuplet, voice.tuplet_left = (q, p), r
        voice.notes.append(token[0])

    def broken_rhythm(self, marks: str) -> None:
        """A>B: A dotted, B halved (>> double-dotted, quartered); A<B the other way round."""
        voice = self.voice
        if not voice.last:
            self.error(f"broken rhythm {marks} has no note before it in its bar")
            return
        parts = 2 ** len(marks)  # A>B: A takes 3/2 and B 1/2; A>>B: 7/4 and 1/4
        change = voice.last * (parts - 1)
        if change % parts:
            self.error(f"broken rhythm {marks} divides a note too finely to time exactly")
            return
        voice.duration += change // parts if marks[0] == ">" else -change // parts
        voice.broken = (1, parts) if marks[0] == ">" else (2 * parts - 1, parts)
        voice.notes.append(marks)

    def bar_line(self, text: str, ending: str) -> None:
        """Closes the bar being written (an empty one merges its bar lines with the last bar's)."""
        voice = self.voice
        line = BarLine(
            text + ending,
            repeat_end=text.startswith(":") or text.startswith(".:"),
            repeat_start=text.endswith(":"),
            section=text.strip(".") not in ("|", "[|]") or bool(ending),
            ending=ending,
        )
        voice.bar_lines.append(line)
        if voice.broken != (1, 1):
            self.error(f"broken rhythm runs into the bar line {text}")
            voice.broken = (1, 1)
        voice.close(line)
        voice.start_bar(self.line)

    def finish(self) -> None:
        """The end of the tune closes each voice's last bar (one may end without a bar line)."""
        for voice in self.voices.values():
            voice.close(None)


def read_body(
    body: list[str], meter: str | None, unit: str | None, first_line: int, user_decorations: str = ""
) -> Reading:
    """Reads a tune body (its lines after K:, comment lines already gone) under the header's M: and L:.

    first_line numbers the body's first line in messages (the tune's line after K:, from 1 at X:).
    user_decorations are the letters U: fields define as decorations.
    """
    reader = _Reader(meter, unit, user_decorations)
    written: list[str] = []
    continued: list[tuple[int, str]] = []  # music lines ending in `\\`, read with the line that ends them
    for number, raw in enumerate(body, start=first_line):
        line = _without_comment(raw)
        if _FIELD_LINE.match(line):
            written += _read_music(reader, continued)
            reader.line = number
            if line[0] != "+":
                reader.field(line[0], line[2:].strip())
            written.append(raw)
            continue
        if line.rstrip().endswith("\\"):  # a continuation: the music goes on on the next line
            continued.append((number, line.rstrip()[:-1]))
            continue
        continued.append((number, line))
        written += _read_music(reader, continued)
    written += _read_music(reader, continued)
    reader.line = first_line + len(body) - 1
    reader.finish()
    for voice in reader.voices.values():
        if voice.tuplet_left:
            reader.errors.append(f"line {reader.line}: tuplet left unfinished at the end")
    voices = {name: voice.bars for name, voice in reader.voices.items() if voice.bars}
    bar_lines = {name: voice.bar_lines for name, voice in reader.voices.items() if voice.bar_lines}
    return Reading(
        voices, bar_lines, reader.errors, reader.warnings, reader.num_notes, written, reader.meter_unreadable
    )


def _read_music(reader: _Reader, lines: list[tuple[int, str]]) -> list[str]:
    """Reads music lines joined by `\\` continuations as one (ABC 2.1 section 6.1.1), so that a bar line
    or ending split by one (`|\\` then `1 ...`) is read whole; empties `lines`. Returns the lines as
    written out for abc2midi, which does not join them: `%` for each continued line, then the whole."""
    if not lines:
        return []
    starts = list(itertools.accumulate((len(text) for _, text in lines[:-1]), initial=0))
    kept = []
    for token in _TOKEN.finditer("".join(text for _, text in lines)):
        reader.line = lines[bisect.bisect_right(starts, token.start()) - 1][0]
        kind = reader.take(token)
        if kind == "space":
            kept.append(" ")
        elif kind == "bar" and token["bar_ending"] and token["bar"] not in ("|", ":|"):
            kept.append(f"{token['bar'].replace('[|]', '') or '|'}[{token['bar_ending']}")  # ||1: abc2midi reads ||[1
        elif kind not in _NOT_FOR_ABC2MIDI:
            kept.append(token[0].replace("[|]", "") or "|")
    written = ["%"] * (len(lines) - 1) + ["".join(kept)]
    lines.clear()
    return written


@functools.cache
def _note_ticks(unit: int, lengths: tuple[str, ...], broken: tuple[int, int], tuplet: tuple[int, int]) -> int | str:
    """A note's duration in ticks, or what is wrong with its length; cached, as tunes repeat a few lengths."""
    length = Fraction(unit * broken[0] * tuplet[0], broken[1] * tuplet[1])
    for suffix in lengths:
        part = notation.parse_length(suffix)
        if part is None:
            return "has no length (zero)"
        length *= part
    if length.denominator != 1:
        return "is divided too finely to time exactly (a length no ABC player times)"
    return int(length)


@functools.cache
def _ticks(length: Fraction) -> int:
    """A unit or bar length in ticks (0 for one that is no whole number of ticks, such as L:1/11)."""
    ticks = length * TICKS
    return int(ticks) if ticks.denominator == 1 else 0


@functools.cache
def _length_text(note: str) -> str:
    """The length suffix of a note such as ^f'3/2."""
    return _NOTE_LENGTH.fullmatch(note)[1]


def _without_comment(line: str) -> str:
    """A line without its `%` comment (`\\%` is a percent sign)."""
    return re.sub(r"(?<!\\)%.*", "", line)

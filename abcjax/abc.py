"""ABC text read closely enough to judge a tune: its header fields, its bars timed against its meter, its
repeat signs, and whether abc2midi, the reference parser, reads it without an error.

Evaluation runs these checks on generated tunes and on the training corpus alike, so both are judged by
one reading. The bars' notes come out too, stripped of spacing and bar-line style, because a copied
phrase is the same notes however it is written out.
"""

import bisect
import dataclasses
import functools
import pathlib
import re
import shutil
import subprocess
import tempfile

from abcjax.errors import AbcjaxError

PARSER = "abc2midi"
PARSER_MISSING = f"{PARSER} not found (Debian package abcmidi)"  # the start of the notice without it
_TOLERANCE = 1e-6  # whole notes a full bar may be off by: float rounding only (a 1/128 note is 0.0078)

_FIELD_LINE = re.compile(r"[A-Za-z]:")
_TOKEN = re.compile(
    r"""
    "[^"\n]*" | ![^!\n]*! | \{[^}\n]*\}                             # chord symbols, decorations, grace notes
    | \[(?P<field>[A-Za-z]):(?P<value>[^]\n]*)\]                    # inline field, e.g. [M:3/4]
    | (?P<bar>\[\| | \|\] | :*\|+:* | ::+)(?P<number>[1-9])?        # bar line, maybe opening an ending: :|2
    | \[(?P<ending>[1-9])                                           # ending: [1, [2
    | \((?P<p>[2-9])(?::(?P<q>[2-9])?)?(?::(?P<r>[2-9])?)?          # tuplet (p:q:r
    | (?P<chord>\[[^]\n]*\])(?P<chord_length>\d*/*(?:[1-9]\d*)?)    # chord, e.g. [DFA]2
    | (?P<note>[_=^]*[A-Ga-g][,']*|[zx])(?P<length>\d*/*(?:[1-9]\d*)?)  # note or rest, e.g. ^f3/2
    | (?P<broken>[<>]+)                                             # broken rhythm
    """,
    re.VERBOSE,
)
_LENGTH = re.compile(r"(\d*)(/*)(\d*)")
_METER = re.compile(r"\s*(?:(C\|?)|(\d+)/(\d+))")
_KEY = re.compile(r"\s*([A-G][#b]?)\s*(?:([A-Za-z]+)(?![\w=]))?")
_MODES = {"": "major", "m": "minor", "maj": "major", "ion": "major", "min": "minor", "aeo": "minor"}
_MODES |= {"mix": "mixolydian", "dor": "dorian", "phr": "phrygian", "lyd": "lydian", "loc": "locrian"}
_ERROR = re.compile(r"^Error in line-char (\d+)-\d+ : (.*)$", re.MULTILINE)
# abc2midi's repeat bookkeeping calls valid ABC an error (56 bundled tunes: "found [1 or like before |:"
# for a first ending in a part that starts without |:), so its repeat messages are left to repeats_balanced.
_REPEAT_ERROR = re.compile(r"repeat|variant|\|:|:\||::|\[1")


def parser_available() -> bool:
    """Whether abc2midi, the ABC parser the well-formed check relies on, is on PATH."""
    return shutil.which(PARSER) is not None


def check_tune(tune: str) -> dict:
    """The checks on one tune; check_tunes does many at once, far faster."""
    return check_tunes([tune])[0]


def check_tunes(tunes: list[str]) -> list[dict]:
    """Per tune: well_formed (headers_ok and parses), headers_ok, parses, bars_match_meter, repeats_balanced,
    meter (M: as written), key (normalised, e.g. "D major"), num_bars and parse_errors (abc2midi's).

    Headers are ok when X: comes first, T: and M: follow, and K: ends the header (L: may be absent:
    ABC's default unit applies). A tune parses when abc2midi reads it with no "Error" line; its warnings
    (bar lengths, which it gets wrong around repeats) do not count, nor do its errors about repeat
    signs, which flag valid ABC and which repeats_balanced judges instead. A tune without a body fails
    every check of its music, so a tune cut off by a blank line after K: is not well-formed.
    """
    return [checks for checks, _ in examine([Tune.read(tune) for tune in tunes])]


@dataclasses.dataclass(frozen=True)
class Tune:
    """A tune's header (its lines up to the first K: line) and body (the lines after it)."""

    header: tuple[str, ...]
    body: tuple[str, ...]

    @classmethod
    def read(cls, text: str) -> "Tune":
        """Splits a tune; comment lines go, and a blank line ends the tune (ABC 2.1), as in a file."""
        lines = [line.rstrip() for line in text.strip().splitlines() if not line.startswith("%")]
        if "" in lines:
            lines = lines[: lines.index("")]
        keys = [index for index, line in enumerate(lines) if line.startswith("K:")]
        end = keys[0] + 1 if keys else len(lines)
        return cls(tuple(lines[:end]), tuple(lines[end:]))

    def field(self, letter: str) -> str | None:
        """The value of the header's first `letter:` field, stripped, or None."""
        return next((line[2:].strip() for line in self.header if line.startswith(f"{letter}:")), None)

    def headers_ok(self) -> bool:
        """X: first, K: last, T: and M: between, and nothing but fields in the header."""
        letters = [line[0] for line in self.header]
        return (
            all(_FIELD_LINE.match(line) for line in self.header)
            and letters[:1] == ["X"]
            and letters[-1:] == ["K"]
            and {"T", "M"} <= set(letters)
        )

    def without_x(self) -> list[str]:
        """Its lines but a leading X: line: a tune's text apart from its number."""
        lines = [*self.header, *self.body]
        return lines[1:] if lines and lines[0].startswith("X:") else lines

    def music(self) -> str:
        """The body as one text; body field lines (M:6/8, K:G) become inline fields so meter changes count."""
        return "\n".join(f"[{line}]" if _FIELD_LINE.match(line) else line for line in self.body)


def examine(tunes: list[Tune]) -> list[tuple[dict, list[str]]]:
    """Each tune's checks (as check_tunes gives them) and its bars' notes, which copy detection compares;
    one reading serves both, with as few abc2midi runs as the batch allows."""
    with_body = [index for index, tune in enumerate(tunes) if tune.body]
    errors = _parse_errors([tunes[index].without_x() for index in with_body])
    errors_at = dict(zip(with_body, errors, strict=True))
    return [_checks(tune, errors_at.get(index)) for index, tune in enumerate(tunes)]


@dataclasses.dataclass
class _Bar:
    notes: str  # its notes, rests, chords and rhythm marks without spaces: what copying compares
    duration: float  # in whole notes
    expected: float | None  # what the meter in force says, None when there is no readable meter
    may_be_short: bool  # it starts or ends a section: a pickup, or the bar before a repeat or ending


def _checks(tune: Tune, errors: list[str] | None) -> tuple[dict, list[str]]:
    """One tune's checks (errors: abc2midi's, None when there was no body to parse) and its bars' notes."""
    music = tune.music()
    bars = _measure(music, tune.field("M"), tune.field("L"))
    headers_ok, parses, key = tune.headers_ok(), errors == [], tune.field("K")
    checks = {
        "well_formed": headers_ok and parses,
        "headers_ok": headers_ok,
        "parses": parses,
        "bars_match_meter": bool(bars) and all(map(_fits, bars)),
        "repeats_balanced": bool(tune.body) and _repeats_balanced(music),
        "meter": tune.field("M"),
        "key": None if key is None else normalise_key(key),
        "num_bars": len(bars),
        "parse_errors": errors or [],
    }
    return checks, [bar.notes for bar in bars]


def _fits(bar: _Bar) -> bool:
    """The meter's length (to within _TOLERANCE), or shorter where a section starts or ends."""
    if bar.expected is None:
        return False
    return abs(bar.duration - bar.expected) < _TOLERANCE or (bar.may_be_short and bar.duration < bar.expected)


def _measure(music: str, meter: str | None, unit: str | None) -> list[_Bar]:
    """The bars of a tune body, timed in whole notes: grace notes, chord symbols and decorations take no
    time, a chord lasts as long as its first note, and empty bars (a bar line after a line break) go."""
    counter = _BarCounter(meter, unit)
    for token in _TOKEN.finditer(music):
        counter.take(token)
    counter.close_bar()
    counter.section_edge()
    return counter.bars


class _BarCounter:
    """Adds up note lengths bar by bar, following M: and L: changes, tuplets and broken rhythm."""

    def __init__(self, meter: str | None, unit: str | None) -> None:
        self.meter = parse_meter(meter)
        self.unit = _unit(unit, self.meter)
        self.bars: list[_Bar] = []
        self.notes: list[str] = []
        self.duration = self.last = 0.0  # the bar's, and its last note's (which broken rhythm changes)
        self.starts_section = True
        self.tuplet_factor, self.tuplet_left = 1.0, 0  # time factor, notes it still applies to
        self.broken = 1.0  # what a broken rhythm mark leaves for the next note

    def take(self, token: re.Match) -> None:
        """Follows one _TOKEN match."""
        if token["field"] == "M":
            self.meter = parse_meter(token["value"])
        elif token["field"] == "L":
            self.unit = _unit(token["value"], self.meter)
        elif token["bar"] or token["ending"]:
            self.close_bar()
            if token[0] != "|":  # anything but a plain bar line: a repeat, double bar or ending
                self.section_edge()
        elif token["p"]:
            self.start_tuplet(token)
        elif token["chord"]:
            first = next((note for note in _TOKEN.finditer(token["chord"][1:-1]) if note["note"]), None)
            length = _length(first["length"]) * _length(token["chord_length"]) if first else 0.0
            self.add(token[0], length)
        elif token["note"]:
            self.add(token[0], _length(token["length"]))
        elif token["broken"]:
            self.break_rhythm(token["broken"])

    def add(self, text: str, length: float) -> None:
        self.last = self.unit * length * self.broken
        if self.tuplet_left:
            self.last *= self.tuplet_factor
            self.tuplet_left -= 1
        self.broken = 1.0
        self.duration += self.last
        self.notes.append(text)

    def start_tuplet(self, token: re.Match) -> None:
        """(p:q:r: the next r notes (default p) take the time of q (ABC 2.1's default for p)."""
        p = int(token["p"])
        compound = self.meter is not None and self.meter[0] % 3 == 0 and self.meter[0] > 3
        q = int(token["q"]) if token["q"] else {2: 3, 3: 2, 4: 3, 6: 2, 8: 3}.get(p, 3 if compound else 2)
        self.tuplet_factor, self.tuplet_left = q / p, int(token["r"]) if token["r"] else p
        self.notes.append(token[0])

    def break_rhythm(self, marks: str) -> None:
        """A>B: A dotted, B halved (>> double-dotted, quartered); A<B the other way round."""
        short = 0.5 ** len(marks)
        before, after = (2 - short, short) if marks[0] == ">" else (short, 2 - short)
        self.duration += self.last * (before - 1)
        self.broken = after
        self.notes.append(marks)

    def close_bar(self) -> None:
        if self.duration:
            expected = self.meter[0] / self.meter[1] if self.meter else None
            self.bars.append(_Bar("".join(self.notes), self.duration, expected, self.starts_section))
            self.starts_section = False
        self.notes, self.duration, self.last = [], 0.0, 0.0

    def section_edge(self) -> None:
        """A repeat, double bar or ending: the bars either side of it may be short (pickups)."""
        if self.bars:
            self.bars[-1].may_be_short = True
        self.starts_section = True


def parse_meter(value: str | None) -> tuple[int, int] | None:
    """M: as (beats, beat note): C is 4/4, C| is 2/2; None for none or anything unreadable."""
    match = _METER.match(value or "")
    if not match or match[3] == "0":
        return None
    return {"C": (4, 4), "C|": (2, 2)}[match[1]] if match[1] else (int(match[2]), int(match[3]))


def _unit(value: str | None, meter: tuple[int, int] | None) -> float:
    """L: in whole notes; without a readable one, ABC 2.1's default: 1/16 below 3/4 time, else 1/8."""
    match = re.fullmatch(r"\s*(\d+)/([1-9]\d*)\s*", value or "")
    if match:
        return int(match[1]) / int(match[2])
    return 1 / 16 if meter and meter[0] / meter[1] < 3 / 4 else 1 / 8


@functools.cache
def _length(text: str) -> float:
    """A note length in units of L: "" 1, "2" 2, "/" 1/2, "//" 1/4, "3/2" 3/2, "/4" 1/4."""
    digits, slashes, denominator = _LENGTH.fullmatch(text).groups()
    return int(digits or 1) / (int(denominator) if denominator else 2 ** len(slashes))


def _repeats_balanced(music: str) -> bool:
    """Every |: closed by a :| (or ::) before the next |: and the end, and every ending after the first
    following an ending and a :|. A :| with no |: repeats from the start of its part: every bundled
    tune is written that way, and ABC 2.1 allows it, so it counts as balanced."""
    opened = ending_seen = closed = False
    for token in _TOKEN.finditer(music):
        bar, ending = token["bar"] or "", token["ending"] or token["number"]
        if bar.startswith(":"):
            opened, closed = False, True
        if bar.endswith(":"):
            if opened:
                return False
            opened = True
        if ending:
            if int(ending) > 1 and not (ending_seen and closed):
                return False
            ending_seen, closed = True, False
    return not opened


def normalise_key(value: str) -> str:
    """K: as tonic and mode, so "D", "Dmaj" and "D Major" are all "D major"; other values as written."""
    match = _KEY.match(value)
    mode = _MODES.get((match[2] or "")[:3].lower()) if match else None
    return f"{match[1]} {mode}" if mode else value


def _parse_errors(tunes: list[list[str]]) -> list[list[str]]:
    """abc2midi's errors for each tune (its lines without X:), in one run when it gets through the batch.

    abc2midi stops the whole file at a few errors (a zero note-length denominator) and crashes on rare
    garbage, losing the tunes after it; halving the batch until the culprit is alone keeps every other
    tune's result for a few more runs per such tune.
    """
    if not tunes:
        return []
    stopped, errors = _run_parser(tunes)
    if stopped is None:
        return errors
    if len(tunes) == 1:
        return [[*errors[0], f"abc2midi stopped on this tune ({stopped})"]]
    middle = len(tunes) // 2
    return _parse_errors(tunes[:middle]) + _parse_errors(tunes[middle:])


def _run_parser(tunes: list[list[str]]) -> tuple[str | None, list[list[str]]]:
    """One abc2midi run on the tunes numbered 1.. in one file: why it stopped early (None if it did not),
    and each tune's errors, found by the line numbers abc2midi gives (a tune's last line, or the blank
    line after it, where abc2midi reports what it finds missing at the end)."""
    if not parser_available():
        raise AbcjaxError(
            f"{PARSER} not found on PATH: install it (Debian: apt-get install abcmidi) to check tunes parse"
        )
    starts, lines = [], []
    for number, tune in enumerate(tunes, start=1):
        starts.append(len(lines) + 1)
        lines += [f"X:{number}", *tune, ""]
    errors: list[list[str]] = [[] for _ in tunes]
    with tempfile.TemporaryDirectory() as folder:  # abc2midi -c still writes a stray file in its folder
        (pathlib.Path(folder) / "tunes.abc").write_text("\n".join(lines), encoding="utf-8")
        command = [PARSER, "tunes.abc", "-c"]
        timeout = 10 + len(tunes) / 1000  # it reads ~40,000 tunes/s: this only catches a hang
        try:
            result = subprocess.run(  # errors="replace": it echoes bytes of broken input
                command, cwd=folder, capture_output=True, text=True, errors="replace", timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return f"no answer in {timeout:.0f} s", errors
    for line, message in _ERROR.findall(result.stdout):
        if not _REPEAT_ERROR.search(message):
            index = bisect.bisect_right(starts, int(line)) - 1
            errors[index].append(f"line {int(line) - starts[index] + 1}: {message.strip()}")
    return (None if result.returncode == 0 else f"exit status {result.returncode}"), errors

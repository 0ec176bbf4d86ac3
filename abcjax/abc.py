"""The judge of a tune: is it well-formed ABC that a player plays, do its bars fill its meter, do its
repeats pair up. Evaluation, the trainer's sampled-tune figures, `sample --jsonl` and `render` all
ask it, so generated tunes and the training corpus are judged by one reading.

A tune is well-formed when its header is in order (X: first, T: and M: present, K: last, every value
readable), its body holds music, abcjax's own ABC 2.1 reading (abcjax.abc_reader) finds no syntax
error, and abc2midi, the reference player, plays the music as abcjax read it without an error
(abcjax.abc2midi sorts its messages into errors and warnings). abc2midi is also run on the tune as
written: where it rejects what abcjax reads as valid ABC 2.1 (decorations and invisible bar lines
it misreads), or passes what abcjax rejects, the tune's `disagreements` say so.
"""

from __future__ import annotations

import dataclasses
import re

from abcjax import abc2midi, abc_bars, abc_reader
from abcjax import abc_notation as notation
from abcjax.abc_notation import normalise_key

__all__ = ["PARSER", "PARSER_MISSING", "Tune", "check_tune", "check_tunes", "examine", "normalise_key"]

PARSER = abc2midi.PARSER
PARSER_MISSING = abc2midi.PARSER_MISSING
_FIELD_LINE = re.compile(r"[A-Za-z+]:")
_USER_DECORATION = re.compile(r"U:\s*([h-wH-W~])\s*=")


def parser_available() -> bool:
    """Whether abc2midi, which the well-formed check relies on, is on PATH."""
    return abc2midi.available()


def check_tune(tune: str) -> dict:
    """The checks on one tune; check_tunes does many at once, far faster."""
    return check_tunes([tune])[0]


def check_tunes(tunes: list[str]) -> list[dict]:
    """Per tune (see examine): the checks, what each found wrong, meter, key and number of bars."""
    return [checks for checks, _ in examine([Tune.read(tune) for tune in tunes])]


@dataclasses.dataclass(frozen=True)
class Tune:
    """A tune's header (its lines up to the first K: line) and body (the lines after it)."""

    header: tuple[str, ...]
    body: tuple[str, ...]

    @classmethod
    def read(cls, text: str) -> Tune:
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

    def header_errors(self) -> list[str]:
        """What is wrong with the header: order, missing fields, unreadable values."""
        letters = [line[0] for line in self.header]
        errors = [f"not a field line in the header: {line!r}" for line in self.header if not _FIELD_LINE.match(line)]
        if letters[:1] != ["X"] or not re.fullmatch(r"\s*\d+\s*(%.*)?", self.header[0][2:]):
            errors.append("the header does not start with an X: line and its number")
        errors += [f"no {letter}: field" for letter in "TMK" if letter not in letters]
        checks = (("M", notation.parse_meter, "meter"), ("L", notation.parse_unit, "unit length"))
        checks += (("K", notation.parse_key, "key"),)
        for letter, parse, name in checks:
            value = self.field(letter)
            if value is not None and parse(value) is None:
                errors.append(f"unreadable {name} {letter}:{value}")
        return errors

    def without_x(self) -> list[str]:
        """Its lines but a leading X: line: a tune's text apart from its number."""
        lines = [*self.header, *self.body]
        return lines[1:] if lines and lines[0].startswith("X:") else lines

    def read_body(self) -> abc_reader.Reading:
        """The body as ABC 2.1 reads it, under the header's M:, L: and U: fields."""
        user = "".join(_USER_DECORATION.findall("\n".join(self.header)))
        return abc_reader.read_body(list(self.body), self.field("M"), self.field("L"), len(self.header) + 1, user)


def examine(tunes: list[Tune]) -> list[tuple[dict, list[str]]]:
    """Each tune's checks and its bars' notes (what copy detection compares), from one reading;
    abc2midi judges the whole batch in a few parallel runs.

    The checks: well_formed (all of headers_ok, a body with music, no syntax error and parses),
    headers_ok, parses (abc2midi plays the music as abcjax read it), bars_match_meter,
    repeats_balanced, meter (M: as written), key (e.g. "D major"), num_bars, and the lists behind
    them: header_errors, syntax_errors, bar_errors, parse_errors and parse_warnings (abc2midi's),
    and disagreements between abc2midi and abcjax's reading.
    """
    readings = [tune.read_body() for tune in tunes]
    with_body = [index for index, tune in enumerate(tunes) if tune.body]
    as_read = abc2midi.judge([[*tunes[i].header[1:], *readings[i].for_abc2midi] for i in with_body])
    as_written = abc2midi.judge([tunes[i].without_x() for i in with_body])
    verdicts = dict(zip(with_body, zip(as_read, as_written, strict=True), strict=True))
    pairs = enumerate(zip(tunes, readings, strict=True))
    return [_checks(tune, reading, verdicts.get(index)) for index, (tune, reading) in pairs]


def _checks(
    tune: Tune, reading: abc_reader.Reading, verdicts: tuple[abc2midi.Verdict, abc2midi.Verdict] | None
) -> tuple[dict, list[str]]:
    header_errors = tune.header_errors()
    has_music = reading.num_notes > 0
    as_read, as_written = verdicts or (abc2midi.Verdict((), ()), abc2midi.Verdict((), ()))
    parses = has_music and not as_read.errors
    bar_errors = [fault for bars in reading.voices.values() for fault in abc_bars.bar_faults(bars)]
    meter_read = notation.parse_meter(tune.field("M")) is not None and not reading.meter_unreadable
    key = tune.field("K")
    checks = {
        "well_formed": not header_errors and has_music and not reading.syntax_errors and parses,
        "headers_ok": not header_errors,
        "parses": parses,
        "bars_match_meter": has_music and meter_read and not bar_errors,
        "repeats_balanced": has_music and all(map(abc_bars.repeats_balanced, reading.bar_lines.values())),
        "meter": tune.field("M"),
        "key": None if key is None else notation.normalise_key(key),
        "num_bars": len(reading.bars),
        "header_errors": header_errors,
        "syntax_errors": reading.syntax_errors,
        "syntax_warnings": reading.syntax_warnings,
        "bar_errors": bar_errors,
        "parse_errors": list(as_read.errors) if has_music else [],
        "parse_warnings": list(as_read.warnings),
        "disagreements": _disagreements(reading, as_read, as_written),
    }
    return checks, [bar.notes for bar in reading.bars]


def _disagreements(reading: abc_reader.Reading, as_read: abc2midi.Verdict, as_written: abc2midi.Verdict) -> list[str]:
    """Where abc2midi and abcjax's reading part: abc2midi rejecting the text as written but playing it
    as abcjax read it (valid ABC 2.1 abc2midi misreads), or passing what abcjax cannot read."""
    found = []
    if not reading.syntax_errors:
        misread = [error for error in as_written.errors if error not in as_read.errors]
        found += [f"abc2midi misreads valid ABC 2.1 as written: {error}" for error in misread]
    elif not as_written.errors:
        found += [f"abc2midi plays what abcjax cannot read: {error}" for error in reading.syntax_errors]
    return found

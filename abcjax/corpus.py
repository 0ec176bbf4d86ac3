"""Read ABC files into a list of tunes, and say what was read and what was left out.

The model learns from whole tunes only, so this module keeps exactly the text a tune is
made of (ABC 2.1: from its X: line to the first blank line) and drops everything the
model should not imitate: file headers, free text between tunes, and comment lines.
"""

import codecs
import collections
import dataclasses
import pathlib
import re
import sys

from abcjax import abc
from abcjax.errors import AbcjaxError

# One skipped tune: (where, why), e.g. ("data/x.abc:12", "no K: header").
Skip = tuple[str, str]

# ABC 2.1's character set declaration, at the start of a line: "%abc-charset utf-8", "I:abc-charset ...".
_DECLARED_CHARSET = re.compile(rb"^(?:%|I:)abc-charset[ \t]+([A-Za-z0-9_.:-]+)", re.MULTILINE)

NO_KEY = "no K: header"
NO_MUSIC = "no music"  # no note or rest after K:, as the judge (abcjax.abc) reads the body


@dataclasses.dataclass(frozen=True)
class CorpusReport:
    """What reading the corpus did, so a user can check the data before training on it."""

    files: tuple[str, ...]
    num_tunes: int
    num_chars: int
    skipped: tuple[Skip, ...]
    duplicates: tuple[Skip, ...] = ()  # (where, "same music as WHERE"): tunes dropped as a repeat

    def summary(self) -> str:
        """One line for the log: counts, and why tunes were skipped or dropped when some were."""
        line = (
            f"read {_count(len(self.files), 'file')}: {_count(self.num_tunes, 'tune')}, "
            f"{_count(self.num_chars, 'character')}, "
            f"{_count(len(self.skipped), 'tune')} skipped"
        )
        if self.skipped:
            line += f"; skipped: {_reason_counts(self.skipped)}"
        if self.duplicates:
            line += f"; {_count(len(self.duplicates), 'duplicate')} dropped (same music as an earlier tune)"
        return line


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The tunes to train on (each its lines joined by newlines) and how they were read."""

    tunes: tuple[str, ...]
    report: CorpusReport


def find_abc_files(path_spec: str) -> list[pathlib.Path]:
    """Turn "file", "dir" or "a.abc,dir,..." into the files to read, failing early on typos.

    A directory stands for its *.abc files, sorted by name so runs are reproducible; it
    is not searched recursively, so what is read is easy to see with ls.
    """
    parts = [part.strip() for part in path_spec.split(",") if part.strip()]
    if not parts:
        raise AbcjaxError("no corpus path given: give an ABC file, a directory, or a comma list")
    return [file for part in parts for file in _files_at(pathlib.Path(part))]


def split_tunes(text: str, source: str) -> tuple[list[str], list[Skip]]:
    """Cut ABC text into tunes, and list the tunes that cannot be learnt from and why.

    source names the text in the skipped list as "source:line", the line of the X: line,
    so the user can find and fix the tune.
    """
    tunes, skipped = _split(text, source)
    return [tune.text for tune in tunes], skipped


@dataclasses.dataclass(frozen=True)
class _ReadTune:
    text: str
    where: str  # "file:line" of its X: line
    music: tuple  # what makes two tunes the same tune: meter, unit, key and the notes of every bar


def _split(text: str, source: str) -> tuple[list[_ReadTune], list[Skip]]:
    tunes: list[_ReadTune] = []
    skipped: list[Skip] = []
    for line_number, lines in _tune_blocks(_clean_lines(text)):
        where = f"{source}:{line_number}"
        tune = abc.Tune.read("\n".join(lines))
        music = tune.read_body()
        if not tune.header[-1:] or not tune.header[-1].startswith("K:"):
            skipped.append((where, NO_KEY))
        elif not music.num_notes:
            skipped.append((where, NO_MUSIC))
        else:
            fields = tuple(tune.field(letter) for letter in "ML") + (abc.normalise_key(tune.field("K")),)
            tunes.append(_ReadTune("\n".join(lines), where, (*fields, *(bar.notes for bar in music.bars))))
    return tunes, skipped


def read_corpus(path_spec: str, deduplicate: bool = False) -> Corpus:
    """Read every file in path_spec into one corpus, failing if nothing usable is left.

    With deduplicate, a tune whose music (meter, unit, key and the notes of every bar, however spaced
    and barred) an earlier tune already has is dropped and listed: the same tune printed in two books,
    under two titles, is one tune, and must not sit in training and validation at once.
    """
    files = find_abc_files(path_spec)
    tunes: list[_ReadTune] = []
    skipped: list[Skip] = []
    for file in files:
        file_tunes, file_skipped = _split(_read_text(file), str(file))
        if not file_tunes and not file_skipped:
            raise AbcjaxError(f"{file}: no tunes found (a tune starts with an X: line)")
        tunes.extend(file_tunes)
        skipped.extend(file_skipped)
    duplicates: list[Skip] = []
    if deduplicate:
        first: dict[tuple, str] = {}
        kept = []
        for tune in tunes:
            earlier = first.setdefault(tune.music, tune.where)
            if earlier == tune.where:
                kept.append(tune)
            else:
                duplicates.append((tune.where, f"same music as {earlier}"))
        tunes = kept
    names = ", ".join(str(file) for file in files)
    if not tunes:
        raise AbcjaxError(
            f"every tune in {names} was skipped ({_reason_counts(skipped)}): "
            "each tune needs a K: line followed by its music"
        )
    report = CorpusReport(
        files=tuple(str(file) for file in files),
        num_tunes=len(tunes),
        num_chars=sum(len(tune.text) for tune in tunes),
        skipped=tuple(skipped),
        duplicates=tuple(duplicates),
    )
    return Corpus(tunes=tuple(tune.text for tune in tunes), report=report)


def read_all_tunes(path_spec: str) -> list[str]:
    """Every tune in path_spec's files, unusable ones included, for describing a model's output.

    read_corpus drops what a model cannot learn from; an evaluation must count those tunes too,
    so that a tune cut off by a blank line lowers the well-formed share instead of vanishing.
    """
    tunes: list[str] = []
    for file in find_abc_files(path_spec):
        blocks = _tune_blocks(_clean_lines(_read_text(file)))
        if not blocks:
            raise AbcjaxError(f"{file}: no tunes found (a tune starts with an X: line)")
        tunes.extend("\n".join(lines) for _, lines in blocks)
    return tunes


def _files_at(path: pathlib.Path) -> list[pathlib.Path]:
    """The file itself, or a directory's *.abc files; an error if there is nothing there."""
    if not path.exists():
        raise AbcjaxError(f"{path}: no such file or directory: check the corpus path")
    if not path.is_dir():
        return [path]
    files = sorted(path.glob("*.abc"))
    if not files:
        raise AbcjaxError(f"{path}: directory has no *.abc files: put ABC files in it")
    return files


def _read_text(path: pathlib.Path) -> str:
    """A file's text, decoded as the file declares; an error for unreadable, undecodable or empty.

    ABC 2.1 lets a file declare its character set (`%abc-charset iso-8859-1`, or `I:abc-charset`);
    the first declaration holds for the whole file. Without one, a file is UTF-8 (a BOM is dropped);
    one that is not valid UTF-8 is an older collection's ISO-8859-1, read so with a notice.
    """
    try:
        raw = path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        hint = "check the path and its permissions"
        raise AbcjaxError(f"{path}: cannot read it ({reason}): {hint}") from error
    declared = _DECLARED_CHARSET.search(raw)
    charset = declared.group(1).decode("ascii") if declared else "utf-8"
    try:
        codec = codecs.lookup(charset).name
    except LookupError:
        raise AbcjaxError(
            f"{path} declares the unknown character set {charset!r}: use utf-8 or iso-8859-1 (ABC 2.1's names)"
        ) from None
    try:
        text = raw.decode(codec).removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        if not declared:
            print(
                f"abcjax: note: {path} is not UTF-8 and declares no character set: read as ISO-8859-1 "
                "(add a line %abc-charset iso-8859-1 to say so, or re-save the file as UTF-8)",
                file=sys.stderr,
            )
            text = raw.decode("iso-8859-1")
        else:
            line = raw[: error.start].count(b"\n") + 1
            raise AbcjaxError(
                f"{path}: not valid {charset} at byte {error.start} (line {line}), though the file declares it: "
                "correct its abc-charset line, or re-save the file in that character set"
            ) from error
    if not text.strip():
        raise AbcjaxError(f"{path} is empty: give an ABC file with at least one tune")
    return text


def _clean_lines(text: str) -> list[tuple[int, str]]:
    """Numbered lines with any line ending, no trailing blanks and no % comment lines.

    Comments (and %% directives) go wherever they are, so the model never learns them;
    the numbers are kept so that messages point at the right line of the file.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    numbered = ((number, line.rstrip()) for number, line in enumerate(lines, start=1))
    return [(number, line) for number, line in numbered if not line.startswith("%")]


def _tune_blocks(lines: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """Each tune's X: line number and lines: from an X: line to a blank line or the next X:.

    Lines outside a tune (the file header, free text between tunes) belong to no block.
    """
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] | None = None
    for number, line in lines:
        if line.startswith("X:"):
            current = [line]
            blocks.append((number, current))
        elif not line:
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def _reason_counts(skipped: list[Skip] | tuple[Skip, ...]) -> str:
    """How many tunes were skipped for each reason, e.g. "2 no K: header, 1 no music"."""
    counts = collections.Counter(reason for _, reason in skipped)
    return ", ".join(f"{count} {reason}" for reason, count in counts.most_common())


def _count(number: int, noun: str) -> str:
    """A count a person reads at a glance, e.g. "1 file", "2 files", "197,618 characters"."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"

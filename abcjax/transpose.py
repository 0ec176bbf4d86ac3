"""Training tunes transposed by a few semitones (data augmentation, `data.transpose`), by abc2abc.

The bundled corpus gives 720 training tunes; a tune moved up or down a tone keeps its melodic shapes
and rhythm, so the model sees each shape in more than one place on the staff. Only the training
tunes are transposed, after the split: validation measures the corpus as it is, and no validation
tune reaches training in another key.

abc2abc (Debian's abcmidi, which abcjax already uses) does the transposing: notes, accidentals,
chord symbols and keys. It spells keys its own way (`K:Emaj` for `K:E Major`) and respaces some header
fields; each copy keeps its original's header and key spelling, with the new tonic, so that the model
does not learn two spellings of one thing.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import tempfile

from abcjax import corpus
from abcjax.errors import AbcjaxError

TRANSPOSER = "abc2abc"
MAX_SEMITONES = 11  # beyond an octave, a shift is the same key again

_KEY_LINE = re.compile(r"^K:(\s*)([A-G][#b]?)(.*)$")
_FIELD = re.compile(r"^[A-Za-z+]:")  # a header or body field line, which abc2abc leaves alone but K:
_HALF_AFTER_DIGIT = re.compile(r"(\d)/(?!\d)")  # `3/`, as abc2abc -c writes `3/2`
_HALF_AFTER_DIGIT_WRITTEN = re.compile(r"\d/2(?!\d)")
_QUOTED = re.compile(r'"([^"]*)"')
_CHORD_SYMBOL = re.compile(r"^[A-G][#b]?[a-z0-9+#()-]*(/[A-G][#b]?)?$")  # "D", "Em7", "G/B", "Bbmaj7"


# What `data.transpose` must be, for the config's message.
SHIFTS_WANTED = f"a tuple of distinct semitone counts from -{MAX_SEMITONES} to {MAX_SEMITONES}, without 0, e.g. (-2, 2)"


def valid_shifts(shifts) -> bool:
    """Whether `data.transpose` is usable: distinct non-zero whole semitone counts within an octave."""
    whole = all(isinstance(shift, int) and not isinstance(shift, bool) for shift in shifts)
    return whole and len(set(shifts)) == len(shifts) and all(0 < abs(shift) <= MAX_SEMITONES for shift in shifts)


def transposed(tunes: list[str], shifts: tuple[int, ...]) -> list[str]:
    """Every tune moved by each shift in turn (shifts' order, then the tunes' order)."""
    if shifts and shutil.which(TRANSPOSER) is None:
        raise AbcjaxError(
            f"data.transpose needs {TRANSPOSER}, which is not installed: install Debian's abcmidi, "
            "or set data.transpose=() to train on the tunes as they are"
        )
    return [tune for shift in shifts for tune in _transpose_all(tunes, shift)]


def _transpose_all(tunes: list[str], shift: int) -> list[str]:
    """One abc2abc run over all the tunes, checked to give back as many as it was given."""
    with tempfile.TemporaryDirectory() as directory:
        source = pathlib.Path(directory) / "tunes.abc"
        source.write_text("".join(tune + "\n\n" for tune in tunes), encoding="utf-8")
        result = subprocess.run(
            [TRANSPOSER, str(source), "-t", str(shift), "-e", "-c"], capture_output=True, text=True, errors="replace"
        )
    copies, _ = corpus.split_tunes(result.stdout, f"{TRANSPOSER} -t {shift}")
    if result.returncode != 0 or len(copies) != len(tunes):
        raise AbcjaxError(
            f"{TRANSPOSER} -t {shift} gave back {len(copies)} of {len(tunes)} tunes (exit {result.returncode}): "
            "set data.transpose=() to train without transposed copies"
        )
    return [_as_original(original, copy) for original, copy in zip(tunes, copies, strict=True)]


def _as_original(original: str, copy: str) -> str:
    """The copy written as its original is: the original's header lines (abc2abc respaces some, e.g.
    `Z: id:`), each K: line in the original's spelling with the new tonic, and each body line with the
    original line's indent and its `3/2` (abc2abc's -c writes `3/`, to keep `a/` as written)."""
    lines, copied = original.split("\n"), copy.split("\n")
    if len(lines) != len(copied):
        return copy
    return "\n".join(
        line if not line.startswith(("K:", "%")) and _FIELD.match(line) else _as_written(line, ours)
        for line, ours in zip(lines, copied, strict=True)
    )


def _as_written(original: str, copy: str) -> str:
    """One line of the copy, in its original's spelling (see _as_original)."""
    if original.startswith("K:"):
        return _respell(original, copy)
    copy = original[: len(original) - len(original.lstrip())] + copy.lstrip()
    if " [" not in original:  # abc2abc spaces `|[1` as `| [1`
        copy = copy.replace(" [", "[")
    if _HALF_AFTER_DIGIT_WRITTEN.search(original):
        copy = _HALF_AFTER_DIGIT.sub(r"\1/2", copy)
    return _keep_annotations(original, copy)


def _keep_annotations(original: str, copy: str) -> str:
    """The copy with the original's quoted text where that is no chord symbol: abc2abc transposes
    `"Extended"` to `"Dxtended"`."""
    texts, copied = _QUOTED.findall(original), _QUOTED.findall(copy)
    if len(texts) != len(copied):
        return copy
    kept = iter(ours if _CHORD_SYMBOL.match(text) else text for text, ours in zip(texts, copied, strict=True))
    return _QUOTED.sub(lambda _: f'"{next(kept)}"', copy)


def _respell(original: str, copy: str) -> str:
    """`K:D Major`, `K:Emaj` -> `K:E Major`; a key line without a tonic stays as abc2abc wrote it."""
    before, after = _KEY_LINE.match(original), _KEY_LINE.match(copy)
    if before is None or after is None:
        return copy
    space, _, mode = before.groups()
    return f"K:{space}{after.group(2)}{mode}"

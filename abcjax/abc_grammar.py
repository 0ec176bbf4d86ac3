"""The tables the compiled ABC reader of the constrained sampler looks things up in, built once on the host.

The reader (abcjax.abc_constraint) follows a tune character by character inside the sampling loop,
where there is no Python: what a character is (a note letter, a digit and its value, a bar line...)
and which spellings a header value or a note length may take are numpy tables here, indexed by
vocabulary id. Header values and note lengths are tries over the vocabulary: a child table, what each
node ends (the meter's bar length, the unit, a length) and, for lengths, which lengths a node can
still lead to, so that the sampler never starts a length that no ending of it can fit.

Durations are integer ticks, TICKS to a whole note, with the same meaning as abcjax.abc_notation's
fractions: tests compare the two readers bar by bar.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np

from abcjax import abc_notation as notation
from abcjax.errors import AbcjaxError

TICKS = 2**8 * 3**2 * 5 * 7  # ticks in a whole note: halvings to 1/256, tuplets of 2 to 9, in int32

# Character classes of the body (the header reads its values through tries).
(
    OTHER,
    NOTE,
    REST,
    ACCIDENTAL,
    OCTAVE,
    DIGIT,
    SLASH,
    BAR,
    COLON,
    LBRACKET,
    RBRACKET,
    LPAREN,
    RPAREN,
    LBRACE,
    RBRACE,
    QUOTE,
    BANG,
    SPACE,
    NEWLINE,
    BROKEN,
    TIE,
    DECORATION,
    UPPER,
    DOT,
    CONTINUATION,
) = range(25)
_CLASS_OF = {
    **dict.fromkeys("ABCDEFGabcdefg", NOTE),
    **dict.fromkeys("zx", REST),
    **dict.fromkeys("^_=", ACCIDENTAL),
    **dict.fromkeys(",'", OCTAVE),
    **dict.fromkeys("0123456789", DIGIT),
    "/": SLASH,
    "|": BAR,
    ":": COLON,
    "[": LBRACKET,
    "]": RBRACKET,
    "(": LPAREN,
    ")": RPAREN,
    "{": LBRACE,
    "}": RBRACE,
    '"': QUOTE,
    "!": BANG,
    " ": SPACE,
    "\t": SPACE,
    "\n": NEWLINE,
    ">": BROKEN,
    "<": BROKEN,
    "-": TIE,
    "~": DECORATION,
    ".": DOT,
    "\\": CONTINUATION,
    **dict.fromkeys("HLMOPSTuv", DECORATION),  # ABC 2.1's predefined decoration letters
}
# Header field letters the sampler writes after X: (X again would start another tune; U:, V: and I:
# would change how the body reads; P: in a header names parts the body must then mark; A-G start music
# lines, which a model must not drift into the header).
HEADER_LETTERS = "HKLMNOQRSTWZ"
FIELD_BITS = {"T": 1, "M": 2, "L": 4, "K": 8}

METERS = ("C", "C|", "2/2", "3/2", "2/4", "3/4", "4/4", "5/4", "6/4", "3/8", "6/8", "9/8", "12/8")
UNITS = ("1/4", "1/8", "1/16")
_MODE_SPELLINGS = {
    "major": ("", " Major", "maj", " major", " Maj"),
    "minor": ("m", " Minor", "min", " minor", " Min"),
    "dorian": (" Dorian", "dor", " dorian", " Dor"),
    "mixolydian": (" Mixolydian", "mix", " mixolydian", " Mix"),
    "aeolian": (" Aeolian", "aeo"),
    "ionian": (" Ionian", "ion"),
    "phrygian": (" Phrygian", "phr"),
    "lydian": (" Lydian", "lyd"),
    "locrian": (" Locrian", "loc"),
}
# The !name! decorations the constrained sampler writes: ABC 2.1's that fiddle and whistle music uses
# (any other name is read, and ignored by abc2midi: a model that spells a name half-way writes noise).
DECORATIONS = (
    "trill",
    "roll",
    "turn",
    "mordent",
    "uppermordent",
    "lowermordent",
    "fermata",
    "accent",
    "emphasis",
    "tenuto",
    "upbow",
    "downbow",
    "breath",
    "slide",
    "segno",
    "coda",
    "fine",
    "D.C.",
    "D.S.",
)

# Note lengths the constrained sampler writes, in units of L:, each with its spellings: those of the
# corpus (none shorter than 1/2: with them a bar always fills in halves of the unit, where 1/4 and
# 3/4 would let a tune patch a bar with notes no folk transcription writes).
LENGTHS = {
    Fraction(1, 2): ("/", "/2"),
    Fraction(1): ("",),
    Fraction(3, 2): ("3/2",),
    Fraction(2): ("2",),
    Fraction(3): ("3",),
    Fraction(4): ("4",),
    Fraction(6): ("6",),
    Fraction(8): ("8",),
}


# Bar-line tokens the constrained sampler writes: (spelling, ends a repeat, starts one, ending number).
BAR_TOKENS = (
    ("|", False, False, 0),
    ("||", False, False, 0),
    ("|]", False, False, 0),
    ("|:", False, True, 0),
    (":|", True, False, 0),
    ("::", True, True, 0),
    ("|1", False, False, 1),
    (":|2", True, False, 2),
    ("[1", False, False, 1),
    ("[2", False, False, 2),
)


@dataclasses.dataclass(frozen=True)
class Trie:
    """Spellings over the vocabulary: child[node, char] (-1: none; node 0 is the root) and, per node,
    the index of the value it spells in full (-1: none) and a bitmask of the values below it."""

    child: np.ndarray  # [nodes, vocab] int32
    value: np.ndarray  # [nodes] int32
    reach: np.ndarray  # [nodes] int32

    @classmethod
    def build(cls, spellings: dict[int, tuple[str, ...]], vocab: tuple[str, ...]) -> Trie:
        """A trie of every spelling whose characters are all in the vocabulary."""
        index = {char: position for position, char in enumerate(vocab)}
        children: list[dict[int, int]] = [{}]
        values, reach = [-1], [0]
        for value, words in spellings.items():
            for word in words:
                if not set(word) <= index.keys():
                    continue
                node = 0
                reach[0] |= 1 << value
                for char in word:
                    if index[char] not in children[node]:
                        children[node][index[char]] = len(children)
                        children.append({})
                        values.append(-1)
                        reach.append(0)
                    node = children[node][index[char]]
                    reach[node] |= 1 << value
                values[node] = value
        child = np.full((len(children), len(vocab)), -1, np.int32)
        for node, links in enumerate(children):
            for char, target in links.items():
                child[node, char] = target
        return cls(child, np.array(values, np.int32), np.array(reach, np.int32))


@dataclasses.dataclass(frozen=True)
class Options:
    """What the constrained sampler is asked for beyond well-formed tunes with full bars (hashable)."""

    bars_per_part: int = 0  # each part exactly this many bars, then a repeat or a double bar (0: free)
    parts: int = 0  # the tune ends after this many parts (0: free)
    meter: str | None = None  # only this M:, e.g. "6/8"
    key: str | None = None  # only this K: (its tonic and mode, however spelled), e.g. "D" or "Ador"
    unit: str | None = None  # only this L:, e.g. "1/8"
    header_only: bool = False  # constrain the header alone (for --meter, --key, --unit with --no-constrain)

    def describe(self) -> str:
        """What was asked, as the tunebook's header records it, e.g. "constrained: 8 bars per part, 2 parts,
        meter 6/8"."""
        asked = [f"{self.bars_per_part} bars per part"] if self.bars_per_part else []
        asked += [f"{self.parts} parts"] if self.parts else []
        asked += [
            f"{name} {value}"
            for name, value in (("meter", self.meter), ("key", self.key), ("unit", self.unit))
            if value
        ]
        what = "header constrained" if self.header_only else "constrained: well-formed, every bar full"
        return ", ".join([what, *asked])

    def check(self) -> None:
        if self.bars_per_part < 0 or self.parts < 0:
            raise AbcjaxError("--bars_per_part and --parts must be 0 (free) or a positive number")
        if self.parts and not self.bars_per_part:
            raise AbcjaxError("--parts needs --bars_per_part: a part ends after that many bars")
        if self.meter is not None and self.meter not in METERS:
            raise AbcjaxError(f"--meter {self.meter} is not one the sampler writes: choose from {', '.join(METERS)}")
        if self.unit is not None and self.unit not in UNITS:
            raise AbcjaxError(f"--unit {self.unit} is not one the sampler writes: choose from {', '.join(UNITS)}")
        key = notation.parse_key(self.key) if self.key is not None else None
        if self.key is not None and key is None:
            raise AbcjaxError(f"--key {self.key} is no key: give a tonic and mode, e.g. D, Em, Ador or G Mixolydian")
        if key is not None and key.tonic and abs(_signature(key.tonic, key.mode)) > 7:
            raise AbcjaxError(
                f"--key {self.key} needs more than 7 sharps or flats: give its enharmonic key, e.g. Ab for G#"
            )


@dataclasses.dataclass(frozen=True)
class Tables:
    """Everything the compiled reader looks up, as numpy arrays (jnp constants once traced)."""

    char_class: np.ndarray  # [vocab] int32
    digit: np.ndarray  # [vocab] int32: a digit's value, else 0
    char_code: np.ndarray  # [vocab] int32: the character's code point, for letters and marks
    header_letter: np.ndarray  # [vocab] bool: may start a header field line
    meter_trie: Trie  # value: index into meter_ticks
    meter_ticks: np.ndarray  # [meters] int32: a bar's length
    meter_compound: np.ndarray  # [meters] bool: 6/8, 9/8, 12/8 (tuplets of 5, 7 and 9 take 3)
    unit_trie: Trie  # value: index into unit_ticks
    unit_ticks: np.ndarray  # [units] int32
    key_trie: Trie
    length_trie: Trie  # value: index into length_num / length_den, in increasing length
    length_num: np.ndarray  # [lengths] int32
    length_den: np.ndarray  # [lengths] int32
    bar_trie: Trie  # value: index into BAR_TOKENS
    decoration_trie: Trie  # value 0: a name of DECORATIONS
    newline: int
    options: Options


def build_tables(vocab: tuple[str, ...], options: Options) -> Tables:
    """The reader's tables for this vocabulary; an error when it cannot write ABC (no bar line or digits)."""
    options.check()
    for needed in "|:\n/ ABC":
        if needed not in vocab:
            raise AbcjaxError(
                f"the constrained sampler needs the character {needed!r} in the model's vocabulary, which has "
                "none: sample with --no-constrain"
            )
    meters = [options.meter] if options.meter else list(METERS)
    units = [options.unit] if options.unit else list(UNITS)
    return Tables(
        char_class=np.array([_CLASS_OF.get(char, UPPER if char.isupper() else OTHER) for char in vocab], np.int32),
        digit=np.array([int(char) if char.isdigit() else 0 for char in vocab], np.int32),
        char_code=np.array([ord(char[0]) for char in vocab], np.int32),
        header_letter=np.array([char in HEADER_LETTERS for char in vocab]),
        meter_trie=Trie.build(_with_space(dict(enumerate((meter,) for meter in meters))), vocab),
        meter_ticks=np.array([notation.parse_meter(meter).bar * TICKS for meter in meters], np.int32),
        meter_compound=np.array([notation.parse_meter(meter).compound for meter in meters]),
        unit_trie=Trie.build(_with_space(dict(enumerate((unit,) for unit in units))), vocab),
        unit_ticks=np.array([notation.parse_unit(unit) * TICKS for unit in units], np.int32),
        key_trie=Trie.build(_with_space({0: _key_spellings(options.key)}), vocab),
        length_trie=Trie.build(dict(enumerate(LENGTHS.values())), vocab),
        length_num=np.array([length.numerator for length in LENGTHS], np.int32),
        length_den=np.array([length.denominator for length in LENGTHS], np.int32),
        bar_trie=Trie.build({index: (token[0],) for index, token in enumerate(BAR_TOKENS)}, vocab),
        decoration_trie=Trie.build({0: DECORATIONS}, vocab),
        newline=vocab.index("\n"),
        options=options,
    )


def _with_space(spellings: dict[int, tuple[str, ...]]) -> dict[int, tuple[str, ...]]:
    """Each spelling also after one space (K: G Major), as the corpus sometimes writes them."""
    return {value: (*words, *(f" {word}" for word in words)) for value, words in spellings.items()}


# A key's place on the circle of fifths: its tonic's as a major key (sharps positive), moved by its mode.
_TONIC_FIFTHS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}
_MODE_FIFTHS = {
    "major": 0, "ionian": 0, "lydian": 1, "mixolydian": -1, "dorian": -2,
    "minor": -3, "aeolian": -3, "phrygian": -4, "locrian": -5,
}  # fmt: skip


def _signature(tonic: str, mode: str) -> int:
    """Sharps (positive) or flats (negative) of a key's signature: G# major has 8, which no signature
    holds (abcm2ps stops: "Too many sharps/flats")."""
    shift = {"": 0, "#": 7, "b": -7}[tonic[1:]]
    return _TONIC_FIFTHS[tonic[0]] + shift + _MODE_FIFTHS[mode]


def _key_spellings(key: str | None) -> tuple[str, ...]:
    """Every spelling of the keys allowed: all tonics and modes whose signature has at most 7 sharps
    or flats, or the one asked for."""
    wanted = notation.parse_key(key) if key else None
    spellings = []
    for tonic in (f"{letter}{accidental}" for letter in "ABCDEFG" for accidental in ("", "#", "b")):
        for mode, suffixes in _MODE_SPELLINGS.items():
            signature_ok = abs(_signature(tonic, mode)) <= 7
            if signature_ok and (wanted is None or (wanted.tonic, wanted.mode) == (tonic, mode)):
                spellings += [tonic + suffix for suffix in suffixes]
    return tuple(spellings)

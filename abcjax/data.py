"""Tunes -> integer streams the trainer reads: vocabulary, train/validation split, windows.

Each tune is followed by a blank line (END_OF_TUNE), as in the corpus, so the model learns where a
tune ends and the sampler can stop there. Training windows are gathered inside the compiled step
from the encoded stream, which lives on the device: no host input pipeline to wait on.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from abcjax import copying
from abcjax.errors import AbcjaxError
from abcjax.parallel import round_up
from abcjax.transpose import transposed

# A tune's text ends with its last line; "\n\n" closes the line and leaves a blank one.
END_OF_TUNE = "\n\n"


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The sorted characters of the corpus: char2idx / idx2char, saved with every checkpoint."""

    chars: tuple[str, ...]

    @classmethod
    def from_texts(cls, texts: list[str]) -> Vocabulary:
        return cls(tuple(sorted(set(END_OF_TUNE).union(*map(set, texts)))))

    @property
    def size(self) -> int:
        return len(self.chars)

    @property
    def char2idx(self) -> dict[str, int]:
        return {char: index for index, char in enumerate(self.chars)}

    def encode(self, text: str) -> np.ndarray:
        """Text -> int32 ids; a character outside the vocabulary is an error that names it."""
        char2idx = self.char2idx
        unknown = sorted(set(text) - char2idx.keys())
        if unknown:
            raise AbcjaxError(
                f"characters {''.join(unknown)!r} are not in the model's vocabulary; it has: {''.join(self.chars)!r}"
            )
        return np.fromiter((char2idx[char] for char in text), dtype=np.int32, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(index)] for index in ids)

    def to_json(self) -> dict:
        return {"chars": list(self.chars)}

    @classmethod
    def from_json(cls, data: dict) -> Vocabulary:
        return cls(tuple(data["chars"]))


def join_tunes(tunes: list[str]) -> str:
    """The text the model learns from: every tune followed by its end-of-tune blank line."""
    return "".join(tune + END_OF_TUNE for tune in tunes)


def split_tunes(tunes: tuple[str, ...], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffles whole tunes with `seed` and holds out `val_fraction` of them (at least one when > 0)."""
    order = np.random.default_rng(seed).permutation(len(tunes))
    num_val = int(round(len(tunes) * val_fraction))
    if val_fraction > 0:
        num_val = min(max(num_val, 1), len(tunes) - 1)
    val = [tunes[i] for i in order[:num_val]]
    train = [tunes[i] for i in order[num_val:]]
    return train, val


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A corpus made ready for training: the vocabulary and the encoded train/validation streams."""

    vocab: Vocabulary
    train_tokens: np.ndarray  # [train characters] int32
    val_tokens: np.ndarray  # [validation characters] int32, empty when validation is off
    num_train_tunes: int  # the corpus's, transposed copies aside
    num_val_tunes: int
    train_phrases: frozenset[int]  # the training tunes' phrases (abcjax.copying), which new tunes must not copy
    num_transposed: int = 0  # transposed copies of training tunes in train_tokens (data.transpose)


def make_dataset(
    tunes: tuple[str, ...],
    seq_length: int,
    val_fraction: float,
    seed: int,
    source: str,
    transpose: tuple[int, ...] = (),
) -> Dataset:
    """Builds the vocabulary from the whole corpus and the transposed copies, so that every character
    is encodable. The copies (abcjax.transpose) follow the training tunes; a new tune that copies
    phrases counts as copied against the corpus's tunes, as written."""
    train, val = split_tunes(tunes, val_fraction, seed)
    copies = transposed(train, tuple(transpose))
    vocab = Vocabulary.from_texts(list(tunes) + copies)
    train_tokens = vocab.encode(join_tunes(train + copies))
    if len(train_tokens) < seq_length + 1:
        raise AbcjaxError(
            f"{source}: the training text has {len(train_tokens)} characters, fewer than one window of "
            f"data.seq_length + 1 = {seq_length + 1}: use more tunes or a smaller data.seq_length"
        )
    phrases = copying.phrases_of([copying.tune_bars(tune) for tune in train])
    return Dataset(vocab, train_tokens, vocab.encode(join_tunes(val)), len(train), len(val), phrases, len(copies))


def sample_window_starts(key: jax.Array, num_tokens: int, seq_length: int, batch_size: int) -> jax.Array:
    """Random window starts [batch]: a pure function of the key, so batches depend on (seed, step) only."""
    return jax.random.randint(key, (batch_size,), 0, num_tokens - seq_length)


def gather_windows(tokens: jax.Array, starts: jax.Array, seq_length: int) -> tuple[jax.Array, jax.Array]:
    """Cuts [batch, seq_length + 1] windows; returns (inputs, targets), targets shifted by one."""
    windows = jax.vmap(lambda start: jax.lax.dynamic_slice(tokens, (start,), (seq_length + 1,)))(starts)
    return windows[:, :-1], windows[:, 1:]


@dataclasses.dataclass(frozen=True)
class EvalBatches:
    """The validation stream cut into consecutive windows that cover every character once."""

    inputs: np.ndarray  # [num_batches, batch, seq_length] int32
    targets: np.ndarray  # [num_batches, batch, seq_length] int32
    weights: np.ndarray  # [num_batches, batch, seq_length] float32: 1 for real targets, 0 for padding


def make_eval_batches(tokens: np.ndarray, seq_length: int, batch_size: int) -> EvalBatches:
    """Predicts each validation character from the ones before it in its window, exactly once."""
    num_targets = len(tokens) - 1
    rows = round_up(round_up(num_targets, seq_length) // seq_length, batch_size)
    padded = np.zeros(rows * seq_length + 1, np.int32)
    padded[: len(tokens)] = tokens
    position = np.arange(rows * seq_length).reshape(rows, seq_length)
    shape = (rows // batch_size, batch_size, seq_length)
    return EvalBatches(
        inputs=padded[position].reshape(shape),
        targets=padded[position + 1].reshape(shape),
        weights=(position < num_targets).astype(np.float32).reshape(shape),
    )

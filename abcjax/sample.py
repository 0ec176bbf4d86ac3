"""Generating tunes by the thousand: one compiled loop samples a whole chunk of tunes at once.

The single-tune sampling step is `jax.vmap`ped over the tunes of a chunk, and the time loop is a
`lax.while_loop` inside the compiled code, with a finished flag per tune. Under `jax.shard_map`
each device runs its own loop over its share of the chunk and stops when its tunes are done.

Tune i is drawn with key fold_in(PRNGKey(seed), i) and prime i % len(primes), so it depends only
on (checkpoint, seed, i, sampling options): not on how many tunes are asked for, the chunk size or
the device count.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from abcjax.data import END_OF_TUNE, Vocabulary
from abcjax.errors import AbcjaxError
from abcjax.model import CharLstm, make_decoder, zero_carries
from abcjax.parallel import DATA_AXIS, check_divisible, shard_rows

# How the seed notebook began every tune, and the default prime.
DEFAULT_PRIME = "X:1\n"

# (token [] int32, carry) -> (logits [vocab] float32, carry): the model, one tune, one character.
TokensToLogits = Callable[[jax.Array, object], tuple[jax.Array, object]]


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    """How characters are drawn; hashable, so each distinct set compiles once."""

    temperature: float = 1.0
    top_k: int = 0  # keep only the k most likely characters; 0 keeps all
    top_p: float = 1.0  # keep the smallest set of characters whose probability reaches top_p
    max_length: int = 1000  # characters per tune, prime included
    stop_at_end: bool = True  # False: every tune runs to max_length (benchmarks compare like for like)

    def check(self) -> None:
        if not self.temperature > 0:
            raise AbcjaxError(f"--temperature {self.temperature} must be above 0 (1.0 samples the model as it is)")
        if self.top_k < 0:
            raise AbcjaxError(f"--top_k {self.top_k} must be 0 (off) or a positive number of characters")
        if not 0 < self.top_p <= 1:
            raise AbcjaxError(f"--top_p {self.top_p} must be in (0, 1] (1 turns it off)")
        if self.max_length < 2:
            raise AbcjaxError(f"--max_length {self.max_length} must be at least 2")


def filter_logits(logits: jax.Array, options: SamplingOptions) -> jax.Array:
    """Temperature, then top-k, then top-p (nucleus): logits [vocab] -> logits with -inf outside."""
    logits = logits / options.temperature
    if options.top_k:
        kth_largest = jax.lax.top_k(logits, min(options.top_k, logits.shape[-1]))[0][-1]
        logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
    if options.top_p < 1:
        order = jnp.argsort(-logits)
        sorted_probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1))
        # Keep a character if the ones more likely than it do not reach top_p yet.
        keep_sorted = jnp.cumsum(sorted_probs) - sorted_probs < options.top_p
        keep = jnp.zeros_like(keep_sorted).at[order].set(keep_sorted)
        logits = jnp.where(keep, logits, -jnp.inf)
    return logits


@dataclasses.dataclass(frozen=True)
class TuneState:
    """One tune being written; vmapped, every field gains a leading tune axis."""

    tokens: jax.Array  # [max_length] int32: prime, then sampled characters
    prime_length: jax.Array  # [] int32
    position: jax.Array  # [] int32: index of the character fed to the model next
    carry: object  # the model's state after tokens[:position]
    key: jax.Array  # the tune's own key
    log_likelihood: jax.Array  # [] float32: model log-probability of the sampled characters
    ended: jax.Array  # [] bool: wrote its end-of-tune marker
    done: jax.Array  # [] bool: ended, or reached max_length


jax.tree_util.register_dataclass(
    TuneState,
    data_fields=["tokens", "prime_length", "position", "carry", "key", "log_likelihood", "ended", "done"],
    meta_fields=[],
)


def _sample_step(state: TuneState, tokens_to_logits: TokensToLogits, options: SamplingOptions, newline: int):
    """Feeds one character and writes the next: the prime's while priming, else a sampled one."""
    position = state.position
    token = state.tokens[position]
    logits, carry = tokens_to_logits(token, state.carry)
    sampled = jax.random.categorical(jax.random.fold_in(state.key, position), filter_logits(logits, options))
    priming = position + 1 < state.prime_length
    next_token = jnp.where(priming, state.tokens[position + 1], sampled).astype(jnp.int32)
    log_prob = jax.nn.log_softmax(logits)[next_token]
    ended = ~priming & (token == newline) & (next_token == newline) & options.stop_at_end
    advanced = TuneState(
        tokens=state.tokens.at[position + 1].set(next_token),
        prime_length=state.prime_length,
        position=position + 1,
        carry=carry,
        key=state.key,
        log_likelihood=state.log_likelihood + jnp.where(priming, 0.0, log_prob),
        ended=ended,
        done=ended | (position + 2 >= state.tokens.shape[0]),
    )
    return jax.tree_util.tree_map(lambda old, new: jnp.where(state.done, old, new), state, advanced)


def sample_chunk(
    tokens_to_logits: TokensToLogits,
    initial: TuneState,
    options: SamplingOptions,
    newline: int,
) -> TuneState:
    """Runs the vmapped step until every tune of `initial` (leading tune axis) is done."""
    step = jax.vmap(
        functools.partial(_sample_step, tokens_to_logits=tokens_to_logits, options=options, newline=newline)
    )
    return jax.lax.while_loop(lambda state: ~jnp.all(state.done), step, initial)


def initial_states(primes: np.ndarray, prime_lengths: np.ndarray, keys: jax.Array, carry) -> TuneState:
    """The state of tunes before their first character; `carry` is batched like the rest."""
    zeros = jnp.zeros_like(prime_lengths)
    return TuneState(
        tokens=primes,
        prime_length=prime_lengths,
        position=zeros,
        carry=carry,
        key=keys,
        log_likelihood=zeros.astype(jnp.float32),
        ended=zeros.astype(bool),
        done=prime_lengths >= primes.shape[1],
    )


def tune_keys(seed: int, indices: np.ndarray) -> jax.Array:
    """Key of each tune: a function of (seed, index) alone."""
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda index: jax.random.fold_in(base, index))(jnp.asarray(indices, jnp.uint32))


def encode_primes(primes: list[str], vocab: Vocabulary, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Primes -> ([num_primes, max_length] int32 zero-padded, [num_primes] lengths), checked."""
    if not primes:
        raise AbcjaxError("no prime given: the prime file is empty; give one prime per line")
    buffer = np.zeros((len(primes), max_length), np.int32)
    lengths = np.zeros(len(primes), np.int32)
    for row, prime in enumerate(primes):
        if not prime:
            raise AbcjaxError(f"prime {row + 1} is empty: give at least one character, e.g. 'X:1\\n'")
        if len(prime) >= max_length:
            raise AbcjaxError(f"prime {row + 1} has {len(prime)} characters: raise --max_length above that")
        try:
            ids = vocab.encode(prime)
        except AbcjaxError as error:
            raise AbcjaxError(f"prime {row + 1} {prime!r}: {error}") from None
        buffer[row, : len(ids)], lengths[row] = ids, len(ids)
    return buffer, lengths


def one_tune_model(model: CharLstm, params) -> TokensToLogits:
    """The model as the sampler wants it: one character of one tune in, its logits and state out."""
    return make_decoder(model.config, params)


def make_chunk_sampler(model: CharLstm, mesh: Mesh, options: SamplingOptions, newline: int):
    """The compiled `(params, primes, prime_lengths, keys) -> TuneState` for chunks sharded over `mesh`."""

    def device_chunk(params, primes, prime_lengths, keys):
        initial = initial_states(primes, prime_lengths, keys, zero_carries(model.config, prime_lengths))
        return sample_chunk(one_tune_model(model, params), initial, options, newline)

    rows = P(DATA_AXIS)
    sharded = jax.shard_map(device_chunk, mesh=mesh, in_specs=(P(), rows, rows, rows), out_specs=rows)
    return jax.jit(sharded)


@dataclasses.dataclass(frozen=True)
class SampledTune:
    index: int
    text: str  # prime and sampled characters, end-of-tune marker removed
    finished: bool  # reached its end-of-tune marker before max_length
    log_likelihood: float

    @property
    def length(self) -> int:
        """Characters, the prime included."""
        return len(self.text)


def sample_tunes(
    chunk_sampler,
    params,
    vocab: Vocabulary,
    primes: tuple[np.ndarray, np.ndarray],
    seed: int,
    num_tunes: int,
    batch_size: int,
    mesh: Mesh,
    on_chunk: Callable[[int], None] = lambda done: None,
) -> list[SampledTune]:
    """Samples tunes 0..num_tunes-1 in chunks of `batch_size`, in tune order."""
    check_divisible(batch_size, mesh, "--batch_size")
    prime_tokens, prime_lengths = primes
    tunes: list[SampledTune] = []
    for first in range(0, num_tunes, batch_size):
        indices = np.arange(first, first + batch_size)  # the last chunk is padded with extra tunes
        which_prime = indices % len(prime_lengths)
        result = chunk_sampler(
            params,
            shard_rows(prime_tokens[which_prime], mesh),
            shard_rows(prime_lengths[which_prime], mesh),
            shard_rows(np.asarray(tune_keys(seed, indices)), mesh),
        )
        tunes.extend(_decode(result, vocab, indices, num_tunes))
        on_chunk(len(tunes))
    return tunes


def make_sampler(model: CharLstm, vocab: Vocabulary, mesh: Mesh, options: SamplingOptions, primes: list[str]):
    """`(params, seed, num_tunes, batch_size, on_chunk=...) -> tunes`: the compiled sampler, primes checked once."""
    chunk_sampler = make_chunk_sampler(model, mesh, options, vocab.char2idx["\n"])
    encoded = encode_primes(primes, vocab, options.max_length)

    def sampler(params, seed: int, num_tunes: int, batch_size: int, on_chunk=lambda done: None) -> list[SampledTune]:
        return sample_tunes(chunk_sampler, params, vocab, encoded, seed, num_tunes, batch_size, mesh, on_chunk)

    return sampler


def _decode(result: TuneState, vocab: Vocabulary, indices: np.ndarray, num_tunes: int) -> list[SampledTune]:
    tokens, positions = np.asarray(result.tokens), np.asarray(result.position)
    ended, log_likelihood = np.asarray(result.ended), np.asarray(result.log_likelihood)
    tunes = []
    for row, index in enumerate(indices):
        if index >= num_tunes:
            break
        length = int(positions[row]) + 1
        text = vocab.decode(tokens[row, :length])
        text = text.removesuffix(END_OF_TUNE) if ended[row] else text
        tunes.append(SampledTune(int(index), text, bool(ended[row]), float(log_likelihood[row])))
    return tunes

"""Generating tunes by the thousand: one compiled loop writes a whole chunk of tunes.

The single-tune sampling step is `jax.vmap`ped over a batch of slots, and the time loop is a
`lax.while_loop` inside the compiled code. When a slot's tune ends, the slot starts the chunk's
next tune in the same loop, so tunes of very different lengths keep every slot busy. Under
`jax.shard_map` each device runs its own loop over its share of the chunk.

Tune i is drawn with key fold_in(PRNGKey(seed), i) and prime i % len(primes), so it depends only
on (checkpoint, seed, i, sampling options): not on how many tunes are asked for, the batch size or
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

from abcjax import abc_constraint as constraint
from abcjax import abc_grammar as grammar
from abcjax import masked_draw
from abcjax.data import END_OF_TUNE, Vocabulary
from abcjax.errors import AbcjaxError
from abcjax.model import CharLstm, make_decoder, zero_carries
from abcjax.parallel import DATA_AXIS, check_divisible, round_up, shard_rows, to_host

# How the seed notebook began every tune, and the default prime.
DEFAULT_PRIME = "X:1\n"

# Tunes each compiled call writes per slot, about: more calls mean more progress reports, and each
# call ends with its slots draining while the longest tunes finish.
TUNES_PER_SLOT = 8

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
    # With a constraint, the compiled ABC reader of abcjax.abc_constraint masks every character that would
    # make the tune ill-formed or a bar wrong (or, with header_only, only the header's).
    constraint: grammar.Options | None = None

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
class Tunes:
    """The tunes of one call, as the loop writes them: one row per tune."""

    tokens: jax.Array  # [tunes, max_length] int32: prime, then sampled characters
    position: jax.Array  # [tunes] int32: index of the tune's last character
    ended: jax.Array  # [tunes] bool: wrote its end-of-tune marker
    log_likelihood: jax.Array  # [tunes] float32: model log-probability of the sampled characters


@dataclasses.dataclass(frozen=True)
class Slots:
    """The tunes being written right now, one per slot; every field has a leading slot axis."""

    row: jax.Array  # int32: the row of Tunes this slot writes; the number of tunes when idle
    position: jax.Array  # int32: index of the character fed to the model next
    prime_length: jax.Array  # int32
    carry: object  # the model's state after tokens[:position]
    key: jax.Array  # the tune's own key
    log_likelihood: jax.Array  # float32
    reader: constraint.Reader | None  # the ABC read so far, tokens[:position + 1] (None: unconstrained)


for _cls in (Tunes, Slots):
    jax.tree_util.register_dataclass(_cls, data_fields=[f.name for f in dataclasses.fields(_cls)], meta_fields=[])


def categorical(key: jax.Array, logits: jax.Array) -> jax.Array:
    """The same draw as `jax.random.categorical(key, logits)` over logits [vocab], bit for bit.

    Both take the first index of the largest logit + Gumbel noise (of the first NaN, if any, as
    argmax does); this one finds it with a max and a min instead of argmax, whose (value, index)
    reduction XLA:CPU runs slowly: 1,024 default-model tunes of 40 characters sample about 4% faster.
    """
    return masked_draw.first_max(logits + jax.random.gumbel(key, logits.shape, logits.dtype))


def _model_step(token, slot: Slots, tokens_to_logits: TokensToLogits):
    """One slot's model step: feed `token` -> (logits [vocab], new carry, the Gumbel noise of the
    slot's draw: `categorical`'s for its key at this position)."""
    logits, carry = tokens_to_logits(token, slot.carry)
    noise = jax.random.gumbel(jax.random.fold_in(slot.key, slot.position), logits.shape, logits.dtype)
    return logits, carry, noise


def _choose(logits, noise, prepared, sampling, options: SamplingOptions, tables):
    """Each slot's drawn character, from those the constraint allows (all, without one), and whether
    the constraint left a slot nothing to write. See abcjax.masked_draw."""
    filtered = jax.vmap(lambda row: filter_logits(row, options))
    if tables is None:
        return masked_draw.first_max(filtered(logits) + noise), jnp.zeros_like(sampling)
    if options.top_k or options.top_p < 1:  # the filters depend on what the mask leaves
        return masked_draw.draw_all(
            tables, prepared, lambda masks: filtered(jnp.where(masks, logits, -jnp.inf)) + noise
        )
    return masked_draw.draw(tables, prepared, filtered(logits) + noise, sampling)


def _sample_step(state, tokens_to_logits: TokensToLogits, options: SamplingOptions, newline: int, tables):
    """Every active slot writes one character; a slot whose tune finishes takes the next unstarted one.
    A slot the constraint leaves with nothing to write (never, if the reader is right) ends its tune
    there, unfinished."""
    slots, tunes, inputs, next_row = state
    num_tunes, max_length = tunes.tokens.shape
    active = slots.row < num_tunes
    row = jnp.minimum(slots.row, num_tunes - 1)
    token = tunes.tokens[row, slots.position]
    following = tunes.tokens[row, jnp.minimum(slots.position + 1, max_length - 1)]
    logits, carry, noise = jax.vmap(functools.partial(_model_step, tokens_to_logits=tokens_to_logits))(token, slots)
    prepared = None if tables is None else jax.vmap(lambda reader: constraint.prepare(tables, reader))(slots.reader)
    priming = slots.position + 1 < slots.prime_length
    # Idle slots (no tune left for them) are not judged: their readers rest at a tune's end, where
    # every character is refused, and judging their whole vocabulary each step would slow the drain.
    sampled, stuck = _choose(logits, noise, prepared, active & ~priming, options, tables)
    next_token = jnp.where(priming, following, sampled).astype(jnp.int32)
    stuck &= ~priming
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), next_token[:, None], axis=-1)[:, 0]
    log_prob = jnp.where(priming, 0.0, log_prob)  # the model's, with or without a constraint
    ended = ~priming & (token == newline) & (next_token == newline) & options.stop_at_end
    reader = None
    if tables is not None:
        reader = jax.vmap(lambda slot, char: constraint.read(tables, slot, char))(prepared, next_token)
    position = slots.position + 1
    log_likelihood = slots.log_likelihood + log_prob
    finished = active & (ended | stuck | (position + 1 >= max_length))
    write_row = jnp.where(active, slots.row, num_tunes)  # out of range: dropped
    done_row = jnp.where(finished, slots.row, num_tunes)
    tunes = Tunes(
        tokens=tunes.tokens.at[write_row, position].set(next_token, mode="drop"),
        position=tunes.position.at[done_row].set(jnp.where(stuck, slots.position, position), mode="drop"),
        ended=tunes.ended.at[done_row].set(ended, mode="drop"),
        log_likelihood=tunes.log_likelihood.at[done_row].set(log_likelihood, mode="drop"),
    )
    # Finished slots take the next rows in slot order, as long as rows are left.
    new_row = next_row + jnp.cumsum(finished) - 1
    refill = finished & (new_row < num_tunes)
    fresh = jnp.minimum(new_row, num_tunes - 1)
    prime_lengths, keys, blank_carry, readers = inputs

    def restart(fresh_value, value):
        mask = refill.reshape(refill.shape + (1,) * (value.ndim - 1))
        return jnp.where(mask, fresh_value, value)

    slots = Slots(
        row=jnp.where(finished, jnp.where(refill, new_row, num_tunes), slots.row),
        position=restart(0, position),
        prime_length=restart(prime_lengths[fresh], slots.prime_length),
        carry=jax.tree_util.tree_map(restart, blank_carry, carry),
        key=restart(keys[fresh], slots.key),
        log_likelihood=restart(0.0, log_likelihood),
        reader=None
        if tables is None
        else jax.tree_util.tree_map(lambda fresh_reader, value: restart(fresh_reader[fresh], value), readers, reader),
    )
    return slots, tunes, inputs, next_row + finished.sum()


def sample_chunk(
    tokens_to_logits: TokensToLogits,
    primes: jax.Array,
    prime_lengths: jax.Array,
    keys: jax.Array,
    blank_carry,
    options: SamplingOptions,
    newline: int,
    tables: grammar.Tables | None = None,
) -> Tunes:
    """Writes every tune of a chunk (rows of `primes` [tunes, max_length], zero-padded) in one loop.

    `blank_carry` is the model state before the first character for each of the loop's slots (its
    leading axis sets their number; at most one per tune). A slot whose tune ends starts the next
    tune of the chunk at once, so the loop does not wait for the longest tune of a batch while
    most slots sit idle: the chunk takes about (total characters / slots) steps. With `tables` (of
    abcjax.abc_grammar), each slot's ABC reader masks what its tune may write next.
    """
    num_slots = jax.tree_util.tree_leaves(blank_carry)[0].shape[0]
    rows = jnp.arange(num_slots) + jnp.zeros_like(prime_lengths[:num_slots])  # varying like the inputs
    # Every tune's reader after its first character, read once, before the loop: slots that start a
    # tune take theirs.
    readers = None if tables is None else constraint.start(tables, primes[:, 0])
    reader = None if tables is None else jax.tree_util.tree_map(lambda field: field[:num_slots], readers)
    slots = Slots(rows, rows * 0, prime_lengths[:num_slots], blank_carry, keys[:num_slots], rows * 0.0, reader)
    zeros = jnp.zeros_like(prime_lengths)
    tunes = Tunes(primes, zeros, zeros.astype(bool), zeros.astype(jnp.float32))
    state = (slots, tunes, (prime_lengths, keys, blank_carry, readers), rows[0] * 0 + num_slots)
    step = functools.partial(
        _sample_step, tokens_to_logits=tokens_to_logits, options=options, newline=newline, tables=tables
    )
    return jax.lax.while_loop(lambda state: jnp.any(state[0].row < primes.shape[0]), step, state)[1]


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


def make_chunk_sampler(
    model: CharLstm,
    mesh: Mesh,
    options: SamplingOptions,
    newline: int,
    slots: int,
    tables: grammar.Tables | None = None,
):
    """The compiled `(params, primes, prime_lengths, keys) -> Tunes` for chunks sharded over `mesh`.

    Each device writes its share of the chunk's tunes with `slots` / devices slots.
    """
    slots_per_device = slots // mesh.devices.size

    def device_chunk(params, primes, prime_lengths, keys):
        blank_carry = zero_carries(model.config, prime_lengths[:slots_per_device])
        decode = make_decoder(model.config, params)
        return sample_chunk(decode, primes, prime_lengths, keys, blank_carry, options, newline, tables)

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


def start_tunes(
    params,
    vocab: Vocabulary,
    primes: tuple[np.ndarray, np.ndarray],
    seed: int,
    first: int,
    count: int,
    batch_size: int,
    mesh: Mesh,
    chunk_sampler: Callable[[int], Callable],
) -> Callable[[], list[SampledTune]]:
    """Starts tunes first..first+count-1 in one compiled call and returns without waiting for them.

    JAX dispatches the call asynchronously, so the host may work while the devices sample; the
    function returned waits for the tunes and decodes them, in tune order. The call writes a
    multiple of batch_size tunes; the ones past first+count-1 are dropped.
    """
    prime_tokens, prime_lengths = primes
    indices = np.arange(first, first + round_up(count, batch_size))
    which_prime = indices % len(prime_lengths)
    result = chunk_sampler(batch_size)(
        params,
        shard_rows(prime_tokens[which_prime], mesh),
        shard_rows(prime_lengths[which_prime], mesh),
        shard_rows(np.asarray(tune_keys(seed, indices)), mesh),
    )
    return functools.partial(_decode, result, vocab, indices, first + count)


def sample_tunes(
    params,
    vocab: Vocabulary,
    primes: tuple[np.ndarray, np.ndarray],
    seed: int,
    num_tunes: int,
    batch_size: int,
    mesh: Mesh,
    chunk_sampler: Callable[[int], Callable],
    on_chunk: Callable[[list[SampledTune]], None] = lambda chunk: None,
) -> list[SampledTune]:
    """Samples tunes 0..num_tunes-1, `batch_size` at a time, in tune order.

    Each compiled call writes up to TUNES_PER_SLOT x batch_size tunes, handed to `on_chunk` as soon
    as they are decoded (the tunes so far are always tunes 0..k-1); the last is padded to a
    multiple of batch_size with extra tunes, which are dropped.
    """
    check_divisible(batch_size, mesh, "--batch_size")
    tunes: list[SampledTune] = []
    for first in range(0, num_tunes, batch_size * TUNES_PER_SLOT):
        count = min(batch_size * TUNES_PER_SLOT, num_tunes - first)
        chunk = start_tunes(params, vocab, primes, seed, first, count, batch_size, mesh, chunk_sampler)()
        tunes.extend(chunk)
        on_chunk(chunk)
    return tunes


@dataclasses.dataclass(frozen=True)
class Sampler:
    """The compiled sampler of one model, mesh, sampling options and primes (checked once).

    Calling it samples tunes 0..num_tunes-1; `start` starts one compiled call's tunes and returns
    at once, for a caller that works on the tunes of one call while the next is sampled.
    """

    vocab: Vocabulary
    mesh: Mesh
    primes: tuple[np.ndarray, np.ndarray]  # encode_primes's
    chunk_sampler: Callable[[int], Callable]  # slots -> the compiled call

    def __call__(
        self, params, seed: int, num_tunes: int, batch_size: int, on_chunk=lambda chunk: None
    ) -> list[SampledTune]:
        return sample_tunes(
            params, self.vocab, self.primes, seed, num_tunes, batch_size, self.mesh, self.chunk_sampler, on_chunk
        )

    def start(self, params, seed: int, first: int, count: int, batch_size: int) -> Callable[[], list[SampledTune]]:
        """start_tunes: tunes first..first+count-1, started now, decoded when the result is called."""
        return start_tunes(
            params, self.vocab, self.primes, seed, first, count, batch_size, self.mesh, self.chunk_sampler
        )


def make_sampler(
    model: CharLstm, vocab: Vocabulary, mesh: Mesh, options: SamplingOptions, primes: list[str]
) -> Sampler:
    """The compiled sampler; each slot count compiles once, when first used."""
    newline = vocab.char2idx["\n"]
    encoded = encode_primes(primes, vocab, options.max_length)
    tables = None
    if options.constraint is not None:
        tables = grammar.build_tables(vocab.chars, options.constraint)
        constraint.check_primes(tables, primes, encoded)
    chunk_sampler = functools.cache(lambda slots: make_chunk_sampler(model, mesh, options, newline, slots, tables))
    return Sampler(vocab, mesh, encoded, chunk_sampler)


def _decode(result: Tunes, vocab: Vocabulary, indices: np.ndarray, num_tunes: int) -> list[SampledTune]:
    """The chunk's tunes in tune order, on every process: each process writes the rows of its own
    devices, and the other processes' rows are gathered (the sampler's output is never per host)."""
    host = to_host(result)
    tokens, positions, ended, log_likelihood = host.tokens, host.position, host.ended, host.log_likelihood
    tunes = []
    for row, index in enumerate(indices):
        if index >= num_tunes:
            break
        length = int(positions[row]) + 1
        text = vocab.decode(tokens[row, :length])
        text = text.removesuffix(END_OF_TUNE) if ended[row] else text
        tunes.append(SampledTune(int(index), text, bool(ended[row]), float(log_likelihood[row])))
    return tunes

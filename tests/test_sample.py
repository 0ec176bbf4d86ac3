"""The vmap sampler: filters, priming, stopping, and tunes that depend only on (seed, index)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from abcjax.data import Vocabulary
from abcjax.errors import AbcjaxError
from abcjax.model import make_decoder, zero_carries
from abcjax.parallel import make_mesh
from abcjax.sample import (
    SamplingOptions,
    categorical,
    encode_primes,
    filter_logits,
    make_sampler,
    sample_chunk,
    tune_keys,
)
from abcjax.trained import load_trained

VOCAB_SIZE = 7
NEWLINE = 6


def _probabilities(logits, **options):
    return np.asarray(jax.nn.softmax(filter_logits(jnp.log(jnp.asarray(logits)), SamplingOptions(**options))))


def test_categorical_draws_what_jax_random_categorical_draws():
    keys = jax.random.split(jax.random.PRNGKey(3), 2000)
    logits = jax.random.normal(jax.random.PRNGKey(4), (2000, 83)) * 3
    logits = logits.at[:, ::3].set(-jnp.inf)  # as top-k and top-p leave them
    logits = logits.at[0, 7].set(jnp.nan).at[1].set(jnp.nan)  # a diverged model: argmax takes the first NaN
    ours = jax.vmap(categorical)(keys, logits)
    np.testing.assert_array_equal(ours, jax.vmap(jax.random.categorical)(keys, logits))
    assert (ours[0], ours[1]) == (7, 0)
    assert len(np.unique(ours)) > 40 and not np.any(np.asarray(ours[2:]) % 3 == 0)


def test_temperature_sharpens_and_flattens():
    probs = [0.6, 0.3, 0.1]
    np.testing.assert_allclose(_probabilities(probs, temperature=1.0), probs, rtol=1e-6)
    np.testing.assert_allclose(
        _probabilities(probs, temperature=0.5), np.square(probs) / np.square(probs).sum(), rtol=1e-5
    )
    assert _probabilities(probs, temperature=5.0).max() < 0.4


def test_top_k_keeps_the_k_likeliest():
    np.testing.assert_allclose(
        _probabilities([0.1, 0.5, 0.15, 0.25], top_k=2), [0, 0.5 / 0.75, 0, 0.25 / 0.75], rtol=1e-6
    )


@pytest.mark.parametrize(
    "top_p, kept",
    [(0.5, [1]), (0.8, [1, 3]), (0.81, [1, 2, 3]), (1.0, [0, 1, 2, 3])],
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, kept):
    probs = np.array([0.05, 0.5, 0.15, 0.3])
    filtered = _probabilities(probs, top_p=top_p)
    assert list(np.flatnonzero(filtered)) == kept
    np.testing.assert_allclose(filtered[kept], probs[kept] / probs[kept].sum(), rtol=1e-6)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"temperature": 0.0}, "--temperature 0.0 must be above 0"),
        ({"top_k": -1}, "--top_k -1 must be 0"),
        ({"top_p": 1.5}, "--top_p 1.5 must be in (0, 1]"),
        ({"max_length": 1}, "--max_length 1 must be at least 2"),
    ],
)
def test_out_of_range_options_are_errors(options, message):
    with pytest.raises(AbcjaxError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        SamplingOptions(**options).check()


def _run_fake(next_token_of, primes, max_length, slots=None, count_calls=False):
    """Samples with a fake model whose next character is next_token_of(previous), for certain.

    Its carry counts the model calls of the tune in the slot (reset when the slot starts a tune).
    """

    def tokens_to_logits(token, carry):
        return 50.0 * jax.nn.one_hot(next_token_of(token), VOCAB_SIZE), carry + 1

    vocab = Vocabulary(tuple("abcdef\n"))
    buffer, lengths = encode_primes(primes, vocab, max_length)
    blank = jnp.zeros(slots or len(primes))
    keys = tune_keys(0, np.arange(len(primes)))
    return vocab, sample_chunk(
        tokens_to_logits, buffer, lengths, keys, blank, SamplingOptions(max_length=max_length), NEWLINE
    )


def test_fake_model_previous_plus_one_runs_to_max_length():
    vocab, result = _run_fake(lambda token: (token + 1) % VOCAB_SIZE, ["a", "cd"], max_length=12)
    assert vocab.decode(result.tokens[0]) == "abcdef\nabcde"
    assert vocab.decode(result.tokens[1]) == "cdef\nabcdef\n"
    np.testing.assert_array_equal(result.position, [11, 11])
    assert not result.ended.any()


def test_slots_start_the_next_tune_when_theirs_ends():
    """Five tunes of different lengths through two slots come out as through five."""
    ends_after_e = lambda token: jnp.where(token >= 4, NEWLINE, token + 1)  # noqa: E731
    primes = ["a", "d", "e", "ab", "c"]
    _, one_slot_per_tune = _run_fake(ends_after_e, primes, max_length=20)
    vocab, two_slots = _run_fake(ends_after_e, primes, max_length=20, slots=2)
    texts = [vocab.decode(two_slots.tokens[i, : two_slots.position[i] + 1]) for i in range(len(primes))]
    assert texts == ["abcde\n\n", "de\n\n", "e\n\n", "abcde\n\n", "cde\n\n"]
    for field in ("tokens", "position", "ended", "log_likelihood"):
        np.testing.assert_array_equal(getattr(two_slots, field), getattr(one_slot_per_tune, field))


def test_each_tune_stops_at_its_own_end_marker():
    # After "e" comes a newline, and after a newline another: "...e\n\n" ends the tune.
    vocab, result = _run_fake(lambda token: jnp.where(token >= 4, NEWLINE, token + 1), ["a", "d"], max_length=20)
    assert vocab.decode(result.tokens[0, : result.position[0] + 1]) == "abcde\n\n"
    assert vocab.decode(result.tokens[1, : result.position[1] + 1]) == "de\n\n"
    assert result.ended.all()


def test_the_prime_is_fed_whole_even_when_the_model_disagrees():
    vocab, result = _run_fake(lambda token: jnp.full_like(token, NEWLINE), ["a\nb"], max_length=8)
    assert vocab.decode(result.tokens[0, : result.position[0] + 1]) == "a\nb\n\n"
    assert result.log_likelihood[0] == pytest.approx(0.0, abs=1e-6)  # only sampled characters count


def test_prime_with_unknown_characters_lists_the_vocabulary():
    with pytest.raises(AbcjaxError, match="prime 2 'X:Ü': characters 'Ü' are not in the model's vocabulary"):
        encode_primes(["ab", "X:Ü"], Vocabulary(tuple("X:ab\n")), 10)


def _slow_reference(trained, seed, index, prime, max_length):
    """The seed notebook's way: one tune, one character per Python iteration, the same keys."""
    step = jax.jit(make_decoder(trained.model.config, trained.params))
    key = tune_keys(seed, np.array([index]))[0]
    carry = jax.tree_util.tree_map(lambda x: x[0], zero_carries(trained.model.config, jnp.zeros(1)))
    tokens = list(trained.vocab.encode(prime))
    for position in range(max_length - 1):
        logits, carry = step(jnp.int32(tokens[position]), carry)
        if position + 1 < len(prime):
            continue
        token = int(jax.random.categorical(jax.random.fold_in(key, position), logits))
        tokens.append(token)
        if tokens[-2:] == [trained.vocab.char2idx["\n"]] * 2:
            break
    return trained.vocab.decode(tokens)


def _sample(trained, mesh, num_tunes, batch_size, primes=("X:1\n",), max_length=60, seed=3):
    options = SamplingOptions(max_length=max_length)
    sampler = make_sampler(trained.model, trained.vocab, mesh, options, list(primes))
    return sampler(trained.params, seed, num_tunes, batch_size)


def test_vmap_sampler_equals_the_slow_reference_loop(tiny_workdir):
    mesh = make_mesh()
    trained = load_trained(tiny_workdir, "latest", mesh)
    primes = ("X:1\n", "X:1\nM:6/8\nK:D\n")
    tunes = _sample(trained, mesh, num_tunes=4, batch_size=4, primes=primes)
    for tune in tunes:
        expected = _slow_reference(trained, 3, tune.index, primes[tune.index % 2], 60)
        assert tune.text == expected.removesuffix("\n\n")
        assert tune.finished == expected.endswith("\n\n")
        assert tune.text.startswith(primes[tune.index % 2])


def test_tunes_do_not_depend_on_count_or_chunk_size(tiny_workdir):
    mesh = make_mesh()
    trained = load_trained(tiny_workdir, "latest", mesh)
    many = _sample(trained, mesh, num_tunes=10, batch_size=8)
    few = _sample(trained, mesh, num_tunes=3, batch_size=2)
    assert [tune.index for tune in many] == list(range(10))
    assert few == many[:3]
    assert len({tune.text for tune in many}) > 1


def test_without_stop_at_end_every_tune_runs_to_max_length():
    def tokens_to_logits(token, carry):
        return 50.0 * jax.nn.one_hot(NEWLINE, VOCAB_SIZE), carry

    vocab = Vocabulary(tuple("abcdef\n"))
    buffer, lengths = encode_primes(["a"], vocab, 9)
    options = SamplingOptions(max_length=9, stop_at_end=False)
    result = sample_chunk(tokens_to_logits, buffer, lengths, tune_keys(0, np.arange(1)), jnp.zeros(1), options, NEWLINE)
    assert vocab.decode(result.tokens[0]) == "a" + "\n" * 8
    assert int(result.position[0]) == 8 and not result.ended[0]

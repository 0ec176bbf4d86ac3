"""The LSTM language model: the seed's size, the cell's arithmetic, and carrying state across calls."""

import jax
import jax.numpy as jnp
import numpy as np

from abcjax.config import load_config
from abcjax.model import CharLstm, ModelConfig, count_params, init_params, row_dropout
from conftest import REPO


def _model(vocab=11, embed=6, hidden=8, layers=2, dtype="float32"):
    return CharLstm(ModelConfig(vocab, embed, hidden, layers, dropout=0.0, dtype=jnp.dtype(dtype)))


def test_default_config_is_the_seed_model_with_5353299_parameters():
    config = load_config(REPO / "configs" / "default.py")
    model = CharLstm(ModelConfig.from_config(config, vocab_size=83))
    shapes = jax.eval_shape(lambda key: init_params(model, key), jax.random.PRNGKey(0))
    assert count_params(shapes) == 5_353_299


def _reference_lstm(params, tokens):
    """The textbook LSTM, one time step and one layer at a time, in NumPy float64."""
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
    x = p["embed"]["embedding"][tokens]
    layer = 0
    while f"lstm_{layer}" in p:
        w = p[f"lstm_{layer}"]
        hidden = w["recurrent_kernel"].shape[0]
        h, c, outputs = np.zeros((tokens.shape[0], hidden)), np.zeros((tokens.shape[0], hidden)), []
        for t in range(tokens.shape[1]):
            z = x[:, t] @ w["input_kernel"] + h @ w["recurrent_kernel"] + w["bias"]
            i, f, g, o = np.split(z, 4, axis=-1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            outputs.append(h)
        x = np.stack(outputs, axis=1)
        layer += 1
    return x @ p["logits"]["kernel"] + p["logits"]["bias"]


def test_logits_match_a_plain_step_by_step_lstm():
    model = _model()
    params = init_params(model, jax.random.PRNGKey(1))
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(2), (3, 9), 0, 11))
    logits, _ = model.apply({"params": params}, tokens)
    np.testing.assert_allclose(np.asarray(logits), _reference_lstm(params, tokens), rtol=1e-5, atol=1e-5)


def test_forget_gate_bias_starts_at_one():
    params = init_params(_model(hidden=4, layers=1), jax.random.PRNGKey(0))
    np.testing.assert_array_equal(params["lstm_0"]["bias"], [0] * 4 + [1] * 4 + [0] * 8)


def test_passing_the_carry_back_continues_the_sequence():
    model = _model()
    params = init_params(model, jax.random.PRNGKey(3))
    tokens = jax.random.randint(jax.random.PRNGKey(4), (2, 10), 0, 11)
    whole, _ = model.apply({"params": params}, tokens)
    first, carries = model.apply({"params": params}, tokens[:, :6])
    second, _ = model.apply({"params": params}, tokens[:, 6:], carries)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-6, atol=1e-6)


def test_bfloat16_compute_keeps_float32_parameters_and_logits():
    model = _model(dtype="bfloat16")
    params = init_params(model, jax.random.PRNGKey(0))
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}
    logits, carries = model.apply({"params": params}, jnp.zeros((2, 3), jnp.int32))
    assert logits.dtype == jnp.float32 and carries[0][0].dtype == jnp.float32
    reference, _ = _model().apply({"params": params}, jnp.zeros((2, 3), jnp.int32))
    np.testing.assert_allclose(logits, reference, atol=0.05)


def test_row_dropout_masks_depend_on_the_row_key_alone_and_keep_the_scale():
    x = jnp.ones((50, 4, 64))  # [time, batch, features]
    keys = jax.vmap(lambda row: jax.random.fold_in(jax.random.PRNGKey(0), row))(jnp.arange(4))
    dropped = row_dropout(x, keys, layer=0, rate=0.25)
    # Rows 2 and 3 alone (as on the second of two devices) get the masks they get in the full batch.
    np.testing.assert_array_equal(row_dropout(x[:, 2:], keys[2:], layer=0, rate=0.25), dropped[:, 2:])
    np.testing.assert_allclose(np.unique(np.asarray(dropped)), [0.0, 1 / 0.75], rtol=1e-6)  # kept units scaled up
    assert abs(float((dropped == 0).mean()) - 0.25) < 0.02
    assert not np.array_equal(dropped[:, 0], dropped[:, 1])  # each row its own mask
    assert not np.array_equal(row_dropout(x, keys, layer=1, rate=0.25), dropped)  # and each layer


def test_dropout_acts_only_when_given_keys():
    model = CharLstm(ModelConfig(11, 6, 8, 2, dropout=0.5, dtype=jnp.dtype("float32")))
    params = init_params(model, jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 7), 0, 11)
    keys = jax.vmap(lambda row: jax.random.fold_in(jax.random.PRNGKey(2), row))(jnp.arange(3))
    plain, _ = model.apply({"params": params}, tokens)
    without_dropout, _ = _model().apply({"params": params}, tokens)
    with_dropout, _ = model.apply({"params": params}, tokens, dropout_keys=keys)
    np.testing.assert_array_equal(plain, without_dropout)  # evaluation and sampling: no dropout
    assert np.abs(np.asarray(with_dropout - plain)).max() > 1e-3

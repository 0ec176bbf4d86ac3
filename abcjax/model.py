"""The character language model: Embedding -> stacked LSTM (a scan over time) -> Dense(vocabulary).

The LSTM is the Keras cell of the seed exercise (gates i, f, c, o; one bias; forget-gate bias 1;
orthogonal recurrent kernel), so the default config has the seed's 5,353,299 parameters. The input
projection of all time steps is one large matmul outside the scan; only the recurrent matmul runs
per step, by the implementation `model.lstm` names (abcjax/lstm.py), or the whole layer runs in
cuDNN on NVIDIA GPUs (abcjax/cudnn_lstm.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from abcjax.cudnn_lstm import cudnn_lstm
from abcjax.lstm import LstmCarry, decoder_cell, run_lstm


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the model's shape and arithmetic, read once from the config."""

    vocab_size: int
    embed_dim: int
    hidden_size: int
    num_layers: int
    dropout: float
    dtype: Any
    lstm: str = "fused"  # which implementation of the recurrence (abcjax.lstm.IMPLEMENTATIONS)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, vocab_size: int) -> ModelConfig:
        model = config.model
        return cls(
            vocab_size=vocab_size,
            embed_dim=model.embed_dim,
            hidden_size=model.hidden_size,
            num_layers=model.num_layers,
            dropout=model.dropout,
            dtype=jnp.dtype(model.dtype),
            # Checkpoints from before the switch existed name no implementation.
            lstm=model.get("lstm", "fused"),
        )


def _lstm_bias_init(key, shape, dtype=jnp.float32):
    """Zeros, except 1 on the forget gate, so early training does not forget everything."""
    hidden = shape[0] // 4
    return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(1.0)


def input_projection(rows: jax.Array, input_kernel: jax.Array, bias: jax.Array, dtype: Any) -> jax.Array:
    """[..., features] -> gate inputs [..., 4*hidden]: rows @ W_in + b in the compute dtype."""
    return jnp.dot(rows.astype(dtype), input_kernel.astype(dtype)) + bias.astype(dtype)


class LstmLayer(nn.Module):
    """One LSTM layer over a whole sequence, time-major."""

    hidden_size: int
    dtype: Any = jnp.float32
    implementation: str = "fused"

    @nn.compact
    def __call__(
        self, inputs: jax.Array, carry: LstmCarry | None = None, embedding: jax.Array | None = None
    ) -> tuple[jax.Array, LstmCarry]:
        """inputs [time, batch, features] -> (outputs [time, batch, hidden], final carry).

        Given the `embedding` table [vocab, features], inputs are token ids [time, batch] instead:
        the layer projects the vocabulary's rows once and looks each token's gate inputs up, the
        same numbers as embedding and then projecting every position, at a fraction of the cost
        (vocab rows instead of time x batch). Without a carry the sequence starts from zeros.
        """
        gates = 4 * self.hidden_size
        features = (inputs if embedding is None else embedding).shape[-1]
        input_kernel = self.param("input_kernel", nn.initializers.glorot_uniform(), (features, gates))
        recurrent_kernel = self.param("recurrent_kernel", nn.initializers.orthogonal(), (self.hidden_size, gates))
        bias = self.param("bias", _lstm_bias_init, (gates,))
        if carry is None:
            carry = zero_carry(inputs[0] if embedding is not None else inputs[0, :, 0], self.hidden_size)
        rows = inputs if embedding is None else embedding
        if self.implementation == "cudnn":  # cuDNN projects the inputs itself
            layer_inputs = rows if embedding is None else rows[inputs]  # [time, batch, features]
            carry, outputs = cudnn_lstm(layer_inputs, input_kernel, recurrent_kernel, bias, carry)
            return outputs, carry
        gate_inputs = input_projection(rows, input_kernel, bias, self.dtype)
        if embedding is not None:
            gate_inputs = gate_inputs[inputs]  # [time, batch, 4*hidden]
        carry, outputs = run_lstm(self.implementation, recurrent_kernel, gate_inputs, carry, self.dtype)
        return outputs, carry


class CharLstm(nn.Module):
    """Predicts the next character at every position of a batch of character sequences."""

    config: ModelConfig

    @nn.compact
    def __call__(
        self, tokens: jax.Array, carries: tuple[LstmCarry, ...] | None = None, dropout_keys: jax.Array | None = None
    ) -> tuple[jax.Array, tuple[LstmCarry, ...]]:
        """tokens [batch, time] -> (logits [batch, time, vocab] float32, carry of each layer).

        Passing the returned carries back in continues the sequences. Inside, everything runs
        time-major ([time, batch, ...]), the layout of the scan, so that only the small token and
        logit arrays are transposed. The first layer looks its inputs up in the embedding table.
        `dropout_keys` (one PRNG key per row, in training) turns dropout on (see `row_dropout`).
        """
        config = self.config
        carries = carries or (None,) * config.num_layers
        embedding = nn.Embed(config.vocab_size, config.embed_dim, name="embed").embedding
        x, new_carries = tokens.T, []
        for layer in range(config.num_layers):
            lstm = LstmLayer(config.hidden_size, config.dtype, config.lstm, name=f"lstm_{layer}")
            x, carry = lstm(x, carries[layer], embedding if layer == 0 else None)
            new_carries.append(carry)
            if dropout_keys is not None and config.dropout > 0:
                x = row_dropout(x, dropout_keys, layer, config.dropout)
        logits = nn.Dense(config.vocab_size, dtype=config.dtype, name="logits")(x)
        return logits.astype(jnp.float32).transpose(1, 0, 2), tuple(new_carries)


def row_dropout(x: jax.Array, row_keys: jax.Array, layer: int, rate: float) -> jax.Array:
    """Inverted dropout on x [time, batch, features], row b's mask drawn from (row_keys[b], layer) alone.

    A row gets the same mask whichever device it runs on and whichever rows share that device, so
    a run drops the same units on 1 device as on 8 (one key for a device's whole block would not).
    """
    shape = (x.shape[0], x.shape[2])
    keep = jax.vmap(lambda key: jax.random.bernoulli(jax.random.fold_in(key, layer), 1.0 - rate, shape))(row_keys)
    return jnp.where(keep.transpose(1, 0, 2), x / (1.0 - rate), 0.0).astype(x.dtype)


def make_decoder(config: ModelConfig, params) -> Callable:
    """The model one character at a time, for sampling: (token [], carries) -> (logits [vocab] float32, carries).

    The same arithmetic as CharLstm, arranged for one step of one sequence (the sampler vmaps it
    over tunes): the first layer's gate inputs of every character of the vocabulary are computed
    once, when the decoder is made, so each step costs only the recurrent matmuls and the logits.
    """
    dtype = config.dtype
    layers = [params[f"lstm_{layer}"] for layer in range(config.num_layers)]
    first_layer_table = input_projection(
        params["embed"]["embedding"], layers[0]["input_kernel"], layers[0]["bias"], dtype
    )
    kernels = [layer["recurrent_kernel"].astype(dtype) for layer in layers]
    logits_kernel, logits_bias = params["logits"]["kernel"].astype(dtype), params["logits"]["bias"].astype(dtype)

    def decode(token, carries):
        new_carries, hidden = [], None
        for layer, kernel, carry in zip(layers, kernels, carries, strict=True):
            if hidden is None:
                gate_inputs = first_layer_table[token]
            else:
                gate_inputs = input_projection(hidden, layer["input_kernel"], layer["bias"], dtype)
            carry, hidden = decoder_cell(carry, gate_inputs, kernel)
            new_carries.append(carry)
        logits = jnp.dot(hidden.astype(dtype), logits_kernel) + logits_bias
        return logits.astype(jnp.float32), tuple(new_carries)

    return decode


def zero_carries(config: ModelConfig, like: jax.Array) -> tuple[LstmCarry, ...]:
    """The state before the first character of every layer, for one row per entry of `like` [rows]."""
    return tuple(zero_carry(like, config.hidden_size) for _ in range(config.num_layers))


def zero_carry(like: jax.Array, hidden_size: int) -> LstmCarry:
    """One layer's state before the first character, for one row per entry of `like` [rows].

    It is built from `like` so that it has the same sharding type: under shard_map, a loop whose
    carry starts as a plain constant and comes back device-varying does not type-check.
    """
    zeros = jnp.zeros_like(like, jnp.float32)[:, None] + jnp.zeros((hidden_size,), jnp.float32)
    return zeros, zeros


def init_params(model: CharLstm, key: jax.Array) -> dict:
    """Float32 parameters for `model`, from `key`."""
    return model.init(key, jnp.zeros((1, 1), jnp.int32))["params"]


def count_params(params) -> int:
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))

"""The character language model: Embedding -> stacked LSTM (a scan over time) -> Dense(vocabulary).

The LSTM is the Keras cell of the seed exercise (gates i, f, c, o; one bias; forget-gate bias 1;
orthogonal recurrent kernel), so the default config has the seed's 5,353,299 parameters. The input
projection of all time steps is one large matmul outside the scan; only the recurrent matmul runs
per step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

LstmCarry = tuple[jax.Array, jax.Array]  # (cell [batch, hidden] float32, hidden [batch, hidden] float32)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the model's shape and arithmetic, read once from the config."""

    vocab_size: int
    embed_dim: int
    hidden_size: int
    num_layers: int
    dropout: float
    dtype: Any

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
        )


def _lstm_bias_init(key, shape, dtype=jnp.float32):
    """Zeros, except 1 on the forget gate, so early training does not forget everything."""
    hidden = shape[0] // 4
    return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(1.0)


def lstm_cell(carry: LstmCarry, gate_inputs: jax.Array, recurrent_kernel: jax.Array) -> tuple[LstmCarry, jax.Array]:
    """One time step. gate_inputs [batch, 4*hidden] already holds x @ W_in + b."""
    cell, hidden = carry
    gates = gate_inputs + jnp.dot(hidden.astype(recurrent_kernel.dtype), recurrent_kernel)
    gates = gates.astype(jnp.float32)
    input_gate, forget_gate, candidate, output_gate = jnp.split(gates, 4, axis=-1)
    cell = jax.nn.sigmoid(forget_gate) * cell + jax.nn.sigmoid(input_gate) * jnp.tanh(candidate)
    hidden = jax.nn.sigmoid(output_gate) * jnp.tanh(cell)
    return (cell, hidden), hidden


class LstmLayer(nn.Module):
    """One LSTM layer over a whole sequence."""

    hidden_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array, carry: LstmCarry | None = None) -> tuple[jax.Array, LstmCarry]:
        """inputs [batch, time, features] -> (outputs [batch, time, hidden], final carry).

        Without a carry the sequence starts from zeros.
        """
        gates = 4 * self.hidden_size
        input_kernel = self.param("input_kernel", nn.initializers.glorot_uniform(), (inputs.shape[-1], gates))
        recurrent_kernel = self.param("recurrent_kernel", nn.initializers.orthogonal(), (self.hidden_size, gates))
        bias = self.param("bias", _lstm_bias_init, (gates,))
        # One matmul for every time step, laid out time-major for the scan: [time, batch, 4*hidden].
        gate_inputs = jnp.einsum("btf,fg->tbg", inputs.astype(self.dtype), input_kernel.astype(self.dtype))
        gate_inputs = gate_inputs + bias.astype(self.dtype)
        if carry is None:
            # zeros_like keeps the inputs' sharding type, which a scan under shard_map requires.
            zeros = jnp.zeros_like(gate_inputs[0, :, : self.hidden_size], jnp.float32)
            carry = (zeros, zeros)
        kernel = recurrent_kernel.astype(self.dtype)
        carry, outputs = jax.lax.scan(lambda c, x: lstm_cell(c, x, kernel), carry, gate_inputs)
        return outputs.transpose(1, 0, 2), carry


class CharLstm(nn.Module):
    """Predicts the next character at every position of a batch of character sequences."""

    config: ModelConfig

    @nn.compact
    def __call__(
        self, tokens: jax.Array, carries: tuple[LstmCarry, ...] | None = None, deterministic: bool = True
    ) -> tuple[jax.Array, tuple[LstmCarry, ...]]:
        """tokens [batch, time] -> (logits [batch, time, vocab] float32, carry of each layer).

        Passing the returned carries back in continues the sequences: the sampler feeds one
        character at a time this way.
        """
        config = self.config
        carries = carries or (None,) * config.num_layers
        x = nn.Embed(config.vocab_size, config.embed_dim, name="embed")(tokens)
        new_carries = []
        for layer in range(config.num_layers):
            x, carry = LstmLayer(config.hidden_size, config.dtype, name=f"lstm_{layer}")(x, carries[layer])
            new_carries.append(carry)
            x = nn.Dropout(config.dropout)(x, deterministic=deterministic)
        logits = nn.Dense(config.vocab_size, dtype=config.dtype, name="logits")(x)
        return logits.astype(jnp.float32), tuple(new_carries)


def zero_carries(config: ModelConfig, like: jax.Array) -> tuple[LstmCarry, ...]:
    """The state before the first character, for one row per entry of `like` [rows].

    It is built from `like` so that it has the same sharding type: under shard_map, a loop whose
    carry starts as a plain constant and comes back device-varying does not type-check.
    """
    zeros = jnp.zeros_like(like, jnp.float32)[:, None] + jnp.zeros((config.hidden_size,), jnp.float32)
    return tuple((zeros, zeros) for _ in range(config.num_layers))


def init_params(model: CharLstm, key: jax.Array) -> dict:
    """Float32 parameters for `model`, from `key`."""
    return model.init(key, jnp.zeros((1, 1), jnp.int32))["params"]


def count_params(params) -> int:
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))

"""The LSTM recurrence on NVIDIA GPUs through cuDNN (`jax.experimental.rnn`), for `model.lstm=cudnn`.

cuDNN runs the whole sequence, forward and backward, in its own kernels: the input projection of
every step, the recurrence and the weight gradients. It takes the layer's parameters as one flat
float32 vector in its own layout; `cudnn_weights` packs abcjax's (the same gates i, f, g, o, so
the kernels are only transposed, and the one bias goes where cuDNN adds its input bias, with zeros
for its second, recurrent bias). The parameters stay abcjax's, so a checkpoint trained this way
resumes with the other implementations, and the other way round, and samples anywhere
(`portable_implementation`).

cuDNN's LSTM in JAX computes in float32 only (TF32 on the tensor cores unless matmul precision is
"highest"), and there is no cuDNN off NVIDIA GPUs: `check_runs_here` says so before a run starts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import rnn

from abcjax.errors import AbcjaxError
from abcjax.lstm import LstmCarry
from abcjax.shard_types import as_varying, typed_alike, varying_axes


def cudnn_available() -> bool:
    """Whether JAX's default devices are NVIDIA GPUs, where jax.experimental.rnn runs on cuDNN."""
    if jax.default_backend() != "gpu":
        return False
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:  # a GPU, but not CUDA's (ROCm)
        return False


# JAX_DEFAULT_MATMUL_PRECISION settings under which JAX's cuDNN LSTM runs: TF32 or full float32.
CUDNN_PRECISIONS = (None, "tensorfloat32", "high", "float32", "highest")


def check_runs_here(implementation: str) -> None:
    """Before a run: a one-line error if `implementation` is cuDNN and cuDNN cannot run it here."""
    if implementation != "cudnn":
        return
    if not cudnn_available():
        raise AbcjaxError(
            f"model.lstm=cudnn needs an NVIDIA GPU, and JAX runs on {jax.default_backend()} here: "
            "use --config.model.lstm=fused (the same model and results)"
        )
    precision = jax.config.jax_default_matmul_precision
    if precision not in CUDNN_PRECISIONS:  # JAX's cuDNN LSTM would raise, or silently use TF32
        raise AbcjaxError(
            f"model.lstm=cudnn computes in TF32 or float32, and JAX's default matmul precision is {precision}: "
            "unset JAX_DEFAULT_MATMUL_PRECISION, or set it to tensorfloat32 or highest"
        )


def portable_implementation(implementation: str) -> str:
    """The implementation a saved model is rebuilt with here: its own, or off NVIDIA GPUs the fused
    LSTM in place of cuDNN (the same arithmetic). Even only tracing cuDNN's LSTM, as restoring a
    checkpoint does to learn its shapes, asks cuDNN for workspace sizes, so it needs the GPU."""
    return "fused" if implementation == "cudnn" and not cudnn_available() else implementation


def cudnn_weights(input_kernel: jax.Array, recurrent_kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """abcjax's parameters of one layer as cuDNN's flat float32 vector: W_ih [4*hidden, features],
    W_hh [4*hidden, hidden], b_ih [4*hidden], b_hh [4*hidden], each flattened, in that order."""
    parts = (input_kernel.T, recurrent_kernel.T, bias, jnp.zeros_like(bias))
    return jnp.concatenate([part.astype(jnp.float32).reshape(-1) for part in parts])


def cudnn_lstm(
    inputs: jax.Array,
    input_kernel: jax.Array,
    recurrent_kernel: jax.Array,
    bias: jax.Array,
    carry: LstmCarry,
) -> tuple[LstmCarry, jax.Array]:
    """inputs [time, batch, features] -> (final carry, hidden states [time, batch, hidden]), float32.

    Unlike abcjax.lstm's implementations this takes the layer's inputs, not its gate inputs: cuDNN
    projects them itself.
    """
    cell, hidden = carry
    operands = (
        inputs.astype(jnp.float32).transpose(1, 0, 2),  # cuDNN's batch-first layout
        hidden[None],  # [layers, batch, hidden]
        cell[None],
        cudnn_weights(input_kernel, recurrent_kernel, bias),
    )
    # cuDNN returns each device's own gradient of every operand. Typing them all as varying as the
    # most varying one makes JAX sum over the devices the gradient of any that is the same on every
    # device (the transpose of this cast), as it would for any other computation.
    outputs, final_hidden, final_cell = _cudnn_call(*typed_alike(*operands))
    return (final_cell[0], final_hidden[0]), outputs.transpose(1, 0, 2)


@jax.custom_vjp
def _cudnn_call(x, h_0, c_0, weights):
    """`jax.experimental.rnn.lstm` of one layer over whole sequences, its output typed for shard_map.

    rnn.lstm's primitive gives its output no shard_map type, so JAX would take each device's
    hidden states for values equal on every device, and where they meet per-device values insert a
    broadcast whose transpose sums their gradients over the devices: each device would then
    backpropagate the sum of all devices' output gradients through its own activations. This VJP
    calls rnn's two halves itself and types the output as its inputs are typed.
    """
    return _cudnn_forward(x, h_0, c_0, weights)[0]


def _sizes(x, h_0) -> dict:
    return dict(input_size=x.shape[2], hidden_size=h_0.shape[2], num_layers=1, dropout=0.0, bidirectional=False)


def _cudnn_forward(x, h_0, c_0, weights):
    lengths = jnp.full(x.shape[:1], x.shape[1], jnp.int32)  # every sequence runs the whole window
    (y, h_n, c_n), residuals = rnn.lstm_fwd(x, h_0, c_0, weights, lengths, **_sizes(x, h_0), precision=None)
    return (as_varying(y, varying_axes(x)), h_n, c_n), residuals


def _cudnn_backward(residuals, cotangents):
    x, h_0 = residuals[:2]
    d_x, d_h_0, d_c_0, d_weights, _ = rnn.lstm_bwd(
        **_sizes(x, h_0), precision=None, residuals=residuals, gradients=cotangents
    )
    return d_x, d_h_0, d_c_0, d_weights


_cudnn_call.defvjp(_cudnn_forward, _cudnn_backward)

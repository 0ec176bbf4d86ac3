"""The LSTM recurrence over a whole sequence, in two implementations of the same arithmetic.

`reference_lstm` is the textbook scan of `lstm_cell`, differentiated by JAX. Its backward pass adds
a [hidden, 4*hidden] recurrent-weight gradient inside every reverse step: a thin matmul (its inner
dimension is the batch) plus a read and write of the whole 16 MB accumulator, per character.

`fused_lstm` computes the same forward pass but has its own backward pass (a custom VJP): the
reverse scan only carries the gradient through time (one [batch, 4*hidden] x [4*hidden, hidden]
matmul per step) and keeps each step's gate gradients; the recurrent-weight gradient is then one
large matmul over all steps at once, which runs near the machine's matmul peak. On a 2-core CPU
this makes the backward pass of the default model's LSTM about 2.5x faster. On the CPU, each step's
gate arithmetic (forward and backward) is one call of abcjax's compiled kernels
(abcjax/cpu_kernels.py) where they are built, and XLA's elsewhere: the same arithmetic either way.

Both take gate inputs already holding x @ W_in + b (one large matmul outside the scan, laid out
[time, batch, 4*hidden]) and return (final carry, hidden states [time, batch, hidden]). Gates are
ordered i, f, g (candidate), o, as in Keras; the cell and hidden state stay float32 whatever the
matmul dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from abcjax import cpu_kernels
from abcjax.shard_types import typed_alike

LstmCarry = tuple[jax.Array, jax.Array]  # (cell [batch, hidden] float32, hidden [batch, hidden] float32)


def lstm_cell(carry: LstmCarry, gate_inputs: jax.Array, recurrent_kernel: jax.Array) -> tuple[LstmCarry, jax.Array]:
    """One time step. gate_inputs [batch, 4*hidden] already holds x @ W_in + b."""
    cell, hidden = carry
    gates = _pre_activations(hidden, gate_inputs, recurrent_kernel)
    input_gate, forget_gate, candidate, output_gate = jnp.split(gates, 4, axis=-1)
    cell = jax.nn.sigmoid(forget_gate) * cell + jax.nn.sigmoid(input_gate) * jnp.tanh(candidate)
    hidden = jax.nn.sigmoid(output_gate) * jnp.tanh(cell)
    return (cell, hidden), hidden


def _pre_activations(hidden: jax.Array, gate_inputs: jax.Array, recurrent_kernel: jax.Array) -> jax.Array:
    """x @ W_in + b + h @ W, float32 [batch, 4*hidden]."""
    # A float32 result also keeps bfloat16 matmuls on the CPU's native bf16 -> f32 kernels.
    recurrent = jnp.dot(hidden.astype(recurrent_kernel.dtype), recurrent_kernel, preferred_element_type=jnp.float32)
    return gate_inputs.astype(jnp.float32) + recurrent


def decoder_cell(carry: LstmCarry, gate_inputs: jax.Array, recurrent_kernel: jax.Array) -> tuple[LstmCarry, jax.Array]:
    """`lstm_cell`, with the gate arithmetic in the compiled CPU kernel where it is in use: the
    sampler's step (model.make_decoder)."""
    return _on_cpu_by_kernels(_cell_with_kernels, lstm_cell, carry, gate_inputs, recurrent_kernel)


def _cell_with_kernels(carry: LstmCarry, gate_inputs: jax.Array, recurrent_kernel: jax.Array):
    cell, hidden = carry
    cell, hidden = cpu_kernels.cell_step(_pre_activations(hidden, gate_inputs, recurrent_kernel), cell)
    return (cell, hidden), hidden


def reference_lstm(
    recurrent_kernel: jax.Array, gate_inputs: jax.Array, carry: LstmCarry, dtype: Any = jnp.float32
) -> tuple[LstmCarry, jax.Array]:
    """The plain scan of `lstm_cell`: the arithmetic every faster path is checked against."""
    kernel = recurrent_kernel.astype(dtype)
    return jax.lax.scan(lambda c, x: lstm_cell(c, x, kernel), carry, gate_inputs)


def run_lstm(
    implementation: str, recurrent_kernel: jax.Array, gate_inputs: jax.Array, carry: LstmCarry, dtype: Any
) -> tuple[LstmCarry, jax.Array]:
    """The recurrence by the named implementation: "fused" or "reference" (config.LSTM_IMPLEMENTATIONS)."""
    if implementation == "fused":
        return fused_lstm(recurrent_kernel, gate_inputs.astype(dtype), carry, jnp.dtype(dtype))
    if implementation == "reference":
        return reference_lstm(recurrent_kernel, gate_inputs, carry, dtype)
    raise ValueError(f"unknown LSTM implementation {implementation!r}")


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def fused_lstm(
    recurrent_kernel: jax.Array, gate_inputs: jax.Array, carry: LstmCarry, dtype: Any
) -> tuple[LstmCarry, jax.Array]:
    """Same results as `reference_lstm`, with the backward pass described in the module docstring.

    gate_inputs must already be in `dtype` (run_lstm sees to it).
    """
    final_carry, outputs, _ = _forward_saving_gates(recurrent_kernel, gate_inputs, carry, dtype)
    return final_carry, outputs


def _forward_saving_gates(recurrent_kernel, gate_inputs, carry, dtype):
    """The forward scan, also returning what the backward pass needs: each step's gate activations,
    cells and incoming hidden states.

    Inside, the state is feature-major ([hidden, batch]): W^T [4*hidden, hidden] @ h [hidden, batch]
    runs about 15% faster on CPU than h @ W at batch 32, and splitting the gates is then a split
    of contiguous rows. Outputs and the final carry are batch-major like the inputs.

    Two layouts spare whole-array copies (together about 3% of the default model's LSTM forward
    and backward on a 2-core CPU, where XLA fills and transposes large arrays slowly):
    - step t's activations [4*hidden, batch] overwrite step t's gate inputs, which have just been
      read, in the same float32 buffer, so no 52 MB output buffer is zero-filled per call;
    - the incoming hidden states are kept as [hidden, time, batch], the layout the backward
      pass's weight-gradient matmul reads without a transpose.
    """
    time_steps, batch, width = gate_inputs.shape  # width: 4*hidden
    cell0, hidden0 = carry
    # Typed alike, so that under shard_map each loop's carry keeps one type.
    operands = typed_alike(
        recurrent_kernel.astype(dtype).T,  # [4*hidden, hidden]
        gate_inputs.astype(jnp.float32),
        cell0.T,
        hidden0.T,
    )
    cell, hidden, buffer, outputs, cells, previous_hiddens = _on_cpu_by_kernels(
        _forward_scan_with_kernels, _forward_scan, *operands
    )
    activations = buffer.reshape(time_steps, width, batch)
    return (cell.T, hidden.T), outputs, (activations, cells, previous_hiddens)


def _on_cpu_by_kernels(with_kernels: Callable, by_xla: Callable, *operands):
    """by_xla(*operands), or with_kernels(*operands) where the program runs on the CPU and the
    compiled kernels are in use (decided when the program is lowered for its platform)."""
    if not cpu_kernels.in_use():
        return by_xla(*operands)
    return jax.lax.platform_dependent(*operands, cpu=with_kernels, default=by_xla)


def _forward_scan(kernel_t, buffer, cell, hidden):
    """The forward recurrence with XLA's kernels: (final cell, final hidden, buffer with the
    activations, outputs [time, batch, hidden], cells [time, hidden, batch], previous hiddens
    [hidden, time, batch])."""
    time_steps, batch, width = buffer.shape
    # Built from hidden, so that under shard_map it has the carry's (device-varying) type.
    previous_hiddens = jnp.broadcast_to(jnp.zeros_like(hidden)[:, None], (width // 4, time_steps, batch))

    def step(loop, t):
        cell, hidden, buffer, previous_hiddens = loop  # cell and hidden [hidden, batch]
        step_inputs = jax.lax.dynamic_index_in_dim(buffer, t, keepdims=False)  # [batch, 4*hidden]
        gates = jnp.dot(kernel_t, hidden.astype(kernel_t.dtype), preferred_element_type=jnp.float32) + step_inputs.T
        input_gate, forget_gate, candidate, output_gate = jnp.split(gates, 4, axis=0)
        input_gate, forget_gate, output_gate = map(jax.nn.sigmoid, (input_gate, forget_gate, output_gate))
        candidate = jnp.tanh(candidate)
        activations = jnp.concatenate([input_gate, forget_gate, candidate, output_gate])  # [4*hidden, batch]
        buffer = jax.lax.dynamic_update_index_in_dim(buffer, activations.reshape(batch, width), t, 0)
        previous_hiddens = jax.lax.dynamic_update_index_in_dim(previous_hiddens, hidden, t, 1)
        cell = forget_gate * cell + input_gate * candidate
        hidden = output_gate * jnp.tanh(cell)
        return (cell, hidden, buffer, previous_hiddens), (hidden.T, cell)

    loop = (cell, hidden, buffer, previous_hiddens)
    (cell, hidden, buffer, previous_hiddens), (outputs, cells) = jax.lax.scan(step, loop, jnp.arange(time_steps))
    return cell, hidden, buffer, outputs, cells, previous_hiddens


def _forward_scan_with_kernels(kernel_t, buffer, cell, hidden):
    """_forward_scan's results, each step's gate arithmetic and writes in one call of
    cpu_kernels.forward_step."""
    time_steps, batch, width = buffer.shape
    shapes = ((time_steps, batch, width // 4), (time_steps, width // 4, batch), (width // 4, time_steps, batch))
    outputs, cells, previous_hiddens = (jnp.zeros_like(buffer, shape=shape) for shape in shapes)

    def step(loop, t):
        cell, hidden, *buffers = loop
        recurrent = jnp.dot(kernel_t, hidden.astype(kernel_t.dtype), preferred_element_type=jnp.float32)
        *buffers, cell, hidden = cpu_kernels.forward_step(recurrent, t, cell, hidden, *buffers)
        return (cell, hidden, *buffers), None

    loop = (cell, hidden, buffer, outputs, cells, previous_hiddens)
    return jax.lax.scan(step, loop, jnp.arange(time_steps))[0]


def _fused_forward(recurrent_kernel, gate_inputs, carry, dtype):
    final_carry, outputs, saved = _forward_saving_gates(recurrent_kernel, gate_inputs, carry, dtype)
    return (final_carry, outputs), (recurrent_kernel, carry, *saved)


def _fused_backward(dtype, residuals, cotangents):
    """Gradients through time by a reverse scan (feature-major, like the forward), then the
    recurrent-weight gradient as one matmul over all steps: [hidden, time*batch] x [time*batch,
    4*hidden], both operands in the layouts they were written in.
    """
    recurrent_kernel, (cell0, hidden0), activations, cells, previous_hiddens = residuals
    (d_cell_last, d_hidden_last), d_outputs = cotangents
    time_steps, width, batch = activations.shape  # width: 4*hidden
    operands = typed_alike(
        recurrent_kernel.astype(dtype),  # [hidden, 4*hidden]
        activations,
        cells,
        cell0.T.astype(jnp.float32),
        d_outputs.astype(jnp.float32),
        d_hidden_last.T.astype(jnp.float32),
        d_cell_last.T.astype(jnp.float32),
    )
    d_hidden0, d_cell0, d_gates = _on_cpu_by_kernels(
        _backward_scan_with_kernels, _backward_scan, *operands
    )  # d_gates [time, batch, 4*hidden]
    d_gates = d_gates.reshape(time_steps * batch, width)  # rows in (time, batch) order
    d_kernel = jnp.dot(
        previous_hiddens.reshape(-1, time_steps * batch).astype(dtype),
        d_gates.astype(dtype),
        preferred_element_type=jnp.float32,
    )
    return (
        d_kernel.astype(recurrent_kernel.dtype),
        d_gates.reshape(time_steps, batch, width).astype(dtype),
        (d_cell0.T.astype(cell0.dtype), d_hidden0.T.astype(hidden0.dtype)),
    )


def _backward_scan(kernel, activations, cells, cell0, d_outputs, d_hidden_last, d_cell_last):
    """The reverse recurrence with XLA's kernels: (gradient of the initial hidden state and cell
    [hidden, batch], gate gradients [time, batch, 4*hidden])."""
    previous_cells = jnp.concatenate([cell0[None], cells[:-1]])  # c_{t-1} for every t, [time, hidden, batch]

    def reverse_step(carry, step):
        d_hidden_next, d_cell_next = carry  # [hidden, batch]
        d_output, gates, cell, previous_cell = step
        input_gate, forget_gate, candidate, output_gate = jnp.split(gates, 4, axis=0)
        tanh_cell = jnp.tanh(cell)
        d_hidden = d_output.T + d_hidden_next
        d_cell = d_cell_next + d_hidden * output_gate * (1.0 - tanh_cell * tanh_cell)
        d_gates = jnp.concatenate(  # with respect to the pre-activations, in gate order i, f, g, o
            [
                d_cell * candidate * input_gate * (1.0 - input_gate),
                d_cell * previous_cell * forget_gate * (1.0 - forget_gate),
                d_cell * input_gate * (1.0 - candidate * candidate),
                d_hidden * tanh_cell * output_gate * (1.0 - output_gate),
            ]
        )
        d_hidden_previous = jnp.dot(kernel, d_gates.astype(kernel.dtype), preferred_element_type=jnp.float32)
        return (d_hidden_previous, d_cell * forget_gate), d_gates.T

    (d_hidden0, d_cell0), d_gates = jax.lax.scan(
        reverse_step, (d_hidden_last, d_cell_last), (d_outputs, activations, cells, previous_cells), reverse=True
    )
    return d_hidden0, d_cell0, d_gates


def _backward_scan_with_kernels(kernel, activations, cells, cell0, d_outputs, d_hidden_last, d_cell_last):
    """_backward_scan's results, each step's gate arithmetic in one call of
    cpu_kernels.backward_step, which writes the gate gradients over the step's activations."""
    time_steps, width, batch = activations.shape
    cell0 = jax.lax.optimization_barrier(cell0)  # else XLA refills a zero initial cell at every step

    def reverse_step(loop, t):
        d_hidden, d_cell, buffer = loop
        buffer, d_gates, d_cell = cpu_kernels.backward_step(d_outputs, t, d_hidden, d_cell, cells, cell0, buffer)
        d_hidden = jnp.dot(kernel, d_gates.astype(kernel.dtype), preferred_element_type=jnp.float32)
        return (d_hidden, d_cell, buffer), None

    loop = (d_hidden_last, d_cell_last, activations)
    d_hidden0, d_cell0, buffer = jax.lax.scan(reverse_step, loop, jnp.arange(time_steps), reverse=True)[0]
    return d_hidden0, d_cell0, buffer.reshape(time_steps, batch, width)


fused_lstm.defvjp(_fused_forward, _fused_backward)

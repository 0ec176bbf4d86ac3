"""cuDNN's LSTM primitives computed by JAX's own reference for them, standing in for cuDNN off NVIDIA GPUs.

`jax.experimental.rnn.lstm_ref` computes what cuDNN computes, from the same flat weights and in the
same batch-first layout. `install` puts two primitives in place of rnn's forward and backward ones
(`rnn_fwd_p`, `rnn_bwd_p`), typed exactly as those are (their abstract evaluations: no shard_map
type on the hidden states or the reserve space, the inputs' types on the gradients) and computed
by the reference. So rnn's own `lstm_fwd` and `lstm_bwd` run unchanged, precision checks included,
and what abcjax does around them, typing under shard_map included, is tested on CPU.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax._src import core, dispatch
from jax.experimental import rnn
from jax.interpreters import mlir

from abcjax import cudnn_lstm
from abcjax.shard_types import as_varying, varying_axes

RESERVE_SPACE = 8  # cuDNN's workspace between forward and backward; the reference keeps none


def _reference(x, h_0, c_0, weights, seq_lengths, sizes):
    unpacked = rnn.unpack_lstm_weights(weights, *sizes[:3], sizes[4])
    return rnn.lstm_ref(x, h_0, c_0, *unpacked, seq_lengths, *sizes)


def _sizes(input_size, hidden_size, num_layers, dropout, bidirectional, **_):
    return input_size, hidden_size, num_layers, dropout, bidirectional


def _forward_type(x, h_0, c_0, weights, seq_lengths, *, hidden_size, bidirectional, **_):
    """rnn_fwd_p's abstract evaluation: y and the reserve space are plain ShapedArrays."""
    directions = 2 if bidirectional else 1
    y = core.ShapedArray((*x.shape[:2], directions * hidden_size), x.dtype)
    return y, h_0, c_0, core.ShapedArray((RESERVE_SPACE,), jnp.float32)


def _forward(x, h_0, c_0, weights, seq_lengths, **options):
    y, h_n, c_n = _reference(x, h_0, c_0, weights, seq_lengths, _sizes(**options))
    return y, h_n, c_n, jnp.zeros((RESERVE_SPACE,), jnp.float32)


def _backward_type(d_y, d_h_n, d_c_n, x, h_0, c_0, weights, *_, **__):
    """rnn_bwd_p's abstract evaluation: each gradient has its input's type."""
    return x, h_0, c_0, weights


def _backward(d_y, d_h_n, d_c_n, x, h_0, c_0, weights, y, reserve_space, seq_lengths, **options):
    """Each device's own gradients, as cuDNN computes them whatever the operands' shard_map types."""
    operands = (x, h_0, c_0, weights)
    varying = frozenset().union(*(varying_axes(value) for value in (*operands, d_y)))
    operands = [as_varying(value, varying) for value in operands]
    outputs, vjp = jax.vjp(lambda *a: _reference(*a, seq_lengths, _sizes(**options)), *operands)
    cotangents = (as_varying(d, varying_axes(out)) for d, out in zip((d_y, d_h_n, d_c_n), outputs, strict=True))
    return vjp(tuple(cotangents))


def _primitive(name, type_rule, compute):
    primitive = core.Primitive(name)
    primitive.multiple_results = True
    primitive.def_impl(partial(dispatch.apply_primitive, primitive))
    primitive.def_abstract_eval(type_rule)
    mlir.register_lowering(primitive, mlir.lower_fun(compute, multiple_results=True))
    return primitive


_FORWARD = _primitive("rnn_fwd_reference", _forward_type, _forward)
_BACKWARD = _primitive("rnn_bwd_reference", _backward_type, _backward)


# The first lines of a `python -c` script that runs model.lstm=cudnn on the stand-in.
SCRIPT_PREAMBLE = """
import sys
sys.path.insert(0, "tests")
import cudnn_reference
cudnn_reference.install(setattr)
"""


def install(setattr) -> None:
    """Makes model.lstm=cudnn run on this machine; `setattr` is pytest's monkeypatch.setattr (or the builtin)."""
    setattr(rnn, "rnn_fwd_p", _FORWARD)
    setattr(rnn, "rnn_bwd_p", _BACKWARD)
    setattr(cudnn_lstm, "cudnn_available", lambda: True)

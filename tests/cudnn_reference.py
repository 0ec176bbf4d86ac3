"""cuDNN's LSTM call computed by JAX's own reference for it, standing in for cuDNN off NVIDIA GPUs.

`jax.experimental.rnn.lstm_ref` computes what cuDNN computes, from the same flat weights and in the
same batch-first layout. `install` puts it in place of rnn's two halves (`lstm_fwd`, `lstm_bwd`)
and types the hidden states as cuDNN's primitive does, with no manual-axis (shard_map) type, so
that what abcjax does around the cuDNN call, typing under shard_map included, is tested on CPU.
"""

from functools import partial

import jax
from jax._src import core, dispatch
from jax.experimental import rnn
from jax.interpreters import mlir

# An identity whose result has no manual-axis type, like the output of cuDNN's primitive.
_untyped_p = core.Primitive("untyped_like_cudnn")
_untyped_p.def_impl(partial(dispatch.apply_primitive, _untyped_p))
_untyped_p.def_abstract_eval(lambda x: core.ShapedArray(x.shape, x.dtype))
mlir.register_lowering(_untyped_p, mlir.lower_fun(lambda x: x, multiple_results=False))


def _forward(x, h_0, c_0, w, seq_lengths, *, input_size, hidden_size, num_layers, dropout, bidirectional, precision):
    def lstm(x, h_0, c_0, w):
        sizes = (input_size, hidden_size, num_layers)
        weights = rnn.unpack_lstm_weights(w, *sizes, bidirectional)
        return rnn.lstm_ref(x, h_0, c_0, *weights, seq_lengths, *sizes, dropout, bidirectional)

    (y, h_n, c_n), vjp = jax.vjp(lstm, x, h_0, c_0, w)
    # rnn.lstm_fwd's residuals, with the reference's VJP where cuDNN keeps its reserve space.
    return (_untyped_p.bind(y), h_n, c_n), (x, h_0, c_0, w, seq_lengths, y, vjp)


def _backward(*, input_size, hidden_size, num_layers, dropout, bidirectional, precision, residuals, gradients):
    vjp = residuals[-1]
    return (*vjp(gradients), None)


def install(setattr) -> None:
    """Makes model.lstm=cudnn run on this machine; `setattr` is pytest's monkeypatch.setattr."""
    from abcjax import cudnn_lstm

    setattr(rnn, "lstm_fwd", _forward)
    setattr(rnn, "lstm_bwd", _backward)
    setattr(cudnn_lstm, "cudnn_available", lambda: True)

"""The peer a user would pick instead: the same model in PyTorch, timed by `abcjax bench` in turns
with abcjax, so the two figures stand side by side from one run.

Embedding -> nn.LSTM -> Linear with Adam on random tokens, at the config's sizes; sampling is the
batched PyTorch loop (one LSTM call per character for all tunes at once). A config whose
model.dtype is not float32 runs PyTorch under CPU autocast to that dtype: PyTorch's own mixed
precision, the peer a user would pick for bf16 (its LSTM then also carries h and c in bf16, where
abcjax keeps the cell state float32). torch is an optional extra (`pip install -e '.[torch]'`),
never a dependency of abcjax itself.
"""

from __future__ import annotations

import contextlib

import ml_collections

from abcjax.errors import AbcjaxError


class TorchPeer:
    """The PyTorch model, optimizer, batch and sampler, set up once; `train` and `sample` return when done.

    The same two calls as bench's abcjax side, so bench can time them alike.
    """

    def __init__(self, config: ml_collections.ConfigDict, vocab_size: int, num_tunes: int, sample_length: int):
        torch = self._torch = require_torch()
        model_cfg = config.model
        self._model = _TorchCharLstm(
            torch, vocab_size, model_cfg.embed_dim, model_cfg.hidden_size, model_cfg.num_layers
        )
        self._autocast_dtype = None if model_cfg.dtype == "float32" else model_cfg.dtype
        self._optimizer = torch.optim.Adam(self._model.parameters(), lr=config.train.learning_rate)
        self._grad_clip = config.train.grad_clip
        self._vocab_size = vocab_size
        self._tokens = torch.randint(0, vocab_size, (config.train.batch_size, config.data.seq_length + 1))
        self._num_tunes, self._sample_length = num_tunes, sample_length

    def info(self) -> dict:
        """What the report says of the peer itself."""
        return {
            "torch_version": self._torch.__version__,
            "torch_threads": self._torch.get_num_threads(),
            "torch_autocast": self._autocast_dtype or "off",
        }

    def train(self, num_steps: int) -> None:
        """`num_steps` Adam steps on the fixed random batch."""
        for _ in range(num_steps):
            self._optimizer.zero_grad()
            with self._mixed_precision():
                logits = self._model(self._tokens[:, :-1])[0]
            targets = self._tokens[:, 1:].reshape(-1)
            loss = self._torch.nn.functional.cross_entropy(logits.float().reshape(-1, self._vocab_size), targets)
            loss.backward()
            self._torch.nn.utils.clip_grad_norm_(self._model.parameters(), self._grad_clip)
            self._optimizer.step()

    def sample(self) -> None:
        """`num_tunes` tunes of `sample_length` characters, all tunes batched, one LSTM call per character."""
        torch = self._torch
        with torch.no_grad():
            token, state = torch.zeros((self._num_tunes, 1), dtype=torch.long), None
            for _ in range(self._sample_length):
                with self._mixed_precision():
                    logits, state = self._model(token, state)
                token = torch.multinomial(torch.softmax(logits[:, -1].float(), dim=-1), 1)

    def _mixed_precision(self):
        """PyTorch's CPU autocast to the config's dtype; nothing for float32."""
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return self._torch.autocast("cpu", dtype=getattr(self._torch, self._autocast_dtype))


def require_torch():
    """The torch module, or a one-line error saying how to install it."""
    try:
        import torch
    except ImportError:
        raise AbcjaxError("--compare_torch needs PyTorch: pip install -e '.[torch]'") from None
    return torch


def _TorchCharLstm(torch, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int):
    """Embedding -> nn.LSTM -> Linear; built here so torch is imported only when asked for."""

    class TorchCharLstm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(vocab_size, embed_dim)
            self.lstm = torch.nn.LSTM(embed_dim, hidden_size, num_layers=num_layers, batch_first=True)
            self.logits = torch.nn.Linear(hidden_size, vocab_size)

        def forward(self, tokens, state=None):
            outputs, state = self.lstm(self.embed(tokens), state)
            return self.logits(outputs), state

    return TorchCharLstm()

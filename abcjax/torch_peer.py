"""The peer a user would pick instead: the same model in PyTorch, timed the way `abcjax bench` times
abcjax, so the two figures stand side by side from one run.

Embedding -> nn.LSTM -> Linear with Adam on random tokens, at the config's sizes; sampling is the
batched PyTorch loop (one LSTM call per character for all tunes at once). torch is an optional
extra (`pip install -e '.[torch]'`), never a dependency of abcjax itself.
"""

from __future__ import annotations

import time

import ml_collections

from abcjax.errors import AbcjaxError


def run_torch_bench(
    config: ml_collections.ConfigDict, vocab_size: int, num_steps: int, num_tunes: int, sample_length: int
) -> dict:
    """Training and sampling throughput of the PyTorch peer, on the CPU with every core."""
    torch = require_torch()
    model_cfg, train_cfg = config.model, config.train
    model = _TorchCharLstm(torch, vocab_size, model_cfg.embed_dim, model_cfg.hidden_size, model_cfg.num_layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.learning_rate)
    tokens = torch.randint(0, vocab_size, (train_cfg.batch_size, config.data.seq_length + 1))

    def train_step():
        optimizer.zero_grad()
        logits = model(tokens[:, :-1])[0]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size), tokens[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()

    for _ in range(2):
        train_step()
    train_seconds = _seconds(lambda: [train_step() for _ in range(num_steps)])

    @torch.no_grad()
    def sample_all():
        token, state = torch.zeros((num_tunes, 1), dtype=torch.long), None
        for _ in range(sample_length):
            logits, state = model(token, state)
            token = torch.multinomial(torch.softmax(logits[:, -1], dim=-1), 1)

    sample_all()
    sample_seconds = _seconds(sample_all)
    return {
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_train_chars_per_sec": round(
            num_steps * train_cfg.batch_size * config.data.seq_length / train_seconds, 1
        ),
        "torch_sample_chars_per_sec": round(num_tunes * sample_length / sample_seconds, 1),
    }


def require_torch():
    """The torch module, or a one-line error saying how to install it."""
    try:
        import torch
    except ImportError:
        raise AbcjaxError("--compare_torch needs PyTorch: pip install -e '.[torch]'") from None
    return torch


def _seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


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

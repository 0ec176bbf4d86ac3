"""The peer a user would pick instead: the same model in PyTorch, timed by `abcjax bench` in turns
with abcjax, so the two figures stand side by side from one run.

Embedding -> nn.LSTM -> Linear with Adam on random tokens, at the config's sizes; sampling is the
batched PyTorch loop (one LSTM call per character for all tunes at once). It runs where abcjax
runs: on the CPU, or on an NVIDIA GPU, where nn.LSTM is cuDNN's and float32 matmuls may use TF32
as JAX's do by default there. A config whose model.dtype is not float32 runs PyTorch under autocast
to that dtype: PyTorch's own mixed precision, the peer a user would pick for bf16 (its LSTM then
also carries h and c in bf16, where abcjax keeps the cell state float32). torch is an optional
extra (`pip install -e '.[torch]'`), never a dependency of abcjax itself.
"""

from __future__ import annotations

import contextlib

import ml_collections

from abcjax.errors import AbcjaxError


class TorchPeer:
    """The PyTorch model, optimizer, batch and sampler, set up once; `train` and `sample` return when done.

    The same two calls as bench's abcjax side, so bench can time them alike.
    """

    def __init__(
        self, config: ml_collections.ConfigDict, vocab_size: int, num_tunes: int, sample_length: int, device: str
    ):
        """`device`: "cpu", or "cuda" for an NVIDIA GPU (a one-line error if this torch has no CUDA)."""
        torch = self._torch = require_torch()
        if device == "cuda":
            _check_cuda(torch)
            # As JAX's float32 matmuls on a GPU by default; for the rest of the process (bench's own).
            torch.backends.cuda.matmul.allow_tf32 = True
        self._device = device
        model_cfg = config.model
        self._model = _TorchCharLstm(
            torch, vocab_size, model_cfg.embed_dim, model_cfg.hidden_size, model_cfg.num_layers
        ).to(device)
        self._autocast_dtype = None if model_cfg.dtype == "float32" else model_cfg.dtype
        self._optimizer = torch.optim.Adam(self._model.parameters(), lr=config.train.learning_rate)
        self._grad_clip = config.train.grad_clip
        self._vocab_size = vocab_size
        batch_shape = (config.train.batch_size, config.data.seq_length + 1)
        self._tokens = torch.randint(0, vocab_size, batch_shape, device=device)
        self._num_tunes, self._sample_length = num_tunes, sample_length

    def info(self) -> dict:
        """What the report says of the peer itself."""
        torch = self._torch
        on_gpu = {"torch_cudnn": torch.backends.cudnn.version()} if self._device == "cuda" else {}
        return {
            "torch_version": torch.__version__,
            "torch_device": self._device,
            **on_gpu,
            "torch_threads": torch.get_num_threads(),
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
        self._wait_for_the_device()

    def sample(self) -> None:
        """`num_tunes` tunes of `sample_length` characters, all tunes batched, one LSTM call per character."""
        torch = self._torch
        with torch.no_grad():
            token, state = torch.zeros((self._num_tunes, 1), dtype=torch.long, device=self._device), None
            for _ in range(self._sample_length):
                with self._mixed_precision():
                    logits, state = self._model(token, state)
                token = torch.multinomial(torch.softmax(logits[:, -1].float(), dim=-1), 1)
        self._wait_for_the_device()

    def _mixed_precision(self):
        """PyTorch's autocast to the config's dtype; nothing for float32."""
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return self._torch.autocast(self._device, dtype=getattr(self._torch, self._autocast_dtype))

    def _wait_for_the_device(self) -> None:
        """A GPU runs PyTorch's work asynchronously: a call returns when it is done, as abcjax's do."""
        if self._device == "cuda":
            self._torch.cuda.synchronize()


def require_torch():
    """The torch module, or a one-line error saying how to install it."""
    try:
        import torch
    except ImportError:
        raise AbcjaxError("--compare_torch needs PyTorch: pip install -e '.[torch]'") from None
    return torch


def _check_cuda(torch) -> None:
    """A one-line error unless this torch can run on the GPU, saying what to do about it."""
    if torch.cuda.is_available():
        return
    if torch.version.cuda is None:
        raise AbcjaxError(
            f"--compare_torch on a GPU needs a CUDA build of PyTorch, and torch {torch.__version__} here is a "
            "CPU build: install a CUDA one, e.g. pip install --force-reinstall torch==2.13.0 "
            "--index-url https://download.pytorch.org/whl/cu130"
        )
    raise AbcjaxError(
        f"--compare_torch on a GPU: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: "
        "check the NVIDIA driver with nvidia-smi"
    )


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

"""How fast a config could at best train and sample on a chip: FLOPs and HBM bytes per character
counted from the model's shapes, against the chip's published peaks (abcjax.accelerators).

XLA's own cost analysis cannot give this: it counts the body of a loop once, and the LSTM is two
loops over time. These are ceilings, not predictions: each time step is a chain of small dependent
matmuls, so a real run is limited by latency long before either ceiling. The assumptions, term by
term, are in docs/tpu-compile.md.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from abcjax.accelerators import Chip
from abcjax.model import ModelConfig

FLOAT32_BYTES = 4
# Per parameter and step: its float32 value, gradient and two Adam moments, each read and written
# once by the backward pass and the optimizer.
OPTIMIZER_BYTES_PER_PARAM = 8 * FLOAT32_BYTES
# Per LSTM unit and character, float32 values the fused LSTM (abcjax.lstm) moves through HBM in
# training: the forward reads the gate inputs (4) and writes the gate activations (4), the cell, the
# incoming hidden state and the output (3); the backward reads the activations, the cell and the
# output's gradient (6) and writes the gate gradients (4), which the weight-gradient matmul reads
# again with the incoming hidden states (5).
TRAIN_ACTIVATIONS_PER_UNIT = 4 + 4 + 3 + 6 + 4 + 5
# JAX's matmul precision for float32 inputs (jax_default_matmul_precision) -> the class of
# accelerators.Chip.float32_flops it runs at; None is JAX's default.
PRECISION_CLASSES = {
    None: "default",
    "default": "default",
    "bfloat16": "default",
    "BF16_BF16_F32": "default",
    "high": "high",
    "tensorfloat32": "high",
    "BF16_BF16_F32_X3": "high",
    "TF32_TF32_F32": "high",
}


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What the estimate reads of a run: the model, and how much of the work one chip does."""

    model: ModelConfig
    seq_length: int  # characters per training window
    rows_per_chip: int  # training windows per chip and step
    slots_per_chip: int  # tunes each chip samples at once


def gates(model: ModelConfig) -> int:
    return 4 * model.hidden_size


def matmul_params(model: ModelConfig) -> int:
    """The weights of the model's matmuls, as if every character were embedded and projected: each
    layer's input and recurrent kernels, and the logits' kernel."""
    inputs = model.embed_dim + (model.num_layers - 1) * model.hidden_size
    recurrent = model.num_layers * model.hidden_size
    return (inputs + recurrent) * gates(model) + model.hidden_size * model.vocab_size


def per_char_weights(model: ModelConfig) -> int:
    """The matmul weights every character really passes through: all but the first layer's input
    kernel, whose products with the embedding abcjax takes from a table of the vocabulary's rows."""
    return matmul_params(model) - model.embed_dim * gates(model)


def model_flops_per_char(model: ModelConfig) -> int:
    """Training FLOPs per character by the usual count: 6 per matmul weight (2 forward, 4 backward).
    Comparable across implementations (model FLOPs utilisation is reported against it)."""
    return 6 * matmul_params(model)


def train_flops_per_char(shapes: Shapes) -> float:
    """The training FLOPs abcjax actually runs per character on a chip: the first layer projects
    the vocabulary's rows once per step (forward, and twice backward) instead of every character's."""
    model = shapes.model
    table = 6 * model.vocab_size * model.embed_dim * gates(model)
    return 6 * per_char_weights(model) + table / (shapes.rows_per_chip * shapes.seq_length)


def sample_flops_per_char(model: ModelConfig) -> int:
    """Forward FLOPs per sampled character: the first layer's gate inputs are a table lookup."""
    return 2 * per_char_weights(model)


def train_bytes_per_char(shapes: Shapes, num_params: int) -> float:
    """HBM bytes per training character on a chip: each recurrent kernel read at every time step of
    the forward and the backward pass, the optimizer's pass over every parameter, both shared by
    the chip's characters of the step, and the LSTM's own float32 activations."""
    model = shapes.model
    kernel = model.hidden_size * gates(model) * jnp.dtype(model.dtype).itemsize
    per_step = 2 * model.num_layers * shapes.seq_length * kernel + OPTIMIZER_BYTES_PER_PARAM * num_params
    activations = TRAIN_ACTIVATIONS_PER_UNIT * FLOAT32_BYTES * model.num_layers * model.hidden_size
    return per_step / (shapes.rows_per_chip * shapes.seq_length) + activations


def sample_bytes_per_char(shapes: Shapes) -> float:
    """HBM bytes per sampled character on a chip: every matmul weight read once per step for all
    the chip's slots, plus each slot's row of the first layer's table and its float32 carries
    (cell and hidden state of every layer) read and written."""
    model = shapes.model
    width = jnp.dtype(model.dtype).itemsize
    weights = per_char_weights(model) * width
    per_char = gates(model) * width + 2 * 2 * model.num_layers * model.hidden_size * FLOAT32_BYTES
    return weights / shapes.slots_per_chip + per_char


def matmul_peak(chip: Chip, dtype: str, precision: str | None = None) -> float:
    """The chip's peak matmul FLOP/s for the model's dtype; float32 by JAX's matmul precision
    (default: the jax_default_matmul_precision in effect). Unknown precisions count as "highest"."""
    if jnp.dtype(dtype) != jnp.float32:
        return chip.bfloat16_flops
    precision = jax.config.jax_default_matmul_precision if precision is None else precision
    return chip.float32_flops[PRECISION_CLASSES.get(precision, "highest")]


def estimate(shapes: Shapes, num_params: int, chip: Chip, chips: int) -> dict:
    """The ceilings in characters/s for the slice (per chip x chips), and what they come from."""
    peak = matmul_peak(chip, shapes.model.dtype)
    train_flops, sample_flops = train_flops_per_char(shapes), sample_flops_per_char(shapes.model)
    train_bytes, sample_bytes = train_bytes_per_char(shapes, num_params), sample_bytes_per_char(shapes)
    return {
        "model_flops_per_char": model_flops_per_char(shapes.model),
        "train_flops_per_char": round(train_flops),
        "train_bytes_per_char": round(train_bytes),
        "sample_flops_per_char": sample_flops,
        "sample_bytes_per_char": round(sample_bytes),
        "matmul_peak_tflops": peak / 1e12,
        "hbm_bandwidth_gbps": chip.hbm_bandwidth / 1e9,
        "train_compute_bound_chars_per_sec": chips * peak / train_flops,
        "train_bandwidth_bound_chars_per_sec": chips * chip.hbm_bandwidth / train_bytes,
        "sample_compute_bound_chars_per_sec": chips * peak / sample_flops,
        "sample_bandwidth_bound_chars_per_sec": chips * chip.hbm_bandwidth / sample_bytes,
    }

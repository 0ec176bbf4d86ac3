"""`abcjax bench`: how fast a config trains and samples on this machine, measured in one process.

Training is timed after compilation and warm-up, at the config's batch and sequence length, with
the real compiled step over every device. Sampling produces tunes of exactly `sample_length`
characters (no early stop), so runs compare. Against PyTorch (`compare_torch`), the two sides take
turns in rounds, so that a machine whose speed drifts while it runs (other tenants of a shared
host, clock changes) slows both sides alike instead of whichever happened to run second.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from abcjax import abc_grammar, corpus, cpu_kernels, cudnn_lstm, data, host_memory, parallel, sample, steps, torch_peer
from abcjax.errors import AbcjaxError
from abcjax.model import CharLstm, ModelConfig, make_decoder, zero_carries

WARMUP_STEPS = 2
ROUNDS_AGAINST_TORCH = 5  # turns each side takes at training and at sampling
ROUNDS_CONSTRAINED = 3  # turns each of unconstrained and constrained sampling takes


def run_bench(
    config: ml_collections.ConfigDict,
    num_steps: int,
    num_tunes: int,
    sample_length: int,
    compare_torch: bool = False,
    constrain: bool = False,
) -> dict:
    """Measures training and sampling throughput; returns the figures as a JSON-able dict.

    With `compare_torch`, the same model in PyTorch is timed too, in turns with abcjax, and the
    speed-ups are added. With `constrain`, sampling under `abcjax sample --constrain` is timed in
    turns with unconstrained sampling, and both rates are added.
    """
    if compare_torch:  # before minutes of measuring, not after
        torch_peer.require_torch()
        torch_device = _torch_device()
    mesh = parallel.make_mesh()
    parallel.check_divisible(config.train.batch_size, mesh, "train.batch_size")
    parallel.check_divisible(num_tunes, mesh, "--num_tunes")
    cudnn_lstm.check_runs_here(config.model.lstm)
    dataset = data.make_dataset(
        corpus.read_corpus(config.data.path).tunes, config.data.seq_length, 0.0, config.seed, config.data.path
    )
    model = CharLstm(ModelConfig.from_config(config, dataset.vocab.size))
    abcjax_side = _AbcjaxSide(model, config, mesh, dataset, num_tunes, sample_length)
    sides = {"abcjax": abcjax_side}
    if compare_torch:
        sides["torch"] = torch_peer.TorchPeer(config, dataset.vocab.size, num_tunes, sample_length, torch_device)
    rounds = ROUNDS_AGAINST_TORCH if compare_torch else 1
    train_seconds, sample_seconds = _time_in_turns(sides, num_steps, rounds)
    chars_per_step = config.train.batch_size * config.data.seq_length
    train_rate = {name: num_steps * chars_per_step / sum(seconds) for name, seconds in train_seconds.items()}
    sample_rate = {name: rounds * num_tunes * sample_length / sum(seconds) for name, seconds in sample_seconds.items()}

    seed_rate = sample_length / _time_seed_procedure(model, abcjax_side.params, sample_length)
    report = {
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "dtype": config.model.dtype,
        "host_allocator": host_memory.allocator_in_effect(),
        "cpu_kernels": _cpu_kernels_in_use(config.model.lstm),
        "compile_seconds": round(abcjax_side.compile_seconds, 3),
        "train_chars_per_sec": round(train_rate["abcjax"], 1),
        "sample_chars_per_sec": round(sample_rate["abcjax"], 1),
        "sample_tunes_per_sec": round(sample_rate["abcjax"] / sample_length, 2),
        "seed_sample_chars_per_sec": round(seed_rate, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if constrain:
        report.update(_constrained_rates(model, abcjax_side, dataset.vocab, mesh, num_tunes, sample_length))
    if not compare_torch:
        return report
    return {
        **report,
        **sides["torch"].info(),
        "train_turns": len(train_seconds["abcjax"]),
        "sample_turns": len(sample_seconds["abcjax"]),
        "torch_train_chars_per_sec": round(train_rate["torch"], 1),
        "torch_sample_chars_per_sec": round(sample_rate["torch"], 1),
        "train_speedup_vs_torch": speedup(abcjax_seconds=train_seconds["abcjax"], torch_seconds=train_seconds["torch"]),
        "sample_speedup_vs_torch": speedup(
            abcjax_seconds=sample_seconds["abcjax"], torch_seconds=sample_seconds["torch"]
        ),
        "sample_speedup_vs_seed": round(sample_rate["abcjax"] / seed_rate, 1),
    }


def _constrained_rates(model, abcjax_side, vocab, mesh, num_tunes: int, sample_length: int) -> dict:
    """Characters written per second without and with the constraint, in turns, same model and tunes.

    A constrained tune may end (its blank line) before `sample_length`, and its slot then idles, so
    the constrained rate counts the characters actually written."""
    max_length = len(sample.DEFAULT_PRIME) + sample_length
    options = sample.SamplingOptions(max_length=max_length, constraint=abc_grammar.Options())
    sampler = sample.make_sampler(model, vocab, mesh, options, [sample.DEFAULT_PRIME])
    written = []

    def constrained() -> None:
        tunes = sampler(abcjax_side.params, 0, num_tunes, num_tunes)
        written.append(sum(tune.length - len(sample.DEFAULT_PRIME) for tune in tunes))

    constrained()  # compiles
    work = {"unconstrained": _ignoring_block(abcjax_side.sample), "constrained": _ignoring_block(constrained)}
    seconds = _seconds_in_turns(work, [1] * ROUNDS_CONSTRAINED)
    free_rate = ROUNDS_CONSTRAINED * num_tunes * sample_length / sum(seconds["unconstrained"])
    constrained_rate = sum(written[1:]) / sum(seconds["constrained"])
    return {
        "unconstrained_sample_chars_per_sec": round(free_rate, 1),
        "constrained_sample_chars_per_sec": round(constrained_rate, 1),
        "constrained_speed_fraction": round(constrained_rate / free_rate, 3),
    }


def _cpu_kernels_in_use(implementation: str) -> str:
    """Whether the LSTM's gate arithmetic ran in abcjax's compiled CPU kernels, and if not, why."""
    if jax.default_backend() != "cpu":
        return "not used off the CPU"
    if implementation != "fused":
        return f"not used by model.lstm={implementation}"
    return cpu_kernels.status()


def _torch_device() -> str:
    """Where the PyTorch peer runs: on the devices abcjax runs on."""
    torch_devices = {"cpu": "cpu", "gpu": "cuda"}  # JAX's backend -> PyTorch's device
    backend = jax.default_backend()
    if backend not in torch_devices:
        raise AbcjaxError(f"--compare_torch runs PyTorch on a CPU or an NVIDIA GPU, and JAX runs on {backend} here")
    return torch_devices[backend]


class _AbcjaxSide:
    """abcjax's compiled train step and fixed-length sampler, holding the train state between calls.

    `train` and `sample` return once the devices are done, like the PyTorch peer's.
    """

    def __init__(self, model: CharLstm, config, mesh, dataset: data.Dataset, num_tunes: int, sample_length: int):
        tx = steps.make_optimizer(config)
        state = parallel.replicate(steps.create_train_state(model, tx, config.seed), mesh)
        self._tokens = parallel.replicate(dataset.train_tokens, mesh)
        self._train_step = steps.make_train_step(model, tx, config, mesh)
        self.compile_seconds, self._state = _timed(lambda: self._train_step(state, self._tokens)[0])
        options = sample.SamplingOptions(max_length=len(sample.DEFAULT_PRIME) + sample_length, stop_at_end=False)
        self._sampler = sample.make_sampler(model, dataset.vocab, mesh, options, [sample.DEFAULT_PRIME])
        self._num_tunes = num_tunes

    @property
    def params(self):
        return self._state.params

    def train(self, num_steps: int) -> None:
        for _ in range(num_steps):
            self._state, _ = self._train_step(self._state, self._tokens)
        jax.block_until_ready(self._state)

    def sample(self) -> None:
        """Every tune, `sample_length` characters after the prime (decoded on the host when it
        returns); the first call compiles."""
        self._sampler(self.params, 0, self._num_tunes, self._num_tunes)


def _time_in_turns(sides: dict, num_steps: int, rounds: int) -> tuple[dict, dict]:
    """Per-turn seconds of each side: `num_steps` train steps in up to `rounds` turns, then `rounds`
    turns of sampling every tune once; after warm-up (and compilation) of both."""
    for side in sides.values():
        side.train(WARMUP_STEPS)
        side.sample()
    train_turns = min(rounds, num_steps)
    step_blocks = [num_steps // train_turns + (block < num_steps % train_turns) for block in range(train_turns)]
    train_seconds = _seconds_in_turns({name: side.train for name, side in sides.items()}, step_blocks)
    samplers = {name: _ignoring_block(side.sample) for name, side in sides.items()}
    return train_seconds, _seconds_in_turns(samplers, [1] * rounds)


def _seconds_in_turns(
    work: dict[str, Callable[[int], None]], blocks: list[int], clock: Callable[[], float] = time.perf_counter
) -> dict[str, list[float]]:
    """Seconds each side spends on each of `blocks`, the sides taking turns block by block.

    Who goes first alternates from block to block, so that a machine slowing down or speeding up
    steadily does not favour the side that always runs second.
    """
    seconds = {name: [] for name in work}
    for number, block in enumerate(blocks):
        order = list(work.items())
        for name, run in order[::-1] if number % 2 else order:
            started = clock()
            run(block)
            seconds[name].append(clock() - started)
    return seconds


def _ignoring_block(work: Callable[[], None]) -> Callable[[int], None]:
    """`work` as a turn of `_seconds_in_turns`, which passes each turn its block size."""
    return lambda _block: work()


def _timed(work):
    """(seconds, result) of `work()`, waiting for the devices to finish it."""
    started = time.perf_counter()
    result = jax.block_until_ready(work())
    return time.perf_counter() - started, result


def _time_seed_procedure(model, params, sample_length: int) -> float:
    """Seconds for one tune the seed notebook's way: batch 1, one compiled model call per character."""
    step = jax.jit(make_decoder(model.config, params))
    carry = jax.tree_util.tree_map(lambda x: x[0], zero_carries(model.config, jnp.zeros(1)))
    key = jax.random.PRNGKey(0)

    def one_tune(carry):
        token = jnp.int32(0)
        for position in range(sample_length):
            logits, carry = step(token, carry)
            token = jax.random.categorical(jax.random.fold_in(key, position), logits)
        return token

    one_tune(carry)  # compiles
    seconds, _ = _timed(lambda: one_tune(carry))
    return seconds


def speedup(*, abcjax_seconds: list[float], torch_seconds: list[float]) -> float:
    """abcjax's speed-up over PyTorch (above 1: abcjax is faster): the median, over the turns, of
    PyTorch's time over abcjax's.

    Both sides did the same work in a turn, so each ratio is a speed-up measured under one
    machine state; the median keeps one stalled turn of either side from swinging the figure.
    """
    ratios = (theirs / ours for ours, theirs in zip(abcjax_seconds, torch_seconds, strict=True))
    return round(statistics.median(ratios), 2)


def format_report(report: dict) -> str:
    """The figures as aligned `key  value` lines."""
    width = max(map(len, report))
    return "\n".join(f"{key:<{width}}  {value}" for key, value in report.items())

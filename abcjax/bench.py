"""`abcjax bench`: how fast a config trains and samples on this machine, measured in one process.

Training is timed after compilation and warm-up, at the config's batch and sequence length, with
the real compiled step over every device. Sampling produces tunes of exactly `sample_length`
characters (no early stop), so runs compare.
"""

from __future__ import annotations

import resource
import time

import jax
import jax.numpy as jnp
import ml_collections

from abcjax import corpus, data, host_memory, parallel, sample, steps, torch_peer
from abcjax.model import CharLstm, ModelConfig, make_decoder, zero_carries

WARMUP_STEPS = 2


def run_bench(
    config: ml_collections.ConfigDict, num_steps: int, num_tunes: int, sample_length: int, compare_torch: bool = False
) -> dict:
    """Measures training and sampling throughput; returns the figures as a JSON-able dict.

    With `compare_torch`, the same model in PyTorch is timed too, and the speed-ups are added.
    """
    if compare_torch:
        torch_peer.require_torch()  # before minutes of measuring, not after
    mesh = parallel.make_mesh()
    parallel.check_divisible(config.train.batch_size, mesh, "train.batch_size")
    parallel.check_divisible(num_tunes, mesh, "--num_tunes")
    dataset = data.make_dataset(
        corpus.read_corpus(config.data.path).tunes, config.data.seq_length, 0.0, config.seed, config.data.path
    )
    model = CharLstm(ModelConfig.from_config(config, dataset.vocab.size))
    tx = steps.make_optimizer(config)
    state = parallel.replicate(steps.create_train_state(model, tx, config.seed), mesh)
    tokens = parallel.replicate(dataset.train_tokens, mesh)
    train_step = steps.make_train_step(model, tx, config, mesh)

    compile_seconds, state = _timed(lambda: train_step(state, tokens)[0])
    for _ in range(WARMUP_STEPS):
        state, _ = train_step(state, tokens)
    train_seconds, state = _timed(lambda: _run_steps(train_step, state, tokens, num_steps))
    chars_per_step = config.train.batch_size * config.data.seq_length

    sample_seconds = _time_sampling(model, state.params, dataset.vocab, mesh, num_tunes, sample_length)
    seed_seconds = _time_seed_procedure(model, state.params, sample_length)
    report = {
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "host_allocator": host_memory.allocator_in_effect(),
        "compile_seconds": round(compile_seconds, 3),
        "train_chars_per_sec": round(num_steps * chars_per_step / train_seconds, 1),
        "sample_chars_per_sec": round(num_tunes * sample_length / sample_seconds, 1),
        "sample_tunes_per_sec": round(num_tunes / sample_seconds, 2),
        "seed_sample_chars_per_sec": round(sample_length / seed_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if not compare_torch:
        return report
    peer = torch_peer.run_torch_bench(config, dataset.vocab.size, num_steps, num_tunes, sample_length)
    return with_torch_comparison(report, peer)


def _timed(work):
    """(seconds, result) of `work()`, waiting for the devices to finish it."""
    started = time.perf_counter()
    result = jax.block_until_ready(work())
    return time.perf_counter() - started, result


def _run_steps(train_step, state, tokens, num_steps: int):
    for _ in range(num_steps):
        state, _ = train_step(state, tokens)
    return state


def _time_sampling(model, params, vocab, mesh, num_tunes: int, sample_length: int) -> float:
    """Seconds to sample `num_tunes` tunes of `sample_length` characters after the prime, compiled."""
    options = sample.SamplingOptions(max_length=len(sample.DEFAULT_PRIME) + sample_length, stop_at_end=False)
    sampler = sample.make_sampler(model, vocab, mesh, options, [sample.DEFAULT_PRIME])

    def sample_all():
        return sampler(params, 0, num_tunes, num_tunes)

    sample_all()  # compiles
    seconds, _ = _timed(sample_all)
    return seconds


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


def with_torch_comparison(report: dict, torch_report: dict) -> dict:
    """The report with PyTorch's figures and the speed-ups over it and over the seed procedure."""
    return {
        **report,
        **torch_report,
        "train_speedup_vs_torch": round(report["train_chars_per_sec"] / torch_report["torch_train_chars_per_sec"], 2),
        "sample_speedup_vs_torch": round(
            report["sample_chars_per_sec"] / torch_report["torch_sample_chars_per_sec"], 2
        ),
        "sample_speedup_vs_seed": round(report["sample_chars_per_sec"] / report["seed_sample_chars_per_sec"], 1),
    }


def format_report(report: dict) -> str:
    """The figures as aligned `key  value` lines."""
    width = max(map(len, report))
    return "\n".join(f"{key:<{width}}  {value}" for key, value in report.items())

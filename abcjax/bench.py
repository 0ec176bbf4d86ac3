"""`abcjax bench`: how fast a config trains and samples on this machine, measured in one process.

Training is timed after compilation and warm-up, at the config's batch and sequence length, with
the real compiled step over every device. Sampling produces tunes of exactly `sample_length`
characters (no early stop), so runs compare.
"""

from __future__ import annotations

import resource
import time

import jax
import ml_collections

from abcjax import corpus, data, parallel, sample, steps
from abcjax.model import CharLstm, ModelConfig

WARMUP_STEPS = 2


def run_bench(config: ml_collections.ConfigDict, num_steps: int, num_tunes: int, sample_length: int) -> dict:
    """Measures training and sampling throughput; returns the figures as a JSON-able dict."""
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
    return {
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "compile_seconds": round(compile_seconds, 3),
        "train_chars_per_sec": round(num_steps * chars_per_step / train_seconds, 1),
        "sample_chars_per_sec": round(num_tunes * sample_length / sample_seconds, 1),
        "sample_tunes_per_sec": round(num_tunes / sample_seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


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
    sampler = sample.make_chunk_sampler(model, mesh, options, vocab.char2idx["\n"])
    primes = sample.encode_primes([sample.DEFAULT_PRIME], vocab, options.max_length)

    def sample_all():
        return sample.sample_tunes(sampler, params, vocab, primes, 0, num_tunes, num_tunes, mesh)

    sample_all()  # compiles
    seconds, _ = _timed(sample_all)
    return seconds


def format_report(report: dict) -> str:
    """The figures as aligned `key  value` lines."""
    width = max(map(len, report))
    return "\n".join(f"{key:<{width}}  {value}" for key, value in report.items())

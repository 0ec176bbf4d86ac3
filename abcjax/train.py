"""The training loop: corpus -> dataset -> model -> compiled steps -> checkpoints and metrics.

`train_and_evaluate(config, workdir)` is the whole job, importable from a notebook; the CLI only
parses arguments and calls it. Running it again on the same workdir resumes from the latest
checkpoint (the newest that reads); Ctrl-C and SIGTERM save the current step before it returns.
Over several processes, all of them stop and save at one step they agree on (JAX's preemption sync
point): a process that stopped alone would leave the others waiting in a collective.

A run holds its workdir's lock (abcjax.lock) throughout, keeps its best checkpoint by validation
loss, may stop early when validation stops improving, and stops with an error when the loss turns
non-finite or runs away (abcjax.health), before anything of the diverged model is saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time

import jax
import ml_collections
from etils import epath
from jax.experimental import multihost_utils

from abcjax import (
    abc,
    abc_grammar,
    checkpoint,
    copying,
    corpus,
    data,
    evaluate,
    health,
    lock,
    metrics,
    parallel,
    sample,
    signals,
    steps,
    storage,
)
from abcjax import config as config_lib
from abcjax.cudnn_lstm import check_runs_here
from abcjax.errors import AbcjaxError
from abcjax.model import CharLstm, ModelConfig, count_params

_TUNES_SHOWN = 8  # sampled tunes written to TensorBoard as text each time; all of them are judged


@dataclasses.dataclass(frozen=True)
class TrainResult:
    step: int  # the step the run stopped at (and checkpointed)
    last_metrics: dict[str, float]  # the last figures logged, empty when no step ran
    stopped_by_signal: int | None  # SIGINT or SIGTERM when the run was interrupted


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | epath.PathLike) -> TrainResult:
    """Trains `config` in `workdir` (local or gs://), resuming from its latest checkpoint if there is one."""
    workdir = storage.as_path(workdir)
    storage.check_reachable(workdir, "--workdir")
    mesh = parallel.make_mesh()
    parallel.check_divisible(config.train.batch_size, mesh, "train.batch_size")
    check_runs_here(config.model.lstm)

    tunes = corpus.read_corpus(config.data.path, deduplicate=True)
    metrics.say(tunes.report.summary())
    dataset = data.make_dataset(
        tunes.tunes,
        config.data.seq_length,
        config.data.val_fraction,
        config.seed,
        config.data.path,
        config.data.transpose,
    )
    copies = f" + {dataset.num_transposed} transposed {config.data.transpose}" if dataset.num_transposed else ""
    metrics.say(
        f"vocabulary {dataset.vocab.size} characters; train {dataset.num_train_tunes} tunes{copies} "
        f"({len(dataset.train_tokens):,} chars), validation {dataset.num_val_tunes} tunes "
        f"({len(dataset.val_tokens):,} chars)"
    )

    # Only now that the inputs are good is the workdir touched, and only by the run that holds it.
    storage.make_directory(workdir, "the workdir")
    model = CharLstm(ModelConfig.from_config(config, dataset.vocab.size))
    tx = steps.make_optimizer(config)
    with lock.holding(workdir), checkpoint.Checkpoints(workdir, keep=config.train.keep_checkpoints) as store:
        if jax.process_index() == 0:
            copying.save_phrases(workdir, dataset.train_phrases)  # what sample --require novel checks against
        state, record = _initial_state(config, dataset.vocab, model, tx, store, mesh)
        metrics.say(f"model: {count_params(state.params):,} parameters; {_describe_devices(mesh)}")
        watch = health.Watch(config, dataset.vocab.size, record, mesh)
        return _run(config, workdir, dataset, model, tx, store, mesh, state, watch)


def _describe_devices(mesh) -> str:
    count, platform = mesh.devices.size, jax.devices()[0].platform.upper()
    plural = "s" if count > 1 else ""
    return f"data-parallel over {count} {platform} device{plural} in {jax.process_count()} process(es)"


def _initial_state(config, vocab, model, tx, store, mesh) -> tuple[steps.TrainState, health.ValidationRecord]:
    """A fresh state, or the newest checkpoint that reads, after checking it was made for this model.

    Newer checkpoints that cannot be read are moved aside (they would block saving those steps again).
    """
    fresh = parallel.replicate(steps.create_train_state(model, tx, config.seed), mesh)

    def read(step: int):
        saved_config, saved_vocab, record = store.restore_metadata(step)
        _check_same_run(config, vocab, saved_config, saved_vocab, store.directory)
        return store.restore_state(step, fresh, mesh), record

    found = store.newest_readable(read)
    if found is None:
        return fresh, health.ValidationRecord()
    step, (state, record) = found
    for damaged in [newer for newer in store.steps() if newer > step]:
        metrics.say(f"moved the unreadable checkpoint of step {damaged} to {store.move_aside(damaged)}")
    metrics.say(f"resuming from the checkpoint of step {step}")
    return state, health.ValidationRecord.from_json(record)


def _check_same_run(config, vocab, saved_config: dict, saved_vocab: dict, directory) -> None:
    """Refuses to resume a checkpoint made for another model, split or corpus."""
    # The model's shape, and the split: another seed or val_fraction would move validation tunes
    # into training mid-run.
    # (model.lstm only picks how the same arithmetic runs, so it may change.)
    must_match = {f"model.{key}": value for key, value in config.model.to_dict().items() if key != "lstm"}
    must_match |= {"seed": config.seed, "data.val_fraction": config.data.val_fraction}
    for key, value in must_match.items():
        section, _, name = key.rpartition(".")
        saved = (saved_config[section] if section else saved_config).get(name)
        if saved != value:
            raise AbcjaxError(
                f"{directory} was trained with {key}={saved!r}, but the config says {value!r}: "
                "use the same value to resume, or a new --workdir"
            )
    if data.Vocabulary.from_json(saved_vocab) != vocab:
        raise AbcjaxError(
            f"{directory} holds a model trained on other characters than {config.data.path} has: "
            "resume with the same data.path, or use a new --workdir"
        )


def _run(config, workdir, dataset, model, tx, store, mesh, state, watch) -> TrainResult:
    """The step loop: log, evaluate and checkpoint on schedule; stop cleanly on a signal, at an early
    stop, or with an error when the run diverges (see abcjax.health)."""
    train_cfg = config.train
    first_step, last_step = int(state.step), train_cfg.steps
    config_json = config_lib.to_json(config)
    metadata = (config.to_dict(), dataset.vocab.to_json())
    if first_step >= last_step:
        metrics.say(f"already trained to step {first_step}: raise --config.train.steps to train further")
        return TrainResult(first_step, {}, None)

    tokens = parallel.replicate(dataset.train_tokens, mesh)
    evaluate = _make_evaluator(dataset, model, mesh, config)
    sample_tunes = _make_tune_sampler(model, dataset, mesh, config)
    train_step = _compile(steps.make_train_step(model, tx, config, mesh), state, tokens)
    writer = metrics.MetricsWriter(workdir, first_step, audio_tunes=train_cfg.sample_audio_tunes)
    writer.write_config(config_json)
    progress = metrics.Progress(first_step, last_step)
    chars_per_step = train_cfg.batch_size * config.data.seq_length
    logged: dict[str, float] = {}
    try:
        with _stop_requests() as stop:
            for step in range(first_step + 1, last_step + 1):
                state, step_metrics = train_step(state, tokens)
                watch.track(state.step, step_metrics)
                stopping = stop.requested(step)  # read once: a signal may land at any point of this iteration
                final = step == last_step or stopping is not None
                # A stopping run saves at once: a spot VM's notice may not cover evaluation or sampling.
                do_eval = evaluate is not None and stopping is None and (step % train_cfg.eval_every == 0 or final)
                do_sample = sample_tunes is not None and stopping is None and step % train_cfg.sample_every == 0
                do_save = final or step % train_cfg.checkpoint_every == 0
                do_log = do_eval or do_sample or do_save or step % train_cfg.log_every == 0
                eval_metrics, early = None, False
                if do_log:
                    logged = {key: float(value) for key, value in step_metrics.items()}
                    watch.check_training(step, logged["train_loss"])
                    logged["step_time"] = progress.seconds_per_step(step)
                    logged["chars_per_sec"] = chars_per_step / logged["step_time"]
                    if do_eval:
                        eval_metrics = evaluate(state.params)
                        logged.update(eval_metrics)
                        do_save |= watch.validated(step, eval_metrics["eval_loss"], eval_metrics["eval_bpc"])
                        early = watch.stop_early()
                    if do_sample:
                        logged.update(sample_tunes(state.params, step, writer))
                    writer.write(step, logged)
                    progress.report(step, logged)
                if do_save or early:
                    watch.check_state(state, step)
                    store.save(state, *metadata, watch.record.to_json(), eval_metrics)
                if do_log or do_save:
                    progress.mark(step)  # evaluating, sampling and saving are not step time
                if stopping is not None:
                    metrics.say(f"stopped by {signal.Signals(stopping).name} at step {step}: checkpoint saved")
                    break
                if early:
                    _say_early_stop(step, watch.record)
                    break
        store.wait()  # a failed save is this run's error, before it says it is done
    finally:
        writer.close()
    return TrainResult(int(state.step), logged, stopping)


def _say_early_stop(step: int, record: health.ValidationRecord) -> None:
    metrics.say(
        f"stopped early at step {step}: validation has not improved for {record.passes_since_best} passes "
        f"since step {record.best_step} ({record.best_bpc:.3f} bits/char), the best checkpoint"
    )


def _compile(step_fn, state, tokens):
    """Compiles the train step ahead of the loop, so the first interval times training, not XLA."""
    started = time.perf_counter()
    compiled = step_fn.lower(state, tokens).compile()
    metrics.say(f"compiled the train step in {time.perf_counter() - started:.1f}s")
    return compiled


def _make_evaluator(dataset, model, mesh, config):
    """A function params -> {eval_loss, eval_bpc} over the validation split, or None without one."""
    if len(dataset.val_tokens) < 2:
        return None
    batches = data.make_eval_batches(dataset.val_tokens, config.data.seq_length, config.train.batch_size)
    arrays = [parallel.shard_rows(array, mesh, axis=1) for array in (batches.inputs, batches.targets, batches.weights)]
    eval_step = steps.make_eval_step(model, mesh)
    return lambda params: {key: float(value) for key, value in eval_step(params, *arrays).items()}


def _make_tune_sampler(model, dataset, mesh, config):
    """A function (params, step, writer) -> figures that samples train.sample_tunes tunes, logs the first
    few to TensorBoard and returns the batch's quality (well-formed, bars, variety, copied); None when off.

    The same seed every time, so each tune slot shows how one tune changes as the model learns, and
    the figures are those of `abcjax evaluate` against the training split.
    """
    train_cfg = config.train
    if not train_cfg.sample_every:
        return None
    checks = abc.parser_available()
    if not checks:
        metrics.say(f"{abc.PARSER_MISSING}: sampled tunes are logged without their checks")
    constraint = abc_grammar.Options() if train_cfg.sample_constrained else None
    options = sample.SamplingOptions(max_length=train_cfg.sample_max_length, constraint=constraint)
    sampler = sample.make_sampler(model, dataset.vocab, mesh, options, [sample.DEFAULT_PRIME])
    batch_size = parallel.round_up_to_devices(train_cfg.sample_tunes, mesh)

    def sample_tunes(params, step: int, writer: metrics.MetricsWriter) -> dict[str, float]:
        texts = [tune.text for tune in sampler(params, config.seed, train_cfg.sample_tunes, batch_size)]
        writer.write_samples(step, texts[:_TUNES_SHOWN])
        if not checks or jax.process_index() != 0:  # only process 0 logs figures, so only it checks tunes
            return {}
        figures = evaluate.quality(texts, dataset.train_phrases)
        return {f"sample_{name}": value for name, value in figures.items()}

    return sample_tunes


class _LocalStop:
    """One process: Ctrl-C and SIGTERM set a flag that the loop reads after each step."""

    signals = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None

    def handle(self, signum, frame) -> None:
        self.signum = signum

    def requested(self, step: int) -> int | None:
        return self.signum


class _AgreedStop:
    """Several processes: stop where JAX's preemption service says all of them stop.

    `jax.distributed.initialize` installed the service's own SIGTERM handler, which tells every
    process through the coordinator; each one's sync point then returns True at the same step (about
    a second after the signal). Ctrl-C is passed on to it as SIGTERM. A Python SIGTERM handler here
    would replace JAX's and break the agreement, so SIGTERM is left alone.
    """

    signals = (signal.SIGINT,)

    def handle(self, signum, frame) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def requested(self, step: int) -> int | None:
        return signal.SIGTERM if multihost_utils.reached_preemption_sync_point(step) else None


@contextlib.contextmanager
def _stop_requests():
    """The stop requests of this run (see `_LocalStop` and `_AgreedStop`), with their signal handlers."""
    stop = _AgreedStop() if jax.process_count() > 1 else _LocalStop()
    with signals.handling(stop.signals, stop.handle):
        yield stop

"""The numerical core: train state, optimizer, and the compiled data-parallel train and eval steps.

Each step is a per-device program (pmap semantics) written with `jax.shard_map` inside `jax.jit`
over the 1-D data mesh: every device computes the loss on its share of the batch, gradients and
metrics are averaged with `lax.pmean`, and every device applies the same update to its replica.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from abcjax.data import gather_windows, sample_window_starts
from abcjax.model import CharLstm, init_params
from abcjax.parallel import DATA_AXIS

LN2 = math.log(2.0)


@struct.dataclass
class TrainState:
    """What a checkpoint holds: resuming from it continues the run exactly."""

    step: jax.Array  # int32 scalar: optimizer steps taken
    params: dict
    opt_state: optax.OptState
    rng: jax.Array  # uint32 [2]: the run's base key; step keys are fold_in(rng, step)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up to the peak, then constant or cosine decay to zero at train.steps."""
    train = config.train
    warmup = train.warmup_steps
    if train.lr_schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, train.learning_rate, warmup, max(train.steps, warmup + 1), end_value=0.0
        )
    return optax.join_schedules(
        [optax.linear_schedule(0.0, train.learning_rate, warmup), optax.constant_schedule(train.learning_rate)],
        [warmup],
    )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Global-norm clipping, then Adam(W) on the schedule."""
    return optax.chain(
        optax.clip_by_global_norm(config.train.grad_clip),
        optax.adamw(learning_rate_schedule(config), weight_decay=config.train.weight_decay),
    )


def create_train_state(model: CharLstm, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """Parameters and optimizer state for step 0, all from `seed`."""
    params_rng, run_rng = jax.random.split(jax.random.PRNGKey(seed))
    params = init_params(model, params_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=run_rng)


def token_losses(model: CharLstm, params, inputs, targets, dropout_keys=None) -> jax.Array:
    """Cross-entropy of every target character [batch, time], in nats; dropout with per-row keys."""
    logits, _ = model.apply({"params": params}, inputs, dropout_keys=dropout_keys)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)


def _device_train_step(state, tokens, starts, dropout_rng, *, model, tx, schedule, seq_length):
    """One device's share of a step: its rows of the batch, then the averaged update."""
    inputs, targets = gather_windows(tokens, starts, seq_length)
    # Each row's dropout key comes from its place in the global batch, not from this device's index.
    rows = inputs.shape[0]
    global_rows = jax.lax.axis_index(DATA_AXIS) * rows + jnp.arange(rows)
    dropout_keys = jax.vmap(lambda row: jax.random.fold_in(dropout_rng, row))(global_rows)

    def loss_fn(params):
        return token_losses(model, params, inputs, targets, dropout_keys).mean()

    # Per-device gradients, as under pmap: differentiating the replicated params directly would
    # already sum the devices' gradients (the transpose of their implicit broadcast).
    device_params = jax.lax.pcast(state.params, DATA_AXIS, to="varying")
    loss, grads = jax.value_and_grad(loss_fn)(device_params)
    loss, grads = jax.lax.pmean((loss, grads), DATA_AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
    )
    metrics = {
        "train_loss": loss,
        "train_bpc": loss / LN2,
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": schedule(state.step),
    }
    return new_state, metrics


def make_train_step(
    model: CharLstm, tx: optax.GradientTransformation, config: ml_collections.ConfigDict, mesh: Mesh
) -> Callable[[TrainState, jax.Array], tuple[TrainState, dict]]:
    """The compiled step `(state, train_tokens) -> (state, metrics)`; the state's buffers are donated.

    The batch is drawn inside the step from fold_in(rng, step): the same windows whatever the
    device count, and a resumed run sees exactly the batches an uninterrupted one would.
    """
    seq_length, batch_size = config.data.seq_length, config.train.batch_size
    device_step = functools.partial(
        _device_train_step, model=model, tx=tx, schedule=learning_rate_schedule(config), seq_length=seq_length
    )
    sharded_step = jax.shard_map(device_step, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS), P()), out_specs=(P(), P()))

    def train_step(state: TrainState, tokens: jax.Array):
        data_rng, dropout_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
        starts = sample_window_starts(data_rng, tokens.shape[0], seq_length, batch_size)
        return sharded_step(state, tokens, starts, dropout_rng)

    return jax.jit(train_step, donate_argnums=0)


def _device_eval(params, inputs, targets, weights, *, model):
    """Summed loss and target count of this device's rows of every validation batch."""

    def batch_sums(batch):
        batch_inputs, batch_targets, batch_weights = batch
        losses = token_losses(model, params, batch_inputs, batch_targets)
        return (losses * batch_weights).sum(), batch_weights.sum()

    loss_sums, counts = jax.lax.map(batch_sums, (inputs, targets, weights))
    loss_sum, count = loss_sums.sum(), counts.sum()
    return jax.lax.psum((loss_sum, count), DATA_AXIS)


def make_eval_step(model: CharLstm, mesh: Mesh) -> Callable[..., dict]:
    """The compiled pass over the whole validation split -> {eval_loss, eval_bpc}; deterministic."""
    rows = P(None, DATA_AXIS)
    sharded_eval = jax.shard_map(
        functools.partial(_device_eval, model=model), mesh=mesh, in_specs=(P(), rows, rows, rows), out_specs=P()
    )

    def eval_step(params, inputs, targets, weights):
        loss_sum, count = sharded_eval(params, inputs, targets, weights)
        loss = loss_sum / count
        return {"eval_loss": loss, "eval_bpc": loss / LN2}

    return jax.jit(eval_step)

"""A trained model read back from a workdir: its config, vocabulary and parameters.

Everything needed to use a checkpoint comes from the checkpoint itself, so a run directory copied
to a laptop samples there, whatever device count trained it.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from abcjax import steps
from abcjax.checkpoint import Checkpoints
from abcjax.data import Vocabulary
from abcjax.model import CharLstm, ModelConfig


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    step: int
    config: ml_collections.ConfigDict
    vocab: Vocabulary
    model: CharLstm
    params: dict  # replicated on the mesh it was loaded for

    def tokens_to_logits(self, params):
        return one_tune_model(self.model, params)

    def zero_carry(self, num_tunes: int, like: jax.Array):
        """Zero LSTM state for `num_tunes` tunes, typed like `like` (varying under shard_map)."""
        zeros = jnp.zeros_like(like, jnp.float32)[:, None] + jnp.zeros((self.model.config.hidden_size,))
        return tuple((zeros, zeros) for _ in range(self.model.config.num_layers))


def one_tune_model(model: CharLstm, params):
    """The model as the sampler wants it: one character of one tune in, its logits and state out."""

    def tokens_to_logits(token, carry):
        batched = jax.tree_util.tree_map(lambda x: x[None], carry)
        logits, carries = model.apply({"params": params}, token[None, None], batched)
        return logits[0, 0], jax.tree_util.tree_map(lambda x: x[0], carries)

    return tokens_to_logits


def load_trained(workdir: str | pathlib.Path, step: int | None, mesh: Mesh) -> TrainedModel:
    """The checkpoint of `step` (default the latest) in `workdir`, parameters replicated on `mesh`."""
    store = Checkpoints(workdir, read_only=True)
    try:
        step, saved_config, saved_vocab = store.restore_metadata(step)
        config = ml_collections.ConfigDict(saved_config)
        vocab = Vocabulary.from_json(saved_vocab)
        model = CharLstm(ModelConfig.from_config(config, vocab.size))
        tx = steps.make_optimizer(config)
        target = jax.eval_shape(lambda: steps.create_train_state(model, tx, config.seed))
        state = store.restore_state(step, target, mesh)
    finally:
        store.close()
    return TrainedModel(step, config, vocab, model, state.params)

"""A trained model read back from a workdir: its config, vocabulary and parameters.

Everything needed to use a checkpoint comes from the checkpoint itself, so a run directory copied
to a laptop samples there, whatever device count trained it, cuDNN's LSTM included.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
from etils import epath
from jax.sharding import Mesh

from abcjax import steps, storage
from abcjax.checkpoint import Checkpoints, Choice
from abcjax.cudnn_lstm import portable_implementation
from abcjax.data import Vocabulary
from abcjax.model import CharLstm, ModelConfig


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    choice: Choice  # the step, how it was chosen, and its validation bits/char
    config: ml_collections.ConfigDict
    vocab: Vocabulary
    model: CharLstm
    params: dict  # replicated on the mesh it was loaded for

    @property
    def step(self) -> int:
        return self.choice.step


def load_trained(workdir: str | epath.PathLike, which: str | int, mesh: Mesh) -> TrainedModel:
    """The checkpoint `which` names in `workdir` (local or gs://), replicated on `mesh`.

    `which` is "best" (lowest validation loss; the latest when none was validated), "latest" (the
    newest that reads, saying which newer ones it skipped) or a step number. A checkpoint that
    cannot be read is an error naming its step, unless "latest" can fall back to an older one.
    """
    workdir = storage.as_path(workdir)
    storage.check_reachable(workdir, "--workdir")
    with Checkpoints(workdir, read_only=True) as store:
        chosen, how = store.choose(which)

        def read(step: int) -> TrainedModel:
            saved_config, saved_vocab, _ = store.restore_metadata(step)
            config = ml_collections.ConfigDict(saved_config)
            vocab = Vocabulary.from_json(saved_vocab)
            model_config = ModelConfig.from_config(config, vocab.size)
            model = CharLstm(dataclasses.replace(model_config, lstm=portable_implementation(model_config.lstm)))
            tx = steps.make_optimizer(config)
            target = jax.eval_shape(lambda: steps.create_train_state(model, tx, config.seed))
            params = store.restore_params(step, target.params, mesh)
            return TrainedModel(store.describe(step, how), config, vocab, model, params)

        if how != "latest":
            return read(chosen)
        return store.newest_readable(read, newest=chosen)[1]

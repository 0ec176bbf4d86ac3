"""The README's main job: a smaller model that trains on a 2-core CPU in about 4 minutes.

Embedding(128) -> LSTM(512) -> Dense, 1,200 steps of 32 x 100 characters with warm-up and cosine
decay: enough for tunes that are mostly well-formed ABC. Longer runs of this model on the bundled
corpus lower the training loss but raise the validation loss (it starts to memorise tunes).

    abcjax train --config configs/demo.py --workdir runs/demo
"""

import default


def get_config():
    config = default.get_config()
    config.model.embed_dim = 128
    config.model.hidden_size = 512
    config.train.steps = 1200
    config.data.transpose = ()  # the main job trains on the tunes as written (transposing is not measured here)
    # The smaller model's measured recipe (docs/recipe.md): Adam 5e-3 on a cosine, no dropout.
    config.model.dropout = 0.0
    config.train.learning_rate = 5e-3
    config.train.weight_decay = 0.0
    config.train.early_stop_evals = 0
    config.train.log_every = 100
    config.train.eval_every = 300
    config.train.checkpoint_every = 300
    return config

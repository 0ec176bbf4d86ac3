"""The README's main job: a smaller model that trains on a 2-core CPU in about 7 minutes.

Embedding(128) -> LSTM(512) -> Dense, 2,500 steps of 32 x 100 characters with warm-up and cosine
decay: enough for tunes that are mostly well-formed ABC.

    abcjax train --config configs/demo.py --workdir runs/demo
"""

import default


def get_config():
    config = default.get_config()
    config.model.embed_dim = 128
    config.model.hidden_size = 512
    config.train.steps = 2500
    config.train.lr_schedule = "cosine"
    config.train.warmup_steps = 100
    config.train.log_every = 100
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    return config

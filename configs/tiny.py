"""A model that trains in seconds, for tests and quick checks of the whole pipeline.

abcjax train --config configs/tiny.py --workdir /tmp/tiny
"""

import default


def get_config():
    config = default.get_config()
    config.data.seq_length = 16
    config.model.embed_dim = 8
    config.model.hidden_size = 16
    config.train.batch_size = 8
    config.train.steps = 4
    config.train.log_every = 2
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    return config

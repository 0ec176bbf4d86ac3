"""A model that trains in seconds, for tests and quick checks of the whole pipeline.

abcjax train --config configs/tiny.py --workdir /tmp/tiny
"""

import default


def get_config():
    config = default.get_config()
    config.data.seq_length = 16
    config.data.transpose = ()  # the bundled tunes as written: no abc2abc run before each test's training
    config.model.embed_dim = 8
    config.model.hidden_size = 16
    config.train.batch_size = 8
    config.train.steps = 4
    # Plain Adam at a constant rate: four steps learn something, and tests read every figure.
    config.model.dropout = 0.0
    config.train.learning_rate = 5e-3
    config.train.lr_schedule = "constant"
    config.train.warmup_steps = 0
    config.train.weight_decay = 0.0
    config.train.early_stop_evals = 0
    config.train.log_every = 2
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    return config

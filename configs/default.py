"""The seed model: Embedding(256) -> LSTM(1024) -> Dense(vocabulary), batch 32 x 100 characters.

On the bundled 83-character corpus this is 5,353,299 parameters, as in the classic exercise. Its
recipe (every training tune also a tone up and a tone down, dropout 0.5, AdamW 2e-3 with weight decay
0.1 on a cosine over 1,500 steps, early stop) was chosen by measurement (docs/recipe.md): the seed's
Adam 5e-3 memorises the 720 training tunes after 500 steps.

    abcjax train --config configs/default.py --workdir runs/irish
"""

import pathlib

import ml_collections

BUNDLED_CORPUS = pathlib.Path(__file__).resolve().parents[1] / "data" / "irish.abc"


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Seeds the train/validation split, the initial parameters, the batches and dropout.
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    # An .abc file, a directory of them, or several of either separated by commas.
    config.data.path = str(BUNDLED_CORPUS)
    # Characters the model reads per window; each window is seq_length + 1 characters.
    config.data.seq_length = 100
    # Share of whole tunes held out for validation (0 turns validation off).
    config.data.val_fraction = 0.1
    # Semitone shifts whose transposed copies of every training tune are added to training (abc2abc;
    # validation keeps the tunes as they are), e.g. (-2, 2); () trains on the tunes as written.
    config.data.transpose = (-2, 2)

    config.model = ml_collections.ConfigDict()
    # Width of the character embedding.
    config.model.embed_dim = 256
    # Units in each LSTM layer.
    config.model.hidden_size = 1024
    # Stacked LSTM layers.
    config.model.num_layers = 1
    # Dropout rate on each LSTM layer's output (0 turns it off).
    config.model.dropout = 0.5
    # Compute dtype of the matmuls: float32, or bfloat16/float16 on accelerators; bfloat16 also on
    # CPUs with native bf16 (AVX512_BF16 or AMX). Parameters and the LSTM cell state stay float32.
    config.model.dtype = "float32"
    # The LSTM recurrence: fused (a hand-written backward pass, fastest on CPU), reference (the
    # plain scan that JAX differentiates), or cudnn (NVIDIA GPUs only, float32). Same parameters
    # and results; resuming may switch it.
    config.model.lstm = "fused"

    config.train = ml_collections.ConfigDict()
    # Global batch: windows per step across all devices (a multiple of the device count).
    config.train.batch_size = 32
    # Total optimizer steps; running again with more steps on the same workdir continues the run.
    config.train.steps = 1500
    # Peak learning rate of Adam(W).
    config.train.learning_rate = 2e-3
    # constant, or cosine (decay to zero at train.steps after the warm-up).
    config.train.lr_schedule = "cosine"
    # Steps of linear warm-up from zero to the peak learning rate.
    config.train.warmup_steps = 100
    # AdamW's decoupled weight decay (0 is plain Adam).
    config.train.weight_decay = 0.1
    # Gradients are clipped to this global norm.
    config.train.grad_clip = 1.0
    # Steps between progress lines and logged metrics (TensorBoard, metrics.jsonl).
    config.train.log_every = 50
    # Steps between validation passes over the whole validation split.
    config.train.eval_every = 250
    # Steps between checkpoints (one is also saved at the end, on Ctrl-C or SIGTERM, and at each
    # validation pass that sets a new best).
    config.train.checkpoint_every = 250
    # The latest checkpoints kept in WORKDIR/checkpoints; older ones are deleted, except the best
    # (lowest validation loss), which is always kept: abcjax sample uses it by default.
    config.train.keep_checkpoints = 3
    # Stop after this many validation passes in a row without a new best validation loss (0: never).
    config.train.early_stop_evals = 3
    # Steps between sampling tunes and logging their quality as evaluate judges it: well-formed, bars
    # match meter, share repeating another's phrases, share copying training phrases (0 turns it off).
    config.train.sample_every = 500
    # Tunes sampled each time (rounded up to a multiple of the device count); the first 8 go to
    # TensorBoard as text.
    config.train.sample_tunes = 64
    # Characters per sampled tune at most.
    config.train.sample_max_length = 600
    # Sample them as `abcjax sample` does by default: well-formed, every bar full, by construction; the
    # figures then show only what the model writes within those bounds (copying, variety). Off, they
    # are free tunes, whose form shows how far the model itself has learned ABC.
    config.train.sample_constrained = False
    # Of those, how many also go to TensorBoard as sound (abc2midi, then fluidsynth or timidity; 0: none).
    config.train.sample_audio_tunes = 2
    return config

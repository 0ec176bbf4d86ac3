"""Soak: a training run killed 20 times in a row at random moments, by SIGTERM and SIGKILL in turn,
and resumed each time, ends with the state of an uninterrupted run, bit for bit.

Each kill is sent when the run prints a randomly chosen line of its output, so the kills land
during start-up, between steps, during validation passes and while checkpoints are written. The
run is long enough that no attempt finishes it; a last, uninterrupted attempt does. Part of the
normal suite (about two minutes on 2 cores); `-m "not soak"` leaves it out.
"""

import itertools
import random
import re
import signal

import jax
import numpy as np
import pytest

from conftest import TINY_CONFIG, interrupt_abcjax, latest_saved, run_abcjax

KILLS = 20
STEPS = 200  # more than 20 attempts of at most a dozen steps each can train
TRAIN = (
    *("train", "--config", str(TINY_CONFIG), f"--config.train.steps={STEPS}", "--config.train.log_every=1"),
    *("--config.train.checkpoint_every=3", "--config.train.eval_every=5", "--config.train.keep_checkpoints=2"),
)


@pytest.mark.soak
def test_twenty_random_kills_and_resumes_end_with_the_state_of_an_uninterrupted_run(tmp_path):
    straight = run_abcjax(*TRAIN, "--workdir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr

    soaked = tmp_path / "soaked"
    rng = random.Random(19)
    resumed_from, saved_on_sigterm = set(), 0
    for attempt in range(KILLS):
        signum = (signal.SIGTERM, signal.SIGKILL)[attempt % 2]
        lines = itertools.count()
        at_line = rng.randrange(14)  # start-up prints about 6 lines, then one per step
        stdout, stderr, code = interrupt_abcjax(
            *TRAIN,
            "--workdir",
            str(soaked),
            when=lambda line, at_line=at_line, lines=lines: next(lines) == at_line,
            how=lambda process, signum=signum: process.send_signal(signum),
        )
        assert code in (-signal.SIGKILL, -signal.SIGTERM, 128 + signal.SIGTERM), (attempt, code, stderr)
        assert "Traceback" not in stderr and "Event loop is closed" not in stderr, stderr
        resumed_from.update(re.findall(r"resuming from the checkpoint of step (\d+)", stdout))
        saved_on_sigterm += code == 128 + signal.SIGTERM
    last = run_abcjax(*TRAIN, "--workdir", str(soaked))
    assert last.returncode == 0, last.stderr

    assert len(resumed_from) >= 5 and saved_on_sigterm >= 2  # the kills did land mid-run, both kinds
    (straight, expected), (soaked, state) = latest_saved(tmp_path / "straight"), latest_saved(soaked)
    assert straight.step == soaked.step == STEPS
    assert jax.tree.structure(state) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(want))

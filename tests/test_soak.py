"""Soak: a training run killed 20 times in a row at random moments, by SIGTERM and SIGKILL in turn,
and resumed each time, ends with the state of an uninterrupted run, bit for bit.

Each kill is sent when the run prints a randomly chosen line of its output, so the kills land
during start-up, between steps, during validation passes and while checkpoints are written. The
run is long enough that no attempt finishes it; a last, uninterrupted attempt does. Part of the
normal suite (about two minutes on 2 cores); `-m "not soak"` leaves it out.
"""

import concurrent.futures
import random
import re
import signal

import jax
import numpy as np
import pytest

from conftest import TINY_CONFIG, interrupt_abcjax, latest_saved, run_abcjax

KILLS = 20
STEPS = 240  # more than the 20 attempts train (about 160 steps)
TRAIN = (
    *("train", "--config", str(TINY_CONFIG), f"--config.train.steps={STEPS}", "--config.train.log_every=1"),
    *("--config.train.checkpoint_every=3", "--config.train.eval_every=5", "--config.train.keep_checkpoints=2"),
)


@pytest.mark.soak
def test_twenty_random_kills_and_resumes_end_with_the_state_of_an_uninterrupted_run(tmp_path):
    pool = concurrent.futures.ThreadPoolExecutor(1)  # the uninterrupted run, beside the interrupted ones
    straight = pool.submit(run_abcjax, *TRAIN, "--workdir", str(tmp_path / "straight"))
    soaked = tmp_path / "soaked"
    rng = random.Random(19)
    resumed_from, saved_on_sigterm = set(), 0
    for attempt in range(KILLS):
        signum = (signal.SIGTERM, signal.SIGKILL)[attempt % 2]
        seen: list[str] = []  # the lines read before the kill; interrupt_abcjax returns those after it
        at_line = rng.randrange(3, 25)  # start-up prints about 7 lines, then one per step
        rest, stderr, code = interrupt_abcjax(
            *TRAIN,
            "--workdir",
            str(soaked),
            when=lambda line, at_line=at_line, seen=seen: seen.append(line) or len(seen) > at_line,
            how=lambda process, signum=signum: process.send_signal(signum),
        )
        stdout = "".join(seen) + rest
        assert code in (-signal.SIGKILL, -signal.SIGTERM, 128 + signal.SIGTERM), (attempt, code, stderr)
        assert "Traceback" not in stderr and "Event loop is closed" not in stderr, stderr
        resumed_from.update(re.findall(r"resuming from the checkpoint of step (\d+)", stdout))
        saved_on_sigterm += code == 128 + signal.SIGTERM
    last = run_abcjax(*TRAIN, "--workdir", str(soaked))
    assert last.returncode == 0, last.stderr
    assert straight.result().returncode == 0, straight.result().stderr
    pool.shutdown()

    assert len(resumed_from) >= 5 and saved_on_sigterm >= 2  # the kills did land mid-run, both kinds
    (straight, expected), (soaked, state) = latest_saved(tmp_path / "straight"), latest_saved(soaked)
    assert straight.step == soaked.step == STEPS
    assert jax.tree.structure(state) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(want))

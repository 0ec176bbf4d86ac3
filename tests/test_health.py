"""The rules that stop a run (non-finite, runaway) and keep its best (abcjax.health), on given figures."""

import jax.numpy as jnp
import numpy as np
import pytest

from abcjax import health
from abcjax.errors import AbcjaxError
from abcjax.parallel import make_mesh
from conftest import tiny_config


def _watch(*overrides, record=None):
    return health.Watch(tiny_config(*overrides), 83, record or health.ValidationRecord(), make_mesh())


def test_validation_below_three_times_its_best_goes_on_and_above_it_stops_the_run():
    watch = _watch()
    assert watch.validated(10, 1.5, 2.16)
    assert not watch.validated(20, 4.49, 6.48)  # overfitting, however bad, is not a runaway
    with pytest.raises(
        AbcjaxError,
        match=r"training ran away at step 30: the validation loss 4.51 is over 3 times "
        r"its best \(1.5 at step 10\); nothing from that step on is saved, the best checkpoint "
        r"\(step 10\) and the earlier checkpoints are kept: lower train.learning_rate",
    ):
        watch.validated(30, 4.51, 6.51)


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_a_non_finite_validation_loss_stops_the_run(loss):
    with pytest.raises(AbcjaxError, match=f"training diverged at step 10: the validation loss became {loss}"):
        _watch().validated(10, loss, loss)


def test_a_training_loss_three_times_that_of_guessing_stops_the_run():
    watch = _watch()
    watch.check_training(1, 3 * np.log(83) - 0.01)
    expected = r"ran away at step 2: the training loss 13.27 is over 3 times that of guessing every character \(4.42\)"
    with pytest.raises(AbcjaxError, match=expected):
        watch.check_training(2, 3 * np.log(83) + 0.01)


def test_the_first_non_finite_step_is_named_even_when_checked_later():
    watch = _watch()
    finite = {"train_loss": jnp.float32(4.0), "grad_norm": jnp.float32(1.0)}
    watch.track(jnp.int32(1), finite)
    watch.track(jnp.int32(2), {"train_loss": jnp.float32(4.0), "grad_norm": jnp.float32(np.inf)})
    watch.track(jnp.int32(3), {"train_loss": jnp.float32(np.nan), "grad_norm": jnp.float32(np.nan)})
    with pytest.raises(AbcjaxError, match="training diverged at step 2: the training loss or gradient norm"):
        watch.check_training(3, 4.0)


def test_a_state_with_a_nan_is_never_saved():
    watch = _watch()
    watch.check_state({"step": jnp.int32(3), "params": jnp.ones(3)}, 3)
    with pytest.raises(AbcjaxError, match="training diverged at step 3: the parameters or optimizer state"):
        watch.check_state({"step": jnp.int32(3), "params": jnp.array([1.0, np.nan])}, 3)


def test_early_stop_counts_passes_since_the_best_and_a_new_best_starts_again():
    watch = _watch("--config.train.early_stop_evals=2")
    watch.validated(10, 2.0, 2.9)
    watch.validated(20, 2.1, 3.0)
    assert not watch.stop_early()
    watch.validated(30, 1.9, 2.7)
    watch.validated(40, 2.0, 2.9)
    assert not watch.stop_early() and watch.record == health.ValidationRecord(30, 1.9, 2.7, 1)
    watch.validated(50, 2.0, 2.9)
    assert watch.stop_early()
    assert not _watch(record=watch.record).stop_early()  # early_stop_evals=0: never

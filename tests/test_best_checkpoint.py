"""The best checkpoint by validation loss: kept whatever comes after it, sampled by default, known
again after a resume; and the early stop that ends a run whose validation no longer improves.

A small model memorises nine tunes, so its validation loss really falls and then rises."""

import json

import pytest

from abcjax.checkpoint import Checkpoints
from abcjax.generate import SampleRequest, generate
from abcjax.sample import SamplingOptions
from abcjax.train import train_and_evaluate
from conftest import BUNDLED_CORPUS, tiny_config

pytestmark = pytest.mark.xdist_group("test_best_checkpoint")  # one worker: its module fixture is built once

EARLY_STOP = 3
EVAL_EVERY = 10
OVERFIT = (
    "--config.data.val_fraction=0.25",
    "--config.data.seq_length=32",
    "--config.model.embed_dim=16",
    "--config.model.hidden_size=64",
    "--config.train.batch_size=16",
    "--config.train.learning_rate=0.03",
    f"--config.train.eval_every={EVAL_EVERY}",
    f"--config.train.log_every={EVAL_EVERY}",
    "--config.train.checkpoint_every=1000",  # only the best and the last are saved
    "--config.train.keep_checkpoints=1",
    f"--config.train.early_stop_evals={EARLY_STOP}",
)


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory):
    """(workdir, result of the resumed run): trained to step 70, then resumed for up to 100 steps."""
    tmp = tmp_path_factory.mktemp("overfit")
    tunes = BUNDLED_CORPUS.read_text(encoding="utf-8").split("\n\n")[:12]
    corpus = tmp / "twelve.abc"
    corpus.write_text("\n\n".join(tunes) + "\n", encoding="utf-8")
    workdir = tmp / "run"
    config = (*OVERFIT, f"--config.data.path={corpus}")
    train_and_evaluate(tiny_config(*config, "--config.train.steps=70"), workdir)
    result = train_and_evaluate(tiny_config(*config, "--config.train.steps=100"), workdir)
    return workdir, result


def _evals(workdir) -> dict[int, dict]:
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line for line in lines if "eval_loss" in line}


def test_validation_rises_after_its_best_and_the_best_checkpoint_is_kept(overfit_run):
    workdir, result = overfit_run
    evals = _evals(workdir)
    best = min(evals, key=lambda step: evals[step]["eval_loss"])
    assert evals[result.step]["eval_loss"] > 1.05 * evals[best]["eval_loss"]  # it rose for real
    with Checkpoints(workdir, read_only=True) as store:
        assert store.steps() == [best, result.step]  # keep_checkpoints=1 kept the last, and the best too
        assert store.best_step() == best


def test_the_resumed_run_knows_its_best_and_stops_early_after_passes_without_a_better_one(overfit_run):
    workdir, result = overfit_run
    evals = _evals(workdir)
    best = min(evals, key=lambda step: evals[step]["eval_loss"])
    assert best < 70 < result.step  # the best was found before the resume, the stop came after it
    assert result.step == best + EARLY_STOP * EVAL_EVERY < 100
    assert max(evals) == result.step  # nothing was trained after the stop
    with Checkpoints(workdir, read_only=True) as store:
        _, _, record = store.restore_metadata(result.step)
    assert record == {
        "best_step": best,
        "best_loss": evals[best]["eval_loss"],
        "best_bpc": evals[best]["eval_bpc"],
        "passes_since_best": EARLY_STOP,
    }


@pytest.mark.parametrize("step, how", [("best", "the best"), ("latest", "the latest")])
def test_sample_uses_the_best_step_by_default_and_names_it_with_its_validation(tmp_path, overfit_run, step, how):
    workdir, result = overfit_run
    evals = _evals(workdir)
    best = min(evals, key=lambda step: evals[step]["eval_loss"])
    chosen = best if step == "best" else result.step
    out = tmp_path / "book.abc"
    generate(SampleRequest(workdir=str(workdir), num_tunes=2, out=str(out), step=step))
    assert out.read_text().splitlines()[0] == (
        f"% abcjax sample: checkpoint step {chosen} ({how}; validation {evals[chosen]['eval_bpc']:.3f} bits/char) "
        f"of {workdir}"
    )


def test_without_a_validation_figure_sample_uses_the_latest_with_a_note(tmp_path, capsys):
    workdir = tmp_path / "run"
    train_and_evaluate(tiny_config("--config.data.val_fraction=0", "--config.train.steps=4"), workdir)
    out = tmp_path / "book.abc"
    generate(SampleRequest(workdir=str(workdir), num_tunes=2, out=str(out), options=SamplingOptions(max_length=20)))
    stdout = capsys.readouterr().out
    assert f"note: no checkpoint in {workdir / 'checkpoints'} has a validation figure: using the latest" in stdout
    assert out.read_text().startswith(f"% abcjax sample: checkpoint step 4 (the latest; not validated) of {workdir}")

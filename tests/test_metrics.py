"""Promises of abcjax.metrics beyond the scalars: the sampled tunes reach TensorBoard as sound, and a run
ends with its config and final figures in TensorBoard's HParams table. Read back with TensorBoard's own
EventAccumulator."""

import io
import json
import threading
import wave

import pytest
from etils import epath
from tensorboard.backend.event_processing.event_accumulator import AUDIO, EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from abcjax import metrics, render
from abcjax.corpus import read_corpus
from conftest import BUNDLED_CORPUS, tiny_config

GARBAGE = "X:1\nT:Noise\nK:Qxyz\n@@AB|"  # what an untrained model writes: no tool reads it


def _bundled(title: str) -> str:
    return next(tune for tune in read_corpus(str(BUNDLED_CORPUS)).tunes if f"\nT:{title}\n" in tune)


def _events(directory) -> EventAccumulator:
    events = EventAccumulator(str(directory), size_guidance={AUDIO: 0})  # 0: keep every audio event
    events.Reload()
    return events


def test_the_first_sampled_tunes_reach_tensorboard_as_sound_at_each_sampling_step(tmp_path) -> None:
    kate, cooleys = _bundled("Bonnie Kate"), _bundled("Cooley's")
    writer = metrics.MetricsWriter(epath.Path(tmp_path), 0, audio_tunes=2)
    writer.write_samples(10, [kate, GARBAGE, cooleys])  # the third is past audio_tunes
    writer.write_samples(20, [cooleys, kate, GARBAGE])
    writer.close()
    events = _events(tmp_path)
    assert sorted(events.Tags()["audio"]) == ["samples/tune_1", "samples/tune_2"]
    logged = {tag: [(event.step, event) for event in events.Audio(tag)] for tag in events.Tags()["audio"]}
    assert [step for step, _ in logged["samples/tune_1"]] == [10, 20]
    assert [step for step, _ in logged["samples/tune_2"]] == [20]  # the garbage at step 10 has no sound
    lengths = {  # each tune played on its own, cut at AUDIO_MAX_S
        tune: min(len(render.tune_audio(tune, metrics.AUDIO_RATE)), metrics.AUDIO_MAX_S * metrics.AUDIO_RATE)
        for tune in (kate, cooleys)
    }
    heard = {(10, "samples/tune_1"): kate, (20, "samples/tune_1"): cooleys, (20, "samples/tune_2"): kate}
    for (step, tag), tune in heard.items():
        event = dict(logged[tag])[step]
        with wave.open(io.BytesIO(event.encoded_audio_string)) as sound:
            shape = (sound.getnchannels(), sound.getsampwidth(), sound.getframerate(), sound.getnframes())
        expected = lengths[tune]
        assert shape == (1, 2, metrics.AUDIO_RATE, expected) and event.length_frames == expected
        assert expected > 10 * metrics.AUDIO_RATE  # both tunes last over 10 s (Bonnie Kate over AUDIO_MAX_S)
    texts = [event.tensor_proto.string_val[0].decode() for event in events.Tensors("samples/text_summary")]
    assert len(texts) == 2 and "Noise" in texts[0]  # every tune is still logged as text


def test_without_sound_tools_the_samples_are_text_only_after_one_notice(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    writer = metrics.MetricsWriter(epath.Path(tmp_path), 0, audio_tunes=2)
    for step in (10, 20):
        writer.write_samples(step, [_bundled("Bonnie Kate")])
    writer.close()
    assert capsys.readouterr().out == (
        f"sampled tunes go to TensorBoard as text only, not as sound: {render.available_formats()['wav']}\n"
    )
    events = _events(tmp_path)
    assert events.Tags()["audio"] == []
    assert [event.step for event in events.Tensors("samples/text_summary")] == [10, 20]


def test_sound_that_falls_behind_sampling_is_skipped_with_one_notice(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(metrics, "AUDIO_BACKLOG", 1)
    all_sampled = threading.Event()  # the real renderer waits until every step is sampled, as a slow one would
    render_audio = render.tune_audio
    monkeypatch.setattr(render, "tune_audio", lambda *args: all_sampled.wait() and render_audio(*args))
    writer = metrics.MetricsWriter(epath.Path(tmp_path), 0, audio_tunes=1)
    for step in (10, 20, 30):
        writer.write_samples(step, [_bundled("Cooley's")])
    all_sampled.set()
    writer.close()
    notice = "step 20: tunes are sampled faster than their sound is made; some steps get none"
    assert capsys.readouterr().out == notice + "\n"
    events = _events(tmp_path)
    assert [event.step for event in events.Audio("samples/tune_1")] == [10]
    assert [event.step for event in events.Tensors("samples/text_summary")] == [10, 20, 30]


def test_a_run_ends_with_its_config_and_final_figures_in_the_hparams_table(tiny_workdir) -> None:
    logged = [json.loads(line) for line in (tiny_workdir / "metrics.jsonl").read_text().splitlines()]
    events = _events(tiny_workdir)
    plugin = {
        tag: plugin_data_pb2.HParamsPluginData.FromString(content)
        for tag, content in events.PluginTagToContent("hparams").items()
    }
    assert set(plugin) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    hparams = plugin["_hparams_/session_start_info"].session_start_info.hparams
    config = tiny_config()
    assert hparams["train.steps"].number_value == 4 and hparams["model.hidden_size"].number_value == 16
    assert hparams["data.path"].string_value == config.data.path
    sections = config.to_dict().values()
    assert len(hparams) == sum(len(section) if isinstance(section, dict) else 1 for section in sections)
    figures = {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in _hparam_tags(events)}
    eval_bpcs = [entry["eval_bpc"] for entry in logged]
    assert len(eval_bpcs) == 2 and figures == {  # tiny_workdir's run samples no tunes: no sample fractions
        "hparams/final_eval_bpc": [(4, pytest.approx(eval_bpcs[-1]))],
        "hparams/best_eval_bpc": [(4, pytest.approx(min(eval_bpcs)))],
        "hparams/final_train_bpc": [(4, pytest.approx(logged[-1]["train_bpc"]))],
    }
    experiment = plugin["_hparams_/experiment"].experiment
    assert {info.name.tag for info in experiment.metric_infos} == set(figures)


def _hparam_tags(events: EventAccumulator) -> list[str]:
    return [tag for tag in events.Tags()["scalars"] if tag.startswith("hparams/")]


def test_final_figures_take_the_last_and_the_best_of_the_logged_steps() -> None:
    logged = [
        {"step": 2, "train_bpc": 5.0, "eval_bpc": 4.0},
        {"step": 4, "train_bpc": 3.0, "eval_bpc": 3.5, "sample_well_formed_fraction": 0.25},
        {"step": 6, "train_bpc": 2.0, "eval_bpc": 3.7},
        {"step": 7, "train_bpc": 1.5},
    ]
    assert metrics.final_figures(logged) == {
        "hparams/final_eval_bpc": 3.7,
        "hparams/final_train_bpc": 1.5,
        "hparams/best_eval_bpc": 3.5,
        "hparams/final_sample_well_formed_fraction": 0.25,
    }
    assert metrics.final_figures([]) == {}

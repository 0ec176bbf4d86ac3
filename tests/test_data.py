"""Vocabulary, encoding, the split by whole tunes, and the windows the trainer reads."""

import jax
import numpy as np
import pytest

from abcjax import corpus, data
from abcjax.errors import AbcjaxError
from conftest import BUNDLED_CORPUS

TUNES = tuple(f"X:{i}\nT:T{i}\nK:G\nGABc|d{i}" for i in range(10))


def test_vocabulary_is_sorted_and_has_the_83_characters_of_the_bundled_corpus():
    tunes = corpus.read_corpus(str(BUNDLED_CORPUS)).tunes
    vocab = data.Vocabulary.from_texts(list(tunes))
    assert vocab.size == 83
    assert list(vocab.chars) == sorted(vocab.chars)
    assert vocab.char2idx == {char: index for index, char in enumerate(vocab.chars)}


def test_encode_decode_round_trip_and_json_round_trip():
    vocab = data.Vocabulary.from_texts(list(TUNES))
    text = data.join_tunes(list(TUNES))
    ids = vocab.encode(text)
    assert ids.dtype == np.int32
    assert vocab.decode(ids) == text
    assert data.Vocabulary.from_json(vocab.to_json()) == vocab


def test_encoding_an_unknown_character_names_it():
    vocab = data.Vocabulary.from_texts(["abc"])
    with pytest.raises(AbcjaxError, match="'z'"):
        vocab.encode("abz")


def test_every_tune_ends_with_the_end_of_tune_blank_line():
    assert data.join_tunes(["X:1\nK:D\nabc", "X:2\nK:G\ndef"]) == "X:1\nK:D\nabc\n\nX:2\nK:G\ndef\n\n"


def test_split_is_by_whole_tunes_seeded_and_disjoint():
    train, val = data.split_tunes(TUNES, 0.2, seed=3)
    assert len(val) == 2 and len(train) == 8
    assert sorted(train + val) == sorted(TUNES)
    assert (train, val) == data.split_tunes(TUNES, 0.2, seed=3)
    assert val != data.split_tunes(TUNES, 0.2, seed=4)[1]


def test_no_validation_tune_text_reaches_the_training_stream():
    dataset = data.make_dataset(TUNES, seq_length=4, val_fraction=0.3, seed=0, source="test")
    train_text = dataset.vocab.decode(dataset.train_tokens)
    val_text = dataset.vocab.decode(dataset.val_tokens)
    for tune in val_text.split(data.END_OF_TUNE)[:-1]:
        assert tune not in train_text
    assert dataset.num_train_tunes + dataset.num_val_tunes == len(TUNES)


def test_zero_val_fraction_trains_on_everything():
    dataset = data.make_dataset(TUNES, seq_length=4, val_fraction=0.0, seed=0, source="test")
    assert dataset.num_val_tunes == 0 and len(dataset.val_tokens) == 0


def test_corpus_shorter_than_one_window_is_an_error():
    with pytest.raises(AbcjaxError, match="fewer than one window"):
        data.make_dataset(TUNES[:2], seq_length=500, val_fraction=0.0, seed=0, source="short.abc")


def test_windows_are_inputs_and_the_same_shifted_by_one():
    tokens = np.arange(50, dtype=np.int32)
    starts = data.sample_window_starts(jax.random.PRNGKey(0), len(tokens), seq_length=7, batch_size=16)
    inputs, targets = data.gather_windows(tokens, starts, seq_length=7)
    assert inputs.shape == targets.shape == (16, 7)
    np.testing.assert_array_equal(inputs, np.asarray(starts)[:, None] + np.arange(7))
    np.testing.assert_array_equal(targets, inputs + 1)
    assert int(starts.max()) + 8 <= len(tokens)


def test_window_starts_depend_only_on_the_key():
    key = jax.random.fold_in(jax.random.PRNGKey(5), 17)
    first = data.sample_window_starts(key, 1000, 10, 8)
    np.testing.assert_array_equal(first, data.sample_window_starts(key, 1000, 10, 8))
    assert not np.array_equal(first, data.sample_window_starts(jax.random.PRNGKey(6), 1000, 10, 8))


def test_eval_batches_predict_every_character_once():
    tokens = np.arange(1, 24, dtype=np.int32)  # 23 characters -> 22 targets
    batches = data.make_eval_batches(tokens, seq_length=5, batch_size=2)
    assert batches.inputs.shape == (3, 2, 5)  # 5 rows of 5 cover 22 targets; padded to 6 rows
    mask = batches.weights.astype(bool)
    np.testing.assert_array_equal(np.sort(batches.targets[mask]), tokens[1:])
    np.testing.assert_array_equal(batches.targets[mask] - 1, batches.inputs[mask])

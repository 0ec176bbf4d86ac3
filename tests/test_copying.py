"""Promises of abcjax.copying: phrases of 4 bars as fingerprints, copying, variety, and their file."""

import numpy as np
import pytest

from abcjax import copying
from abcjax.errors import AbcjaxError

BARS = ["DFAdAF", "GBdgdB", "AFDEFE", "D3D3", "gfedcB"]


def test_a_tune_has_one_fingerprint_per_run_of_four_bars() -> None:
    assert len(copying.fingerprints(BARS)) == 2
    assert copying.fingerprints(BARS[:3]) == set()
    assert copying.fingerprints(BARS[1:]) < copying.fingerprints(BARS)


def test_copying_is_four_bars_in_a_row_note_for_note() -> None:
    training = copying.phrases_of([BARS])
    assert copying.copies(["z6", *BARS[1:]], training)
    assert not copying.copies([BARS[0], BARS[1], BARS[2], "z6", BARS[3]], training)
    assert not copying.copies(BARS[:3], training)


def test_a_tune_that_repeats_itself_is_not_repeating_another() -> None:
    assert copying.repeats_another([BARS, BARS[1:], BARS[:2] * 3]) == [True, True, False]


def test_fingerprints_are_the_same_in_every_process() -> None:
    # blake2b, not Python's salted hash(): the saved phrases of a run must match a later process's.
    assert min(copying.fingerprints(BARS[:4])) == 8970332103447839359


def test_phrases_round_trip_through_the_workdir(tmp_path) -> None:
    from etils import epath

    phrases = copying.phrases_of([BARS, ["a", "b", "c", "d"]])
    copying.save_phrases(epath.Path(tmp_path), phrases)
    assert copying.load_phrases(epath.Path(tmp_path)) == phrases
    assert np.load(tmp_path / copying.PHRASES_FILE).dtype == np.uint64


def test_a_workdir_without_phrases_is_a_one_line_error(tmp_path) -> None:
    from etils import epath

    with pytest.raises(AbcjaxError, match="run abcjax train on it again") as raised:
        copying.load_phrases(epath.Path(tmp_path))
    assert "\n" not in str(raised.value)

"""data.transpose: training tunes transposed by abc2abc, written as the corpus writes them, never
validation tunes."""

import re

import pytest

from abcjax import abc, corpus, data, transpose
from abcjax.config import load_config
from abcjax.errors import AbcjaxError
from conftest import BUNDLED_CORPUS, TINY_CONFIG

# Tunes of the bundled corpus as they are printed there (X:, a polka with endings and halves, an air
# with `3/2`, a song with a chord symbol and annotations), and the same a tone up, written by hand.
BALLYDESMOND = """X:1
T:Ballydesmond No. 3
Z: id:dc-polka-3
M:2/4
L:1/8
K:D Mixolydian
A>B AG|EF GE|A>B AG|Ad d/e/d/c/|!
[1 ed d2|eB c/d/c/B/|AB cd|ef g2:|!
[2 e/f/g de|^ce d>=c|AB cE|ED D2|]!"""
BALLYDESMOND_UP_A_TONE = """X:1
T:Ballydesmond No. 3
Z: id:dc-polka-3
M:2/4
L:1/8
K:E Mixolydian
B>c BA|FG AF|B>c BA|Be e/f/e/d/|!
[1 fe e2|fc d/e/d/c/|Bc de|fg a2:|!
[2 f/g/a ef|^df e>=d|Bc dF|FE E2|]!"""
AIR = "X:2\nT:Air\nM:2/4\nL:1/8\nK:D Major\nA|d2 d3/2c/|B2 AF/G/|A3/2B/ AF|E3|]!"
AIR_DOWN_A_TONE = "X:2\nT:Air\nM:2/4\nL:1/8\nK:C Major\nG|c2 c3/2B/|A2 GE/F/|G3/2A/ GE|D3|]!"
SONG = 'X:3\nT:Song\nM:2/4\nL:1/8\nK:G Major\n"Extended Refrain" "G"GA Bc|"D/F#"d2 z2|]!'
SONG_UP_A_TONE = 'X:3\nT:Song\nM:2/4\nL:1/8\nK:A Major\n"Extended Refrain" "A"AB cd|"E/G#"e2 z2|]!'


def test_abc2abc_transposes_notes_keys_and_chord_symbols_and_keeps_the_corpus_spelling():
    assert transpose.transposed([BALLYDESMOND, SONG], (2,)) == [BALLYDESMOND_UP_A_TONE, SONG_UP_A_TONE]
    assert transpose.transposed([AIR], (-2,)) == [AIR_DOWN_A_TONE]


def test_every_shift_of_every_tune_in_shift_order():
    copies = transpose.transposed([AIR, SONG], (2, -2))
    assert [copy.split("\n")[4] for copy in copies] == ["K:E Major", "K:A Major", "K:C Major", "K:F Major"]


def test_the_bundled_corpus_transposed_reads_as_the_corpus_does():
    """Transposing moves pitches only: with letters, accidentals and octave marks taken out, every copy
    reads like its original, and the judge finds the same bars and form."""
    tunes = list(corpus.read_corpus(str(BUNDLED_CORPUS), deduplicate=True).tunes)
    copies = transpose.transposed(tunes, (-2, 2))
    assert len(copies) == 2 * len(tunes)

    def without_pitches(tune: str) -> str:
        return re.sub(r'"[A-G][^"]*"|[A-Ga-g][,\']*|[_^=]+|K:.*', "", tune)

    assert [without_pitches(copy) for copy in copies] == [without_pitches(tune) for tune in tunes * 2]

    def verdicts(tunes: list[str]) -> list[tuple]:
        fields = ("well_formed", "bars_match_meter", "repeats_balanced", "meter", "num_bars")
        return [(*(checks[field] for field in fields), len(checks["bar_errors"])) for checks in abc.check_tunes(tunes)]

    assert verdicts(copies) == verdicts(tunes) * 2


def test_only_training_tunes_are_transposed_and_validation_is_the_corpus_as_written():
    tunes = corpus.read_corpus(str(BUNDLED_CORPUS), deduplicate=True).tunes[:40]
    plain = data.make_dataset(tunes, seq_length=50, val_fraction=0.25, seed=0, source="test")
    augmented = data.make_dataset(tunes, seq_length=50, val_fraction=0.25, seed=0, source="test", transpose=(-2, 2))
    assert (augmented.num_train_tunes, augmented.num_val_tunes, augmented.num_transposed) == (30, 10, 60)
    assert augmented.vocab.decode(augmented.val_tokens) == plain.vocab.decode(plain.val_tokens)
    train_text = augmented.vocab.decode(augmented.train_tokens)
    assert train_text.startswith(plain.vocab.decode(plain.train_tokens))
    assert len(train_text.split(data.END_OF_TUNE)) - 1 == 90
    for tune in plain.vocab.decode(plain.val_tokens).split(data.END_OF_TUNE)[:-1]:
        body = tune.split("\n", 6)[6]  # no validation tune's music, in any key
        assert body not in train_text
    assert augmented.train_phrases == plain.train_phrases  # copying is judged against the corpus as written


@pytest.mark.parametrize("shifts", [(0,), (2, 2), (12,), (1.5,), 2, "(2,"])
def test_bad_shifts_name_the_key_and_what_it_takes(shifts):
    with pytest.raises(AbcjaxError, match=r"data\.transpose.* (must be|takes) "):
        load_config(TINY_CONFIG, [f"--config.data.transpose={shifts}"])


def test_without_abc2abc_transposing_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(AbcjaxError, match=r"needs abc2abc, which is not installed: .* data.transpose=\(\)"):
        transpose.transposed([AIR], (2,))
    assert transpose.transposed([AIR], ()) == []

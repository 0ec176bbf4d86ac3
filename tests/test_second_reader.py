"""The judge's bars against a second, independent reader: music21's ABC reader, on real-world tunes.

Thirty tunes of each collection (every n-th) are read by both; where the lengths of their bars differ,
the tune was checked by hand and the disagreement is listed here with its kind, each kind with an
example in docs/evaluation.md. A new disagreement, or a listed one that went away, fails the test
until someone reads the tune again.
"""

import concurrent.futures

from abcjax import abc
from real_world_abc import collection_tunes, music21_bar_lengths

SAMPLE = 30
# music21 splits a bar longer than the meter into measures of the meter's length, so a missing bar line
# (at a line's end, as throughout the Essen files, or within a line) or a note too many goes unnoticed.
REBARS = "music21 re-bars an overfull bar"
# music21 loses the note after an H (fermata) shorthand: HA2(de) (f2e2) is 3/8 to music21, 1/2 as written.
DROPS_AFTER_H = "music21 drops the note after H"
# f>dDB>a: music21 loses the D between two broken-rhythm pairs.
DROPS_IN_BROKEN_RHYTHM = "music21 drops a note between broken-rhythm pairs"
# G4 ||[K:C] at a line's end and || at the next line's start: music21 counts an empty measure between.
EMPTY_MEASURE = "music21 counts an empty measure between two bar lines"
KNOWN_DISAGREEMENTS = {
    ("oneills1850", 0): REBARS,
    ("oneills1850", 66): EMPTY_MEASURE,
    ("oneills1850", 198): REBARS,
    ("oneills1850", 594): DROPS_AFTER_H,
    ("ryansMammoth", 0): REBARS,
    ("ryansMammoth", 980): DROPS_IN_BROKEN_RHYTHM,
    ("airdsAirs", 1092): DROPS_AFTER_H,
    **{
        ("essenFolksong", index): REBARS
        for index in (0, 283, 1981, 2547, 3113, 3679, 3962, 4245, 4811, 5377, 5660, 5943, 6226, 7924)
    },
}


def _sample(name: str) -> list[tuple[int, str]]:
    tunes = collection_tunes(name)
    stride = len(tunes) // SAMPLE
    return [(index, tunes[index]) for index in range(0, stride * SAMPLE, stride)]


def test_music21_times_the_bars_as_the_judge_does_but_where_it_misreads() -> None:
    names = ("bundled", "oneills1850", "ryansMammoth", "airdsAirs", "essenFolksong")
    sampled = [(name, index, tune) for name in names for index, tune in _sample(name)]
    with concurrent.futures.ProcessPoolExecutor(2) as pool:  # music21 takes about 0.2 s a tune
        theirs = list(pool.map(music21_bar_lengths, [tune for _, _, tune in sampled], chunksize=8))
    ours = [[bar.duration for bar in abc.Tune.read(tune).read_body().bars] for _, _, tune in sampled]
    differ = {
        (name, index) for (name, index, _), mine, other in zip(sampled, ours, theirs, strict=True) if mine != other
    }
    assert differ == KNOWN_DISAGREEMENTS.keys()

"""Real-world ABC that no one here wrote, for testing the judge: printed tunebooks and a folk-song
archive as music21 ships them in its corpus (music21 is a test extra), and the bundled corpus.

Also music21's own reading of a tune's bars, the second reader the judge is compared with.
"""

from __future__ import annotations

import pathlib
from fractions import Fraction

from abcjax import corpus
from conftest import BUNDLED_CORPUS

# name -> (folder in music21's corpus, what it is)
COLLECTIONS = {
    "oneills1850": ("oneills1850", "O'Neill's Music of Ireland: 1,850 Melodies (Chicago, 1903)"),
    "ryansMammoth": ("ryansMammoth", "Ryan's Mammoth Collection of Fiddle Tunes (Boston, 1883)"),
    "airdsAirs": ("airdsAirs", "Aird's Selection of Scotch, English, Irish and Foreign Airs (Glasgow, 1778-1803)"),
    "essenFolksong": ("essenFolksong", "the Essen folk-song collection (Schaffrath), in part"),
}


def music21_corpus() -> pathlib.Path:
    import music21

    return pathlib.Path(music21.__file__).parent / "corpus"


def collection_tunes(name: str) -> list[str]:
    """Every tune of a collection (`bundled` is data/irish.abc), as evaluate reads them."""
    path = BUNDLED_CORPUS if name == "bundled" else music21_corpus() / COLLECTIONS[name][0]
    return corpus.read_all_tunes(str(path))


def music21_bar_lengths(tune: str) -> list[Fraction] | str:
    """The length of each measure music21 reads in a tune, in whole notes, or why it could not read it."""
    import music21

    try:
        score = music21.converter.parse(tune, format="abc")
    except Exception as error:  # music21 fails in many ways on ABC it does not understand
        return f"music21 cannot read it: {type(error).__name__}"
    part = score.parts[0] if score.parts else score
    return [
        Fraction(measure.duration.quarterLength).limit_denominator(10_000) / 4
        for measure in part.getElementsByClass("Measure")
    ]

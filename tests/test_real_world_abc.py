"""The judge on real published tunebooks: how many tunes it rejects, as measured and checked by hand.

The figures are those of docs/evaluation.md, where every kind of rejection is named with an example:
each rejected tune that was read by hand is a flaw of the transcription. A change of the judge that
moves a figure fails here, so that its new verdicts get read by hand too.
"""

import pytest

from abcjax import abc
from real_world_abc import collection_tunes

# collection -> (tunes, not well-formed, bars that do not fill the meter, repeats not balanced)
REJECTED = {
    "oneills1850": (2009, 8, 246, 20),
    "ryansMammoth": (1059, 31, 60, 8),
    "airdsAirs": (1180, 10, 12, 14),
    "essenFolksong": (8514, 12, 4052, 0),
}


@pytest.mark.parametrize("name", REJECTED)
def test_published_tunebooks_are_judged_as_measured(name: str) -> None:
    checks = abc.check_tunes(collection_tunes(name))
    failing = tuple(sum(not tune[check] for tune in checks) for check in ("well_formed", "bars_match_meter"))
    repeats = sum(not tune["repeats_balanced"] for tune in checks)
    assert (len(checks), *failing, repeats) == REJECTED[name]

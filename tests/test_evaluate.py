"""Promises of abcjax.evaluate: the report's figures, copying and duplicates, its table, and its errors."""

import json

import pytest

from abcjax import abc, evaluate
from abcjax.corpus import read_corpus
from abcjax.errors import AbcjaxError
from conftest import BUNDLED_CORPUS, abc_tune

pytestmark = pytest.mark.xdist_group("test_evaluate")  # one worker: its module fixture is built once


@pytest.fixture(scope="module")
def training_tunes() -> list[str]:
    return list(read_corpus(str(BUNDLED_CORPUS)).tunes)


# Every bundled tune the judge rejects, each checked by hand: real flaws of the transcription, which
# data/README.md lists with the same reasons.
NOT_WELL_FORMED = {
    "Father Dollard's": "a blank line after K: cuts the tune off",
    "Providence": "a blank line after K: cuts the tune off",
    "Swedish": "music on the line of a body M: field, which is the field's value",
    "Guns of the Magnificent Seven": "music on the line of a body M: field, which is the field's value",
}
BARS_DO_NOT_FILL = NOT_WELL_FORMED.keys() | {
    "Donnybrook Fair",  # a missing bar line in the first ending
    "Mooncoin",  # two half bars, Agg|Aff|
    "Boys of Ballisodare",  # a missing bar line
    "Colonel Frazier",  # a bar of 7/8 mid-part, where the other parts have cAFG AGGA|
    "Corney Is Coming",  # two half bars, gece|gece|
    "Johnny Allen's",  # dcAF|G2:| twice: a half bar and a quarter bar
    "Man Who Shot the Windmill",  # afec|dBB:| twice
    "McGovern's Favourite",  # the first ending's A3:| and the part's pickup eg add up to 9/8
    "Red Crow",  # a missing bar line
    "Rip the Calico",  # the third part ends A3| and the fourth starts e| with no double bar or repeat
}


def test_bundled_corpus_rejections_are_its_hand_checked_flaws() -> None:
    report = evaluate.evaluate_files([str(BUNDLED_CORPUS)])
    assert report["num_tunes"] == len(report["tunes"]) == 804
    not_well_formed = {tune["title"] for tune in report["tunes"] if not tune["well_formed"]}
    assert not_well_formed == NOT_WELL_FORMED.keys()
    assert {tune["title"] for tune in report["tunes"] if not tune["bars_match_meter"]} == BARS_DO_NOT_FILL
    assert report["well_formed_fraction"] == 800 / 804
    assert report["repeats_balanced_fraction"] == 802 / 804
    assert report["duplicate_fraction"] == 0.0
    assert report["copied_fraction"] is None and report["corpus"] is None


def test_every_corpus_tune_is_nearest_to_a_tune_with_all_its_bars(training_tunes) -> None:
    report = evaluate.evaluate_tunes(training_tunes, training_tunes)
    assert report["copied_fraction"] == 1.0
    assert all(tune["nearest"]["shared_bars"] == tune["num_bars"] for tune in report["tunes"])
    # Two tunes are in the corpus twice (other title or Z: id, same music): the earlier one is nearest.
    titles = [tune["title"] for tune in report["tunes"]]
    elsewhere = [
        (tune["title"], titles[tune["nearest"]["index"]])
        for tune in report["tunes"]
        if tune["nearest"]["index"] != tune["index"]
    ]
    assert elsewhere == [("Turnpike", "Paddy on the Turnpike"), ("Planxty Drury", "Planxty Drury")]


def test_distributions_count_meters_keys_and_lengths() -> None:
    tunes = [
        abc_tune(header="X:1\nT:A\nM:6/8\nL:1/8\nK:D Major"),
        abc_tune(header="X:2\nT:B\nM:6/8\nL:1/8\nK:Dmaj"),
        abc_tune("DFAd fdAF|", header="X:3\nT:C\nM:C|\nL:1/8\nK:Ador"),
    ]
    report = evaluate.evaluate_tunes(tunes)
    assert report["meters"] == {"6/8": 2, "C|": 1}
    assert report["keys"] == {"D major": 2, "A dorian": 1}
    lengths = sorted(len(tune) for tune in tunes)
    assert report["length"] == {"mean": sum(lengths) / 3, "median": lengths[1], "min": lengths[0], "max": lengths[2]}


def test_four_bars_of_a_training_tune_are_a_copy_and_name_it(training_tunes) -> None:
    # The Blarney Pilgrim's first 4 bars, respaced and with other bar lines, after a fresh pickup bar.
    copy = abc_tune("E2|: D3  DEG|A3 ABc|\nBAG AGE|GEA GED ::gfe dcB|", header="X:9\nT:Copy\nM:6/8\nL:1/8\nK:G")
    three_bars = abc_tune("E2|D3 DEG|A3 ABc|BAG AGE|gfe dcB|")
    fresh = abc_tune("^g'2|^g'3 ^g'3|^g'6|")
    report = evaluate.evaluate_tunes([copy, three_bars, fresh], training_tunes)
    assert report["copied_fraction"] == 1 / 3
    assert [tune["copied"] for tune in report["tunes"]] == [True, False, False]
    nearest = [tune["nearest"] for tune in report["tunes"]]
    assert nearest[0]["title"] == "Blarney Pilgrim" and nearest[0]["shared_bars"] == 4
    assert nearest[1]["shared_bars"] == 3
    assert nearest[2] is None
    assert report["corpus"]["num_tunes"] == 802


def test_variety_counts_tunes_sharing_four_bars_with_another_of_the_batch() -> None:
    phrase = "DFA dAF|GBd gdB|AFD EFE|D3 D3|"
    tunes = [
        abc_tune(f"A|{phrase}gfe dcB|", header="X:1\nT:A\nM:6/8\nL:1/8\nK:D"),
        abc_tune(f"{phrase}AFD E3|", header="X:2\nT:B\nM:6/8\nL:1/8\nK:D"),
        abc_tune("DFA dAF|GBd gdB|AFD EFE|gfe dcB|DFA dAF|GBd gdB|AFD EFE|"),  # repeats itself only
    ]
    report = evaluate.evaluate_tunes(tunes)
    assert [tune["repeats_another"] for tune in report["tunes"]] == [True, True, False]
    assert report["repeats_another_fraction"] == 2 / 3


def test_duplicates_are_the_same_tune_but_for_its_x_line() -> None:
    tunes = [
        abc_tune(),
        abc_tune(header="X:7\nT:Test\nM:6/8\nL:1/8\nK:D"),
        abc_tune(header="X:1\nT:Other\nM:6/8\nL:1/8\nK:D"),
    ]
    report = evaluate.evaluate_tunes(tunes)
    assert report["duplicate_fraction"] == 1 / 3
    assert [tune["duplicate_of"] for tune in report["tunes"]] == [None, 0, None]


def test_report_is_json_with_figures_and_one_entry_per_tune(training_tunes) -> None:
    report = evaluate.evaluate_tunes([abc_tune(), abc_tune("")], training_tunes[:20])
    assert json.loads(json.dumps(report)) == report
    figures = {"num_tunes", "well_formed_fraction", "bars_match_meter_fraction", "repeats_balanced_fraction"}
    figures |= {"duplicate_fraction", "repeats_another_fraction", "meters", "keys", "length"}
    assert report.keys() == figures | {"copied_fraction", "corpus", "tunes"}
    assert report["corpus"].keys() == figures
    checks = {"well_formed", "headers_ok", "parses", "bars_match_meter", "repeats_balanced", "meter", "key"}
    checks |= {"num_bars", "header_errors", "syntax_errors", "syntax_warnings", "bar_errors", "parse_errors"}
    checks |= {"parse_warnings", "disagreements"}
    assert abc.check_tune(abc_tune()).keys() == checks
    per_tune = checks | {"index", "title", "length", "duplicate_of", "repeats_another", "copied", "nearest"}
    assert [tune.keys() for tune in report["tunes"]] == [per_tune, per_tune]
    assert report["well_formed_fraction"] == 0.5


def test_table_shows_each_figure_beside_the_corpus(training_tunes) -> None:
    with_corpus = evaluate.format_table(evaluate.evaluate_tunes([abc_tune()], training_tunes))
    lines = with_corpus.splitlines()
    assert lines[0].split() == ["generated", "corpus"]
    assert lines[1].split() == ["tunes", "1", "802"]
    assert "well-formed 100.0% 99.8%" in " ".join(with_corpus.split())
    assert "copied 4+ bars 0.0% -" in " ".join(with_corpus.split())
    alone = evaluate.format_table(evaluate.evaluate_tunes([abc_tune()]))
    assert alone.splitlines()[0].split() == ["generated"]
    assert "copied" not in alone and "meter 6/8 100.0%" in " ".join(alone.split())


def test_files_are_read_like_a_corpus_and_every_tune_counts(tmp_path) -> None:
    first, second = tmp_path / "a.abc", tmp_path / "b.abc"
    first.write_text(f"{abc_tune()}\n\n{abc_tune('')}\n", encoding="utf-8")
    second.write_text(f"% generated\n{abc_tune('DFA dAF|')}\n", encoding="utf-8")
    report = evaluate.evaluate_files([str(first), str(second)])
    assert report["num_tunes"] == 3
    assert [tune["well_formed"] for tune in report["tunes"]] == [True, False, True]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "is empty"),
        (b"no tunes here\n", "no tunes found"),
        (b"%abc-charset utf-8\n\xff", "not valid utf-8"),
    ],
    ids=["missing", "empty", "no-tunes", "not-the-declared-utf8"],
)
def test_unreadable_files_are_one_line_errors(tmp_path, content: bytes | None, message: str) -> None:
    path = tmp_path / "gen.abc"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AbcjaxError, match=message):
        evaluate.evaluate_files([str(path)])


def test_no_tunes_is_an_error() -> None:
    with pytest.raises(AbcjaxError, match="no tunes to evaluate"):
        evaluate.evaluate_tunes([])

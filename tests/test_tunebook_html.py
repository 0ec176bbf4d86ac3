"""Promises of `abcjax render --html`: an offline page of the whole tunebook that a real browser (headless
Chromium) loads without errors, showing every tune with its checks and --jsonl fields, drawing sheet music
as tunes scroll into view, playing each tune's audio, and showing a tool's message for a tune it rejects."""

import json
import pathlib
import re

import pytest
from chromium import chromium, console_errors
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from abcjax import evaluate, tunebook_html
from abcjax.cli import main
from abcjax.corpus import read_corpus
from conftest import BUNDLED_CORPUS

pytestmark = pytest.mark.xdist_group("test_tunebook_html")  # one worker: its module fixture is built once

HEADER = "% abcjax sample: checkpoint step 7 of /runs/tiny\n% seed 0, temperature 1.0"
REJECTED = "T:Rejected\nM:4/4\nL:1/8\nK:D\nDEFG ABcd|@ABcd dcBA|"  # abc2midi plays it; abcm2ps rejects the "@"
BROKEN = "T:Broken\nK:Qxyz\n@@AB|"  # neither abc2midi nor abcm2ps reads it
LOG_LIKELIHOODS = [-50.5, -10.25, -300.0, -20.0, -5.0]
ONE = "X:1\nT:One\nM:4/4\nL:1/8\nK:D\nDEFG ABcd|"
WAIT_S = 10  # for what the page does after loading: drawing, loading audio


def _bundled(title: str) -> str:
    """A bundled tune without its X: line."""
    return next(tune for tune in read_corpus(str(BUNDLED_CORPUS)).tunes if f"\nT:{title}\n" in tune).partition("\n")[2]


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> dict:
    """A sampled-looking tunebook of five tunes (two of them rejected by tools), its --jsonl, and its page."""
    tmp = tmp_path_factory.mktemp("tunebook")
    bodies = [_bundled("Crowley's No. 1"), REJECTED, BROKEN, _bundled("Bonnie Kate"), _bundled("Cooley's")]
    texts = [f"X:{number}\n{body}" for number, body in enumerate(bodies, start=1)]
    path = tmp / "book.abc"
    cut_off = "X:6\nT:Cut off\nK:D"  # sampled, but no music: not rendered, and its --jsonl line is passed over
    path.write_text(HEADER + "\n\n" + "\n\n".join([*texts, cut_off]) + "\n", encoding="utf-8")
    records = [
        {"index": index, "abc": text + "\n", "finished": index != 2, "log_likelihood": log_likelihood}
        for index, (text, log_likelihood) in enumerate(zip([*texts, cut_off], [*LOG_LIKELIHOODS, -1.0], strict=True))
    ]
    jsonl = tmp / "book.jsonl"
    jsonl.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    summary = tunebook_html.render_html(str(path), str(tmp / "out"), set(), str(jsonl), progress=False)
    checks = evaluate.evaluate_tunes(texts)["tunes"]
    return {"path": path, "out": tmp / "out", "texts": texts, "summary": summary, "checks": checks}


@pytest.fixture(scope="module")
def browser():
    with chromium(1000, 700) as driver:
        yield driver


@pytest.fixture
def page(book, browser):
    """The page freshly loaded, with the console log read so far discarded."""
    browser.get((book["out"] / "index.html").as_uri())
    console_errors(browser)
    return browser


def _cards(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "article.tune")


def _shown_numbers(driver) -> list[int]:
    return [int(card.get_attribute("id").removeprefix("tune-")) for card in _cards(driver)]


def _drawn(card) -> bool:
    return bool(card.find_elements(By.CSS_SELECTOR, ".music svg"))


def test_render_writes_the_page_and_each_tunes_files(book) -> None:
    files = sorted(path.name for path in book["out"].iterdir())
    assert "index.html" in files
    for stem in ("001-crowleys-no-1", "004-bonnie-kate", "005-cooleys"):
        assert {f"{stem}.{ext}" for ext in ("abc", "mid", "ogg", "svg")} <= set(files)
    assert {"002-rejected.abc", "002-rejected.mid", "002-rejected.ogg"} <= set(files)
    assert not [name for name in files if name.startswith(("002-rejected.svg", "003-broken.")) and "abc" not in name]
    assert book["summary"].endswith(f"wrote {book['out'] / 'index.html'}")


def test_page_loads_offline_and_shows_the_header_and_every_tune_without_console_errors(book, page) -> None:
    titles = page.execute_script("return [...document.querySelectorAll('.tune h2')].map(h => h.lastChild.textContent)")
    assert titles == ["Crowley's No. 1", "Rejected", "Broken", "Bonnie Kate", "Cooley's"]
    assert page.find_element(By.ID, "book-header").text == HEADER
    notes = [note.text for note in page.find_elements(By.CSS_SELECTOR, "#notes li")]
    cut_off_line = book["path"].read_text(encoding="utf-8").splitlines().index("X:6") + 1
    assert notes == [f"left out 1 tune that could not be read: {book['path']}:{cut_off_line} (no music)"]
    WebDriverWait(page, WAIT_S).until(lambda driver: _drawn(_cards(driver)[0]))
    resources = page.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")
    assert all(name.startswith("file:") for name in resources), resources
    assert console_errors(page) == []


def test_each_tune_shows_every_check_of_evaluate_and_the_jsonl_fields(book, page) -> None:
    for index, (card, checks) in enumerate(zip(_cards(page), book["checks"], strict=True)):
        badges = {badge.text for badge in card.find_elements(By.CSS_SELECTOR, ".check")}
        booleans = {name: value for name, value in checks.items() if isinstance(value, bool)}
        assert len(booleans) >= 5
        booleans["finished"] = index != 2  # the --jsonl's own check
        assert badges == {f"{'✓' if value else '✗'} {name.replace('_', ' ')}" for name, value in booleans.items()}
        facts = card.find_element(By.CSS_SELECTOR, ".facts").text
        assert f"log likelihood {LOG_LIKELIHOODS[index]:g}" in facts and f"length {checks['length']}" in facts
        assert f"meter {checks['meter'] or '—'}" in facts


def test_a_tune_scrolled_into_view_gets_its_sheet_music_drawn_as_svg(page) -> None:
    last = _cards(page)[-1]
    assert page.execute_script("return arguments[0].getBoundingClientRect().top", last) > 700 + 300
    assert not _drawn(last)  # only cards near the view are drawn
    page.execute_script("arguments[0].scrollIntoView()", last)
    WebDriverWait(page, WAIT_S).until(lambda driver: _drawn(last))
    svg_text = last.find_element(By.CSS_SELECTOR, ".music svg").get_attribute("textContent")
    assert "Cooley's" in svg_text  # abcjs engraves the title above the staves
    assert len(last.find_elements(By.CSS_SELECTOR, ".music svg path")) > 50  # staves, notes, beams


def test_every_tune_abc2midi_reads_has_a_play_control_whose_audio_loads_and_plays(book, page) -> None:
    audio = {card.get_attribute("id"): card.find_elements(By.CSS_SELECTOR, ".play audio") for card in _cards(page)}
    assert [card_id for card_id, found in audio.items() if found] == ["tune-1", "tune-2", "tune-4", "tune-5"]
    sources = [found[0].get_attribute("src") for found in audio.values() if found]
    assert all(pathlib.Path(src.removeprefix("file://")).is_file() for src in sources)
    # Each source loads: a fresh element reads its length; a click on the first control plays it.
    durations = page.execute_async_script(
        """const [sources, done] = arguments;
        Promise.all(sources.map((src) => new Promise((resolve) => {
          const audio = new Audio();
          audio.onloadedmetadata = () => resolve(audio.duration);
          audio.onerror = () => resolve("error " + audio.error.code);
          audio.src = src;
        }))).then(done);""",
        sources,
    )
    assert all(isinstance(seconds, float) and seconds > 3 for seconds in durations), durations
    player = audio["tune-1"][0]
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", player)
    left = -player.size["width"] // 2 + player.size["height"] // 2  # the play button, at the control's left end
    ActionChains(page).move_to_element_with_offset(player, left, 0).click().perform()
    playing = "return arguments[0].currentTime > 0.2 && !arguments[0].paused"
    WebDriverWait(page, WAIT_S).until(lambda driver: driver.execute_script(playing, player))


def test_a_tune_a_tool_rejects_shows_the_tools_message_and_the_rest_of_the_page_works(page) -> None:
    rejected, broken = _cards(page)[1:3]
    for card in (rejected, broken):
        page.execute_script("arguments[0].scrollIntoView()", card)
        assert not _drawn(card)
    assert rejected.find_element(By.CSS_SELECTOR, ".music .problem").text == (
        "No sheet music: abcm2ps failed (exit code 1): 002-rejected.abc:6:10: error: Bad character"
    )
    assert rejected.find_elements(By.CSS_SELECTOR, ".play audio")  # abc2midi did read it
    assert broken.find_element(By.CSS_SELECTOR, ".play .problem").text.startswith(
        "No .mid, audio: abc2midi wrote no file: Error in line-char 3-0 : First K: field must specify key signature"
    )
    assert [link.text for link in broken.find_elements(By.CSS_SELECTOR, ".files a")] == [".abc"]
    WebDriverWait(page, WAIT_S).until(lambda driver: _drawn(_cards(driver)[0]))
    assert console_errors(page) == []


def test_search_sort_and_filters_choose_and_order_the_tunes(book, page) -> None:
    page.find_element(By.ID, "search").send_keys("KATE")
    assert _shown_numbers(page) == [4]
    page.find_element(By.ID, "reset").click()
    WebDriverWait(page, WAIT_S).until(lambda driver: len(_cards(driver)) == 5)
    Select(page.find_element(By.ID, "sort")).select_by_value("log_likelihood")
    page.find_element(By.ID, "direction").click()
    by_likelihood = sorted(range(1, 6), key=lambda number: -LOG_LIKELIHOODS[number - 1])
    assert _shown_numbers(page) == by_likelihood
    Select(page.find_element(By.CSS_SELECTOR, "[data-filter=well_formed]")).select_by_value("fail")
    failing = [entry["index"] + 1 for entry in book["checks"] if not entry["well_formed"]]
    assert failing and _shown_numbers(page) == [number for number in by_likelihood if number in failing]
    Select(page.find_element(By.CSS_SELECTOR, "[data-filter=well_formed]")).select_by_value("")
    page.find_element(By.CSS_SELECTOR, "[data-min=log_likelihood]").send_keys("-25")
    assert _shown_numbers(page) == [5, 2, 4]
    assert page.find_element(By.ID, "count").text == "3 of 5 tunes match"


def _page_data(page: pathlib.Path) -> dict:
    found = re.search(r'<script type="application/json" id="tunebook-data">(.*?)</script>', page.read_text(), re.DOTALL)
    return json.loads(found[1])


def test_a_tunebook_and_jsonl_from_abcjax_sample_make_a_page_with_every_tunes_fields(tmp_path, tiny_workdir) -> None:
    book, jsonl = tmp_path / "book.abc", tmp_path / "book.jsonl"
    prime = "X:1\\nT:Sampled\\nM:6/8\\nL:1/8\\nK:D\\n"  # the model of tiny_workdir is barely trained
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["sample", "--workdir", str(tiny_workdir), "--num_tunes", "4", "--max_length", "120", "--prime", prime]
            + ["--out", str(book), "--jsonl", str(jsonl), "--no-constrain"]
        )
    assert exit_info.value.code == 0
    tunebook_html.render_html(str(book), str(tmp_path / "out"), set(), str(jsonl), progress=False)
    data = _page_data(tmp_path / "out" / "index.html")
    checkpoint = r"checkpoint step 4 \(the best; validation [0-9.]+ bits/char\)"
    assert re.match(rf"% abcjax sample: {checkpoint} of {re.escape(str(tiny_workdir))}\n% seed 0,", data["header"])
    records = {record["abc"].partition("\n")[0]: record for record in map(json.loads, jsonl.read_text().splitlines())}
    shown = {f"X:{tune['number']}": tune for tune in data["tunes"]}
    assert shown and set(shown) <= set(records)
    for x, tune in shown.items():
        assert tune["values"]["log_likelihood"] == records[x]["log_likelihood"]
        assert tune["values"]["finished"] == records[x]["finished"]
    left_out = len(records) - len(shown)  # tunes cut off before their music: noted, their lines passed over
    assert len(data["notes"]) == (1 if left_out else 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read --jsonl {jsonl} (No such file or directory)"),
        (json.dumps({"abc": ONE}) + "\nnot json\n", "{jsonl} line 2 is not JSON (Expecting value)"),
        ('["X:1"]\n', '{jsonl} line 1 is not a tune\'s object with its "abc" text'),
        ('{"abc": "X:1\\nT:Another tune\\nK:D\\nABc|"}\n', "{jsonl} line 1 is a tune the tunebook does not hold"),
    ],
    ids=["missing", "not-json", "not-an-object", "another-tunebook"],
)
def test_bad_jsonl_is_one_line_and_nothing_is_written(tmp_path, capsys, content, message) -> None:
    book = tmp_path / "book.abc"
    book.write_text(ONE + "\n", encoding="utf-8")
    jsonl = tmp_path / "tunes.jsonl"
    if content is not None:
        jsonl.write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["render", str(book), "--out", str(tmp_path / "out"), "--html", "--jsonl", str(jsonl)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"abcjax: error: {message.format(jsonl=jsonl)}"), lines
    assert lines[0].endswith("give the file that `abcjax sample --jsonl` wrote with this tunebook")
    assert not (tmp_path / "out").exists()


def test_jsonl_without_html_is_refused(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "book.abc", "--out", str(tmp_path / "out"), "--jsonl", "tunes.jsonl"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "abcjax: error: --jsonl adds its fields to the web page: give --html with it\n"


def test_page_data_cannot_end_its_script_element(tmp_path) -> None:
    data = {"header": "</script><!--", "notes": [], "fields": [], "tunes": []}
    page = tunebook_html.page_html("a <b> & c", data)
    (tmp_path / "index.html").write_text(page, encoding="utf-8")
    assert _page_data(tmp_path / "index.html") == data
    assert "<!--" not in page.partition('id="tunebook-data">')[2].partition("</script>")[0]
    assert "<title>a &lt;b&gt; &amp; c</title>" in page
    assert "Permission is hereby granted, free of charge" in page and "abcjs</a> 6.7.2 (MIT License" in page

"""A real browser for the tests of web pages: Debian's headless Chromium driven by Selenium through Debian's
chromedriver (nothing is downloaded), offline, with a fresh profile each time.

    python tests/chromium.py PAGE.html SHOT.png   # a screenshot of a page, as in docs/tunebook.md
    python tests/chromium.py PAGE.html            # how long a tunebook page takes to show its first tunes
"""

import contextlib
import pathlib
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (  # no sandbox (tests may run as root), no GPU, and no network traffic of Chromium's own
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@contextlib.contextmanager
def chromium(width: int = 1100, height: int = 900):
    """A Selenium driver of a headless Chromium with a window of width x height, its console log kept."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if not pathlib.Path(program).is_file():
            raise RuntimeError(f"{program} not found: install Debian's chromium and chromium-driver (.ci/run does)")
    with tempfile.TemporaryDirectory(prefix="abcjax-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def console_errors(driver) -> list[str]:
    """The console's errors since the last call (the log is read once)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(page: pathlib.Path, png: pathlib.Path, width: int = 1100, height: int = 1300) -> None:
    with chromium(width, height) as driver:
        driver.get(page.resolve().as_uri())
        driver.execute_async_script("requestAnimationFrame(() => setTimeout(arguments[0], 1000))")  # abcjs draws
        driver.save_screenshot(str(png))


def tunebook_times(page: pathlib.Path) -> dict[str, float]:
    """Milliseconds from navigation until a tunebook page (abcjax render --html) shows its first cards, its
    first sheet music, and the like; then how long a title search and a sort by log-likelihood take."""
    with chromium() as driver:
        driver.get(page.resolve().as_uri())
        WebDriverWait(driver, 60).until(lambda driver: driver.execute_script("return window.tunebook.firstMusicMs"))
        return driver.execute_script(
            """const navigation = performance.getEntriesByType("navigation")[0];
            const paint = performance.getEntriesByName("first-contentful-paint")[0];
            const timed = (id, value, event) => {  // a control changed as a reader would; the page redraws at once
              const start = performance.now();
              document.getElementById(id).value = value;
              document.getElementById(id).dispatchEvent(new Event(event, {bubbles: true}));
              return performance.now() - start;
            };
            const times = {
              first_contentful_paint: paint.startTime, first_cards: tunebook.firstCardsMs,
              first_sheet_music: tunebook.firstMusicMs, load_event: navigation.loadEventEnd,
            };
            times.search_one_letter = timed("search", "k", "input");
            times.sort_by_log_likelihood = timed("sort", "log_likelihood", "change");
            times.tunes = tunebook.tunes;
            return times;""",
        )


if __name__ == "__main__":
    if len(sys.argv) == 3:
        screenshot(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
    else:
        print(tunebook_times(pathlib.Path(sys.argv[1])))

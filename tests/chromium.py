"""A real browser for the tests of web pages: Debian's headless Chromium driven by Selenium through Debian's
chromedriver (nothing is downloaded), offline, with a fresh profile each time.

    python tests/chromium.py PAGE.html SHOT.png   # a screenshot of a page, as in docs/tunebook.md
"""

import contextlib
import pathlib
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

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


if __name__ == "__main__":
    screenshot(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))

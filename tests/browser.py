"""A real browser for the tests: Debian's chromium and chromium-driver through Selenium, headless.

`browser()` skips the calling test, saying why, where chromium, its driver or selenium is missing,
so a plain `pytest` passes anywhere; tests/run.sh installs them where it can (root with apt).
"""
from __future__ import annotations

import shutil
import time

import pytest

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver", "chromium-driver")


def browser():
    """A headless Chromium WebDriver that keeps the page's console log; the test skips without one."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    binary = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    driver = next((shutil.which(d) for d in DRIVER if shutil.which(d)), None)
    if binary is None or driver is None:
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver; "
                    "tests/run.sh does it when run as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1600", "--mute-audio"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def console_errors(driver) -> list[str]:
    """The page's console messages at level SEVERE (errors), since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def wait_for(predicate, timeout: float = 30.0, every: float = 0.2, what: str = "the page"):
    """predicate()'s first truthy value within timeout seconds, else AssertionError naming `what`."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


# Loads every <audio> of the page (they are preload="none") and reports each one's state.
AUDIO_STATE = """
return Array.from(document.querySelectorAll('audio')).map(a => {
  if (!a.dataset.asked) { a.dataset.asked = '1'; a.preload = 'auto'; a.load(); }
  return {src: a.currentSrc || a.src, ready: a.readyState, duration: a.duration,
          error: a.error ? a.error.code : null};
});
"""
IMAGE_STATE = """
return Array.from(document.querySelectorAll('img')).map(i => ({src: i.src, complete: i.complete,
  width: i.naturalWidth, height: i.naturalHeight}));
"""

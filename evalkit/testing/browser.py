"""Headless Chromium for the browser tests of report.html and the leaderboard site.

Debian's ``chromium`` and ``chromium-driver`` packages (the Makefile installs them) are driven by
Selenium. Selenium's own driver download needs the network, so the system binaries are named
explicitly. Console messages are captured so a test can assert that a page logs no errors.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_CANDIDATES = ("chromedriver", "chromium-driver")


def find_binary(candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_available() -> bool:
    """True when Chromium, its driver and selenium are all installed (tests skip with a reason otherwise)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return bool(find_binary(CHROMIUM_CANDIDATES) and find_binary(DRIVER_CANDIDATES))


@contextmanager
def headless_chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A Selenium Chrome driver on headless Chromium, quit on exit. File URLs may load sibling files
    (audio, data scripts) as they would when a user opens the page from disk."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = find_binary(CHROMIUM_CANDIDATES) or "chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(find_binary(DRIVER_CANDIDATES) or "chromedriver")
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """Console messages of level SEVERE since the last call (uncaught errors, failed loads)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise TimeoutError naming the wait."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)

"""The leaderboard site in a real browser (headless Chromium), opened from file:// as a user opens
a site folder from disk: tables sort and filter, every link on the index, model and benchmark pages
opens an existing file without console errors, the history plot renders, and the audio of the
linked reports loads. Skipped when Chromium or its driver is not installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
import pytest
import soundfile as sf
from test_leaderboard import make_runs

from evalkit.leaderboard.site import build_site
from evalkit.testing.browser import browser_available, console_errors, headless_chromium, wait_until

pytestmark = pytest.mark.skipif(not browser_available(), reason="needs chromium, chromedriver and selenium")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = make_runs(tmp_path_factory.mktemp("lb-browser"))
    # the budget-0 report links its input clips in the data folders, which a site never carries;
    # a FLAC linked inside the run folder is what a site copies (re-encoded as WAV)
    linked = runs.dirs["beta-2"]
    t = np.arange(8000) / 16000
    (linked / "audio").mkdir(exist_ok=True)
    sf.write(linked / "audio" / "inside.flac", 0.2 * np.sin(2 * np.pi * 330 * t), 16000)
    report = linked / "report.html"
    player = '<audio controls preload="metadata" src="audio/inside.flac"></audio>'
    report.write_text(report.read_text(encoding="utf-8").replace("</body>", player + "</body>"), "utf-8")
    return build_site(list(runs.dirs.values()), runs.root / "site").parent


@pytest.fixture(scope="module")
def driver() -> Any:
    with headless_chromium() as drv:
        yield drv


def open_page(driver: Any, path: Path) -> None:
    driver.get(path.resolve().as_uri())
    wait_until(lambda: driver.execute_script("return document.readyState") == "complete")


def column(driver: Any, table_id: str, index: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.getElementById(arguments[0]).tBodies[0].rows)"
        ".filter(r => !r.hidden).map(r => r.cells[arguments[1]].getAttribute('data-sort')"
        " ?? r.cells[arguments[1]].textContent.trim());",
        table_id,
        index,
    )


def test_overall_table_sorts_on_header_click(driver: Any, site: Path) -> None:
    from selenium.webdriver.common.by import By

    open_page(driver, site / "index.html")
    header = driver.find_elements(By.CSS_SELECTOR, "#t-overall thead th")[2]  # "overall" (after rank, model)
    header.click()  # a higher-is-better column: the first click puts the best row first
    values = column(driver, "t-overall", 2)
    numbers = [float(v) for v in values if v]
    assert len(numbers) == 2 and numbers == sorted(numbers, reverse=True), values
    assert values[-1] == "", "a model without an overall goes last"
    assert header.get_attribute("aria-sort") == "descending"
    header.click()
    values = column(driver, "t-overall", 2)
    assert [float(v) for v in values if v] == sorted(numbers)
    name_header = driver.find_elements(By.CSS_SELECTOR, "#t-overall thead th")[1]
    name_header.click()
    names = [
        driver.execute_script("return arguments[0].textContent.trim()", r)
        for r in driver.find_elements(By.CSS_SELECTOR, "#t-overall tbody tr td:nth-child(2)")
    ]
    assert names == sorted(names)
    assert console_errors(driver) == []


def test_filter_box_hides_rows(driver: Any, site: Path) -> None:
    from selenium.webdriver.common.by import By

    open_page(driver, site / "index.html")
    box = driver.find_element(By.CSS_SELECTOR, 'input.filter[data-table="t-overall"]')
    counter = driver.find_element(By.CSS_SELECTOR, '[data-count-for="t-overall"]')
    assert counter.text == "3 of 3 rows"
    box.send_keys("gamma")
    wait_until(lambda: counter.text == "1 of 3 rows")
    visible = driver.find_elements(By.CSS_SELECTOR, "#t-overall tbody tr:not([hidden])")
    assert [r.find_element(By.TAG_NAME, "a").text for r in visible] == ["openai:gamma"]
    box.clear()
    box.send_keys("no such model")
    wait_until(lambda: counter.text == "0 of 3 rows")
    assert console_errors(driver) == []


def local_links(driver: Any) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('a[href], script[src]'))"
        ".map(e => e.href || e.src).filter(u => u.startsWith('file:'));"
    )


def check_audio(driver: Any) -> list[str]:
    """Load every <audio> of the page; return their sources after asserting none failed."""
    sources = driver.execute_script("return Array.from(document.querySelectorAll('audio')).map(a => a.src);")
    driver.execute_script(
        "document.querySelectorAll('audio').forEach(a => { a.preload = 'auto'; a.load(); });"
    )
    wait_until(
        lambda: driver.execute_script(
            "return Array.from(document.querySelectorAll('audio'))"
            ".every(a => a.error !== null || a.readyState >= 1);"
        )
    )
    failed = driver.execute_script(
        "return Array.from(document.querySelectorAll('audio')).filter(a => a.error !== null)"
        ".map(a => a.src.slice(0, 80));"
    )
    assert failed == []
    return sources


def test_every_link_opens_without_console_errors_and_report_audio_loads(driver: Any, site: Path) -> None:
    """Follow every local link of the index, model and benchmark pages; on the reports they reach,
    every audio element (embedded data URI or file copied into the site) must load."""
    pages = [
        site / "index.html",
        *sorted((site / "models").glob("*.html")),
        *sorted((site / "benchmarks").glob("*.html")),
    ]
    seen: set[str] = set()
    reports: set[str] = set()
    audio: list[str] = []
    for page in pages:
        open_page(driver, page)
        assert console_errors(driver) == [], page
        for url in local_links(driver):
            target = urlsplit(url)._replace(fragment="").geturl()
            if target in seen:
                continue
            seen.add(target)
            path = Path(url2pathname(urlsplit(target).path))
            assert path.is_file(), f"{page.name} links {url}"
            assert path.resolve().is_relative_to(site.resolve()), url
            if path.suffix != ".html":
                continue
            driver.get(target)
            wait_until(lambda: driver.execute_script("return document.readyState") == "complete")
            if path.name == "report.html":
                reports.add(target)
                audio += check_audio(driver)
            assert console_errors(driver) == [], target
    assert len(reports) == 6
    # reports link input clips where they lie (never embedded); the site carries each clip that
    # lies in a run's recorded data folder once, by content, into inputs/ (the runs share MMAU's
    # 4 clips), and the budget-0 run's clip inside its run folder next to its report
    files = [src for src in audio if src.startswith("file:")]
    inputs = {src for src in files if "/inputs/" in src}
    assert len(inputs) == 4 and all(src.startswith((site / "inputs").as_uri()) for src in inputs), files
    assert len(list((site / "inputs").iterdir())) == 4
    assert [src for src in files if src.endswith("/audio/inside.flac.wav")], files
    assert len(audio) >= 17, audio


def test_history_plot_renders(driver: Any, site: Path) -> None:
    from selenium.webdriver.common.by import By

    alpha = next(p for p in (site / "models").glob("*.html") if p.name.startswith("openai-alpha-"))
    open_page(driver, alpha)
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#history svg.main-svg"))
    points = driver.execute_script("return document.getElementById('history').data.map(t => t.y.length);")
    assert sorted(points) == [1, 2, 2]  # sums: 2 nights; MMAU: 2 nights on one version, 1 on the other
    assert console_errors(driver) == []

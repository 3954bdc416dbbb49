"""report.html read at a glance (issue 17), in headless Chromium at 1400x900: the scoreboard is
above the fold, the sample browser searches, sorts, links and exports, turns count from 1, the
turn strip and trajectory show the judges' per-turn numbers, verdict labels stay apart.

Checked against the run's own files (summary.json, scores.jsonl), never against typed numbers.
The tiny run is ``test_report``'s (built once per session); these skip without Chromium.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_report import BuiltRun, shared_run, summary_of

from evalkit.reports.html import write_report
from evalkit.reports.turns import turn_strip
from evalkit.testing.browser import browser_available, console_errors, headless_chromium, wait_until

pytestmark = pytest.mark.skipif(
    not browser_available(),
    reason="needs selenium, chromium and chromedriver (Debian: chromium chromium-driver)",
)
WIDTH, HEIGHT = 1400, 900


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> BuiltRun:
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def report(run: BuiltRun) -> Path:
    return write_report(run.store)


@pytest.fixture(scope="module")
def driver(report: Path) -> Iterator[Any]:
    with headless_chromium(WIDTH, HEIGHT) as chromium:
        chromium.set_window_size(WIDTH, HEIGHT)
        yield chromium


def open_page(driver: Any, report: Path, fragment: str = "") -> None:
    driver.get(report.resolve().as_uri() + fragment)
    wait_until(lambda: driver.execute_script("return document.readyState") == "complete")


def shown_ids(driver: Any) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('section.sample'))"
        ".filter(s => s.offsetParent !== null).map(s => s.id)"
    )


def png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def distinct_rows(png: bytes) -> int:
    """Distinct scanlines of a PNG (RGB/RGBA, 8 bit): a blank page has one."""
    width, height = png_size(png)
    chunks, pos = [], 8
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        kind = png[pos + 4 : pos + 8]
        if kind == b"IDAT":
            chunks.append(png[pos + 8 : pos + 8 + length])
        pos += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    stride = len(raw) // height
    # filter bytes differ between equal rows; compare only rows filtered the same way ("none"/"up"):
    # an all-white page compresses every row after the first to an all-zero "up" row
    return len({raw[i * stride + 1 : (i + 1) * stride] for i in range(height)})


def test_scoreboard_is_above_the_fold_and_the_screenshot_is_not_blank(
    driver: Any, report: Path, run: BuiltRun, tmp_path: Path
) -> None:
    open_page(driver, report)
    rect = driver.execute_script("return document.getElementById('scoreboard').getBoundingClientRect()")
    inner = driver.execute_script("return window.innerHeight")
    assert rect["top"] >= 0 and rect["bottom"] < min(HEIGHT, inner)
    shot = tmp_path / "above-the-fold.png"
    assert driver.save_screenshot(str(shot))
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png_size(png)[0] >= WIDTH - 20
    assert distinct_rows(png) > 20  # text and table lines, not a blank page
    # each task's primary number with its CI, as summary.json has it
    summary = summary_of(run)
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#scoreboard tbody tr'))"
        ".map(r => [r.dataset.task, r.querySelector('.primary-value').textContent.trim(),"
        " r.querySelector('.ci').textContent.trim()])"
    )
    assert [r[0] for r in rows] == list(summary["tasks"])
    for task, value, ci in rows:
        primary = summary["tasks"][task]["primary"]
        assert value == f"{primary['value']:.3f}"
        assert ci.startswith(f"[{primary['ci_low']:.3f}, {primary['ci_high']:.3f}]")
        assert "Wilson" in ci  # 0/1 accuracy: Wilson intervals, not a collapsing bootstrap
    # the run facts come after, collapsed
    facts = driver.execute_script("return document.getElementById('run-facts')")
    assert facts.get_attribute("open") is None
    assert console_errors(driver) == []


def test_search_filters_the_samples(driver: Any, report: Path, run: BuiltRun) -> None:
    open_page(driver, report)
    search = driver.find_element("id", "sample-search")
    search.send_keys("mumble")
    assert shown_ids(driver) == ["sample-jsonl-spoken-mumble"]
    assert driver.find_element("id", "shown-count").text == "1"
    search.clear()
    search.send_keys("x")  # clear() fires no input event: type and delete
    search.send_keys("\b")
    assert len(shown_ids(driver)) == len(run.expected_status)


def test_sort_by_score_puts_failures_first_and_unscored_last(driver: Any, report: Path) -> None:
    open_page(driver, report)
    driver.execute_script(
        "var s = document.getElementById('sample-sort'); s.value = 'score-asc';"
        "s.dispatchEvent(new Event('change'));"
    )
    scores = driver.execute_script(
        "return Array.from(document.querySelectorAll('section.sample')).map(s => s.dataset.score)"
    )
    valued = [float(s) for s in scores if s != ""]
    assert valued == sorted(valued) and valued[0] == 0.0
    assert scores[len(valued) :] == [""] * (len(scores) - len(valued))  # the model error: last


def test_permalink_opens_and_scrolls_to_the_sample(driver: Any, report: Path) -> None:
    target = "sample-jsonl-conv-conv1"
    open_page(driver, report, "#" + target)
    state = driver.execute_script(
        "var s = document.getElementById(arguments[0]); var r = s.getBoundingClientRect();"
        "return {top: r.top, targeted: s.classList.contains('targeted'),"
        " open: Array.from(s.querySelectorAll('details')).every(d => d.open)};",
        target,
    )
    assert state["targeted"] and state["open"] and 0 <= state["top"] < HEIGHT / 2
    # a sample hidden by the filters is shown again when its link is followed
    for box in driver.find_elements("css selector", ".status-filter"):
        if box.is_selected():
            box.click()
    assert shown_ids(driver) == []
    driver.execute_script("window.location.hash = '#sample-jsonl-spoken-s3'")
    wait_until(lambda: "sample-jsonl-spoken-s3" in shown_ids(driver))
    href = driver.execute_script(
        "return document.querySelector('#sample-jsonl-spoken-s3 a.permalink').getAttribute('href')"
    )
    assert href == "#sample-jsonl-spoken-s3"


def test_download_holds_exactly_the_filtered_samples(driver: Any, report: Path, run: BuiltRun) -> None:
    open_page(driver, report)
    for box in driver.find_elements("css selector", ".status-filter"):
        if box.get_attribute("value") != "incorrect":
            box.click()
    text = driver.execute_async_script(
        "var done = arguments[arguments.length - 1]; window.evalkitReport.filteredBlob().text().then(done);"
    )
    lines = [json.loads(line) for line in text.splitlines()]
    want = sorted(sid for sid, status in run.expected_status.items() if status == "incorrect")
    assert sorted(r["id"] for r in lines) == want and {r["status"] for r in lines} == {"incorrect"}
    latest = {(s.task, s.sample_id, s.score.judge): s.score for s in run.store.scores()}
    for record in lines:
        for judged in record["scores"]:
            assert judged["metrics"] == latest[(record["task"], record["id"], judged["judge"])].metrics
        assert [t["turn"] for t in record["turns"]] == list(range(1, len(record["turns"]) + 1))
    # the button hands the browser a blob of the same text
    driver.execute_script(
        "window.__links = []; var orig = HTMLAnchorElement.prototype.click;"
        "HTMLAnchorElement.prototype.click = function () { window.__links.push(this.href); };"
    )
    driver.find_element("id", "download-jsonl").click()
    saved = driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "fetch(window.__links[0]).then(r => r.text()).then(done, e => done('fetch failed: ' + e));"
    )
    assert saved == text


def test_turns_count_from_one_and_the_strip_shows_the_judges_numbers(
    driver: Any, report: Path, run: BuiltRun
) -> None:
    open_page(driver, report, "#sample-jsonl-conv-conv1")
    section = "#sample-jsonl-conv-conv1"
    users = driver.execute_script(
        f"return Array.from(document.querySelectorAll('{section} .turn > div > b'))"
        ".map(b => b.textContent).filter(t => t.startsWith('User'))"
    )
    assert users == ["User, turn 1", "User, turn 2", "User, turn 3"]
    header = driver.execute_script(
        f"return Array.from(document.querySelectorAll('{section} table.turn-strip thead th'))"
        ".map(th => th.textContent)"
    )
    assert header == ["Turn", "1", "2", "3"]
    marks = driver.execute_script(
        f"return Array.from(document.querySelectorAll('{section} tr.strip-correct td'))"
        ".map(t => t.textContent)"
    )
    records = [r for r in run.store.responses() if r.sample_id == "conv1"]
    scores = [s.score for s in run.store.scores() if s.sample_id == "conv1"]
    strip = turn_strip(records, scores)
    assert marks == ["✓" if c["correct"] else "✗" for c in strip] == ["✓", "✓", "✗"]
    arousal = driver.execute_script(
        f"return Array.from(document.querySelectorAll('{section} table.turn-strip tbody tr'))"
        ".filter(r => r.cells[0].textContent === 'arousal').map(r => Array.from(r.cells).slice(1)"
        ".map(c => c.textContent))[0]"
    )
    assert arousal == [f"{c['values']['arousal']:.3f}" for c in strip]
    dots = f"return document.querySelectorAll('{section} svg.trajectory circle').length"
    assert driver.execute_script(dots) == 3
    by_turn = driver.execute_script(
        "return Array.from(document.querySelectorAll('table.by-turn tbody tr td:first-child'))"
        ".map(td => td.textContent)"
    )
    assert by_turn[:3] == ["1", "2", "3"]


def test_verdict_labels_are_separate_words(driver: Any, report: Path) -> None:
    open_page(driver, report)
    judge = driver.execute_script("return document.querySelector('#sample-jsonl-spoken-s3 .judge').innerText")
    assert "fail read: 3" in " ".join(judge.split())


def test_play_in_order_plays_each_turn_after_the_one_before(driver: Any, report: Path) -> None:
    open_page(driver, report)
    order = driver.execute_async_script(
        """var done = arguments[arguments.length - 1];
           var section = document.getElementById('sample-jsonl-conv-conv0');
           var players = Array.from(section.querySelectorAll('audio'));
           var started = [];
           players.forEach(function (a, i) { a.muted = true; a.addEventListener('play', function () {
             started.push(i); if (started.length === players.length) { done(started); } }); });
           section.querySelector('button.play-in-order').click();
           setTimeout(function () { done(started); }, 15000);"""
    )
    n = driver.execute_script("return document.querySelectorAll('#sample-jsonl-conv-conv0 audio').length")
    assert n == 6 and order == list(range(n))  # user 1, model 1, user 2, ... in order

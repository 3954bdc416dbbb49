"""report.html in a real browser (headless Chromium from file://, as a user opens it from disk):
no console errors, the plotly charts draw, the status and task filters show the right samples,
every audio element loads its source, reasoning starts collapsed.

These take seconds and run in the default tier; they skip (with the reason) where Chromium, its
driver or selenium are missing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from test_report import BuiltRun, shared_run

from evalkit.reports.html import write_report
from evalkit.testing.browser import browser_available, console_errors, headless_chromium, wait_until

pytestmark = pytest.mark.skipif(
    not browser_available(),
    reason="needs selenium, chromium and chromedriver (Debian: chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> BuiltRun:
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def driver(run: BuiltRun) -> Iterator[Any]:
    path = write_report(run.store)  # the report as finalize writes it (other tests may have re-rendered)
    with headless_chromium() as chromium:
        chromium.get(path.resolve().as_uri())
        wait_until(lambda: chromium.execute_script("return document.readyState") == "complete")
        yield chromium


def visible_samples(driver: Any) -> list[dict[str, str]]:
    return driver.execute_script(
        """return Array.from(document.querySelectorAll('section.sample'))
             .filter(s => s.offsetParent !== null)
             .map(s => ({id: s.id, status: s.dataset.status, task: s.dataset.task}));"""
    )


def set_filters(driver: Any, statuses: list[str], task: str = "") -> None:
    """Click the status boxes into the wanted state and pick the task, as a user would."""
    for box in driver.find_elements("css selector", ".status-filter"):
        if box.is_selected() != (box.get_attribute("value") in statuses):
            box.click()
    driver.execute_script(
        "var s = document.getElementById('task-filter'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('change'));",
        task,
    )


def test_page_loads_without_console_errors_and_draws_every_chart(driver: Any) -> None:
    expected = driver.execute_script("return document.querySelectorAll('div.chart').length")
    assert expected >= 5  # category, reasoning, turn accuracy, prosody, arousal
    wait_until(
        lambda: driver.execute_script(
            "return Array.from(document.querySelectorAll('div.chart')).every("
            "d => d.classList.contains('js-plotly-plot') && d.querySelector('svg.main-svg'))"
        )
    )
    bars = driver.execute_script("return document.querySelectorAll('#chart-category-0 .bars .point').length")
    assert bars == 2  # one bar per category of the spoken task
    assert console_errors(driver) == []


@pytest.mark.parametrize(
    "statuses",
    [
        ["incorrect"],
        ["parse-failure"],
        ["error"],
        ["correct", "error"],
        [],
        ["correct", "incorrect", "parse-failure", "error"],
    ],
)
def test_status_filter_shows_exactly_the_matching_samples(
    driver: Any, run: BuiltRun, statuses: list[str]
) -> None:
    set_filters(driver, statuses)
    shown = visible_samples(driver)
    want = sorted(sid for sid, status in run.expected_status.items() if status in statuses)
    assert sorted(s["id"].rsplit("-", 1)[-1] for s in shown) == want
    assert driver.find_element("id", "shown-count").text == str(len(want))


def test_task_filter_combines_with_the_status_filter(driver: Any, run: BuiltRun) -> None:
    set_filters(driver, ["correct", "incorrect"], task="jsonl-text")
    shown = visible_samples(driver)
    assert Counter(s["status"] for s in shown) == Counter({"correct": 1, "incorrect": 1})
    assert {s["task"] for s in shown} == {"jsonl-text"}
    set_filters(driver, ["correct", "incorrect", "parse-failure", "error"], task="")
    assert len(visible_samples(driver)) == len(run.expected_status)


def test_every_audio_element_loads(driver: Any) -> None:
    count = driver.execute_script("return document.querySelectorAll('audio').length")
    assert count > 0
    for el in driver.find_elements("css selector", "audio"):
        driver.execute_script("arguments[0].load();", el)

    def states() -> list[dict[str, Any]]:
        return driver.execute_script(
            """return Array.from(document.querySelectorAll('audio')).map(a => ({
                 ready: a.readyState, network: a.networkState, error: a.error && a.error.code,
                 duration: a.duration}));"""
        )

    wait_until(lambda: all(s["ready"] >= 1 or s["error"] for s in states()), timeout=20)
    final = states()
    assert all(s["error"] is None for s in final), json.dumps(final)
    assert all(s["ready"] >= 1 and s["network"] != 3 for s in final)  # 3 = NETWORK_NO_SOURCE
    assert all(s["duration"] > 0.2 for s in final)  # the clips are 0.3 s long
    assert console_errors(driver) == []


def test_reasoning_is_collapsed_until_opened(driver: Any) -> None:
    set_filters(driver, ["correct", "incorrect", "parse-failure", "error"])
    details = driver.find_elements("css selector", "details.reasoning")
    assert details and not any(d.get_attribute("open") for d in details)
    first = details[0]
    body = first.find_element("css selector", "pre")
    assert not body.is_displayed()
    first.find_element("css selector", "summary").click()
    assert first.get_attribute("open") is not None and body.is_displayed()


def test_linked_audio_plays_from_disk_when_over_the_embedding_budget(run: BuiltRun) -> None:
    from evalkit.reports.html import render
    from evalkit.store import atomic_write_text

    page = run.store.root / "report-linked.html"  # beside report.html: the same relative links
    atomic_write_text(page, render(run.store, embed_limit=0))
    try:
        with headless_chromium() as chromium:
            chromium.get(page.resolve().as_uri())
            srcs = chromium.execute_script(
                "return Array.from(document.querySelectorAll('audio')).map(a => a.src)"
            )
            assert srcs and all(s.startswith("file://") for s in srcs)
            wait_until(
                lambda: chromium.execute_script(
                    "return Array.from(document.querySelectorAll('audio'))"
                    ".every(a => a.readyState >= 1 || a.error)"
                ),
                timeout=20,
            )
            errors = chromium.execute_script(
                "return Array.from(document.querySelectorAll('audio')).filter(a => a.error).length"
            )
            assert errors == 0 and console_errors(chromium) == []
    finally:
        page.unlink()

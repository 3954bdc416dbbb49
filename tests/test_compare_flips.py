"""`evalkit compare` lists the flipped items of 0/1 metrics (lost: right in base, wrong in cand;
gained: the reverse) with both answers side by side and links into both runs' report.html
(``#sample-TASK-ID`` permalinks, relative to where the comparison is written), and prints the
settings that differ and the power note in every output (markdown, HTML, the terminal).

Runs are written through the run store and ``finalize`` (which writes report.html), as the
runner does; the answers are the responses.jsonl lines the test wrote.
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.compare import compare_runs, to_html, to_markdown
from evalkit.finalize import finalize
from evalkit.records import ModelOutput, ResponseRecord, Score, ScoreRecord
from evalkit.store import RunStore
from evalkit.testing.browser import browser_available, headless_chromium, wait_until

DATASET = {"id": "synthetic/items", "revision": "v1", "split": "test", "fingerprint": "f" * 64}
#: item -> (base right?, cand right?); s1 lost, s3 gained, the rest unchanged
OUTCOMES = {"s0": (1, 1), "s1": (1, 0), "s2": (0, 0), "s3": (0, 1), "s4": (1, 1), "s5": (1, 1)}


def write_run(root: Path, side: int, temperature: float) -> Path:
    """A finished one-task run whose answers say which run gave them."""
    store = RunStore(root)
    root.mkdir(parents=True)
    store.write_manifest(
        {
            "run_id": root.name,
            "model": {"spec": "openai:m@http://x"},
            "generation": {"qa": {"temperature": {"value": temperature, "source": "cli"}}},
            "tasks": [
                {
                    "name": "qa",
                    "class": "evalkit.tasks.base.Task",
                    "judges": ["numeric"],
                    "group_by": [],
                    "primary_metric": "accuracy",
                    "dataset": DATASET,
                }
            ],
            "seed": 0,
            "status": "completed",
        }
    )
    store.open_streams()
    for index, (sample_id, outcome) in enumerate(OUTCOMES.items()):
        right = outcome[side]
        answer = f"{root.name} says {'right' if right else 'wrong'} for {sample_id}"
        store.append_response(
            ResponseRecord(
                task="qa",
                sample_id=sample_id,
                sample_index=index,
                turn=0,
                request_hash=f"h{index}",
                output=ModelOutput(text=answer),
            )
        )
        score = Score(judge="numeric", metrics={"accuracy": float(right)}, passed=bool(right))
        store.append_score(ScoreRecord(task="qa", sample_id=sample_id, sample_index=index, score=score))
    store.close_streams()
    finalize(store)
    return root


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return write_run(tmp_path / "runs" / "base", 0, 0.0), write_run(tmp_path / "runs" / "cand", 1, 0.7)


def test_flips_are_the_lost_and_gained_items_with_both_answers(pair: tuple[Path, Path]) -> None:
    cmp = compare_runs(*pair)
    assert {(f.sample_id, f.kind) for f in cmp.flips} == {("s1", "lost"), ("s3", "gained")}
    [accuracy] = [m for m in cmp.metrics if m.metric == "accuracy"]
    assert accuracy.discordant == (1, 1)
    lost = next(f for f in cmp.flips if f.kind == "lost")
    assert lost.base_answer == "base says right for s1" and lost.cand_answer == "cand says wrong for s1"


def test_markdown_links_into_both_reports_relative_to_the_output(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out" / "compare"
    out.mkdir(parents=True)
    text = to_markdown(compare_runs(*pair), links_from=out)
    assert "## Flipped items" in text
    row = next(line for line in text.splitlines() if line.startswith("| s1 |"))
    assert "base says right for s1" in row and "cand says wrong for s1" in row and "| lost |" in row
    links = re.findall(r"\]\(([^)]+)\)", row)
    assert len(links) == 2
    for link, run in zip(links, pair, strict=True):
        path, anchor = unquote(link).split("#")
        assert not Path(path).is_absolute()
        assert (out / path).resolve() == (run / "report.html").resolve()
        assert f'id="{anchor}"' in (run / "report.html").read_text(encoding="utf-8")
        assert anchor == "sample-qa-s1"


def test_every_output_keeps_the_settings_that_differ_and_the_power_note(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    base, cand = pair
    result = CliRunner().invoke(app, ["compare", str(base), str(cand), "--html", str(tmp_path / "c.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "c.html").read_text(encoding="utf-8")
    for output in (result.stdout, to_markdown(compare_runs(base, cand)), page):
        assert "settings that differ" in output
        assert "temperature" in output and "0.7" in output
        assert "power:" in output and "underpowered" in output  # 6 items cannot see a 2-point change
    # the HTML: both answers side by side, the links relative to the page's folder
    rows = re.findall(r'<tr class="flip (\w+)" data-sample="(\w+)">(.*?)</tr>', page, re.S)
    assert {(kind, sid) for kind, sid, _ in rows} == {("lost", "s1"), ("gained", "s3")}
    for kind, sid, cells in rows:
        answers = [unescape(a) for a in re.findall(r'class="answer [\w-]+">(.*?)</td>', cells, re.S)]
        assert answers == [
            f"base says {'right' if kind == 'lost' else 'wrong'} for {sid}",
            f"cand says {'wrong' if kind == 'lost' else 'right'} for {sid}",
        ]
        for href, run in zip(re.findall(r'href="([^"]+)"', cells), pair, strict=True):
            path, anchor = unquote(href).split("#")
            assert (tmp_path / path).resolve() == (
                run / "report.html"
            ).resolve() and anchor == f"sample-qa-{sid}"


@pytest.mark.skipif(not browser_available(), reason="needs selenium, chromium and chromedriver")
def test_following_a_flip_link_opens_that_sample_in_the_report(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    page = tmp_path / "c.html"
    page.write_text(to_html(compare_runs(*pair), links_from=tmp_path), encoding="utf-8")
    with headless_chromium(1400, 900) as driver:
        driver.get(page.resolve().as_uri())
        driver.find_element("css selector", 'tr.lost[data-sample="s1"] a.cand-link').click()
        wait_until(lambda: driver.execute_script("return document.readyState") == "complete")
        assert driver.current_url.endswith("cand/report.html#sample-qa-s1")
        state = driver.execute_script(
            "var s = document.getElementById('sample-qa-s1'); var r = s.getBoundingClientRect();"
            "return [s.classList.contains('targeted'), r.top, s.innerText];"
        )
        assert state[0] and 0 <= state[1] < 450 and "cand says wrong for s1" in state[2]

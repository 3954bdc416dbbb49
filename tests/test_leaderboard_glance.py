"""The leaderboard read at a glance (issue 17): display names (``--name``, card name, nightly
``name:``), generation settings and card digest as part of a model's identity, a rank column,
direction-aware order from the judges' declarations, no local paths in any file of the site, the
nightly history by night date with links to each night's comparison, tables that fit in 1400 px.

The runs are run folders written as the runner writes them (manifest.json and summary.json are
all the site reads), so the site is built in well under a second; the page checks run in headless
Chromium and skip without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evalkit.leaderboard.site import build_site
from evalkit.testing.browser import browser_available, console_errors, headless_chromium, wait_until

#: many long task names: an overall table far wider than 1400 px unless it scrolls in its box
WIDE_TASKS = [f"speech-benchmark-with-a-long-name-{i:02d}" for i in range(14)]
DATASET = {"id": "synthetic/qa", "revision": "v1", "split": "test", "fingerprint": "a" * 64}
WER_SPEC = {
    "name": "wer",
    "direction": "lower",
    "unit": "",
    "range": [0, None],
    "description": "word error rate",
}
ACC_SPEC = {
    "name": "accuracy",
    "direction": "higher",
    "unit": "",
    "range": [0, 1],
    "description": "share right",
}


def task_summary(judge: str, metric: str, value: float) -> dict[str, Any]:
    stats = {"value": value, "ci_low": max(0.0, value - 0.1), "ci_high": min(1.0, value + 0.1), "n": 10}
    return {
        "dataset": DATASET,
        "n_samples": 10,
        "primary": {"judge": judge, "metric": metric, **stats},
        "judges": {judge: {"n": 10, "n_scored": 10, "coverage": 1.0, "metrics": {metric: stats}}},
    }


def write_run(
    root: Path,
    name: str,
    spec: str,
    scores: dict[str, float],
    wer: float,
    started: str,
    temperature: float | None = None,
    display: str | None = None,
    card: dict[str, Any] | None = None,
) -> Path:
    """A run folder: every task of ``scores`` (accuracy) plus an ASR task (WER, lower is better),
    the data and the command named by absolute paths under ``root`` as a real run's are."""
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    data = root / "data" / "qa.jsonl"
    tasks = {**{t: ("numeric", "accuracy", v) for t, v in scores.items()}, "asr": ("asr", "wer", wer)}
    generation = {
        t: {"max_tokens": {"value": 512, "source": "task"}, "seed": {"value": 0, "source": "run"}}
        | ({"temperature": {"value": temperature, "source": "cli"}} if temperature is not None else {})
        for t in tasks
    }
    manifest = {
        "run_id": name,
        "name": display,
        "command": f"evalkit run --model {spec} --tasks jsonl:path={data} --out {root / 'runs'}",
        "model": {"spec": spec, **({"card": card} if card else {})},
        "tasks": [
            {
                "name": t,
                "judges": [judge],
                "primary_metric": metric,
                "dataset": {**DATASET, "local_path": str(data)},
                "path_roots": [str(root / "data")],
            }
            for t, (judge, metric, _) in tasks.items()
        ],
        "generation": generation,
        "judges": {
            t: {judge: {"metrics": [WER_SPEC if metric == "wer" else ACC_SPEC]}}
            for t, (judge, metric, _) in tasks.items()
        },
        "config": {"out_dir": str(root / "runs"), "data": str(data)},
        "started": started,
        "status": "completed",
    }
    summary = {"tasks": {t: task_summary(j, m, v) for t, (j, m, v) in tasks.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    (folder / "report.html").write_text(
        f"<!doctype html><html><body><h1>report of {name}</h1><p>data: {data}</p></body></html>", "utf-8"
    )
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(tmp root, site): five runs (two temperatures of one spec, a named one, a carded one, and a
    nightly model over two nights, the second with a comparison page) and their site."""
    root = tmp_path_factory.mktemp("lb-glance")
    wide = dict.fromkeys(WIDE_TASKS, 0.5)
    runs = [
        write_run(
            root, "cold", "openai:m@http://h:1/v1", {**wide, "qa": 0.6}, 0.30, "2025-06-01T02:00:00+0000", 0.0
        ),
        write_run(
            root, "warm", "openai:m@http://h:2/v1", {**wide, "qa": 0.7}, 0.20, "2025-06-01T02:10:00+0000", 0.7
        ),
        write_run(
            root,
            "named",
            "openai:x@http://h:3/v1",
            {**wide, "qa": 0.8},
            0.25,
            "2025-06-01T02:20:00+0000",
            display="Step-Audio R1.5",
        ),
        write_run(
            root,
            "carded",
            "hf:org/model",
            {**wide, "qa": 0.9},
            0.40,
            "2025-06-01T02:30:00+0000",
            card={"name": "Carded Model", "digest": "c0ffee" * 8},
        ),
        write_run(
            root, "night1", "openai:n@http://h:4/v1", {**wide, "qa": 0.5}, 0.10, "2025-06-01T23:50:00+0000"
        ),
        write_run(
            root, "night2", "openai:n@http://h:4/v1", {**wide, "qa": 0.55}, 0.12, "2025-06-03T00:10:00+0000"
        ),
    ]
    comparison = root / "nightly" / "nights" / "2025-06-02" / "nightly-model.html"
    comparison.parent.mkdir(parents=True)
    comparison.write_text(f"<html><body>base {runs[4]} vs cand {runs[5]}</body></html>", encoding="utf-8")
    nights = {
        runs[4].resolve(): {"date": "2025-06-01", "name": "nightly model", "comparison": None},
        runs[5].resolve(): {"date": "2025-06-02", "name": "nightly model", "comparison": comparison},
    }
    return root, build_site(runs, root / "site", nights=nights).parent


def board(site: Path) -> dict[str, Any]:
    return json.loads((site / "data" / "leaderboard.json").read_text(encoding="utf-8"))


def test_generation_settings_split_a_spec_into_two_rows_and_names_are_display_names(
    built: tuple[Path, Path],
) -> None:
    _, site = built
    [group] = board(site)["benchmarks"]["qa"]
    models = [r["model"] for r in group["rows"]]
    assert "openai:m (temperature=0.0)" in models and "openai:m (temperature=0.7)" in models
    assert "Step-Audio R1.5" in models  # --name
    assert "Carded Model" in models  # the model card's name
    assert "nightly model" in models  # the nightly config's name:
    assert len(models) == len(set(models)) == 5  # both nightly runs are one model (latest shown)
    carded = next(r for r in group["rows"] if r["model"] == "Carded Model")
    assert carded["card_digest"] == "c0ffee" * 8


def test_rank_follows_the_declared_direction(built: tuple[Path, Path]) -> None:
    _, site = built
    data = board(site)["benchmarks"]
    [qa], [asr] = data["qa"], data["asr"]
    assert qa["direction"] == "higher" and asr["direction"] == "lower"
    assert [r["value"] for r in qa["rows"]] == sorted((r["value"] for r in qa["rows"]), reverse=True)
    assert [r["value"] for r in asr["rows"]] == sorted(r["value"] for r in asr["rows"])  # lowest WER first
    assert [r["rank"] for r in asr["rows"]] == [1, 2, 3, 4, 5]
    assert asr["rows"][0]["model"] == "nightly model"
    page = (site / "index.html").read_text(encoding="utf-8")
    assert 'title="rank by the metric\'s declared direction">rank</th>' in page


def test_no_local_path_in_any_file_of_the_site(built: tuple[Path, Path]) -> None:
    root, site = built
    checked = 0
    for path in site.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".json", ".js"):
            text = path.read_text(encoding="utf-8")
            assert str(root) not in text, path.relative_to(site)
            assert str(root.resolve()) not in text, path.relative_to(site)
            checked += 1
    assert checked >= 10 and (site / "nights").is_dir()


def test_history_is_by_night_with_links_to_each_nights_comparison(built: tuple[Path, Path]) -> None:
    _, site = built
    [qa] = [s for s in board(site)["history"]["nightly model"] if s["task"] == "qa"]
    # night 1 started 23:50 and night 2 just after midnight two days later: the nights are the dates
    assert [p["night"] for p in qa["points"]] == ["2025-06-01", "2025-06-02"]
    assert qa["points"][0]["comparison"] is None
    link = qa["points"][1]["comparison"]
    assert link.startswith("nights/2025-06-02/") and (site / link).is_file()
    model_page = next(
        p for p in (site / "models").glob("*.html") if "nightly model</h1>" in p.read_text("utf-8")
    )
    assert f'href="../{link}"' in model_page.read_text(encoding="utf-8")


pytest_browser = pytest.mark.skipif(
    not browser_available(), reason="needs selenium, chromium and chromedriver"
)


@pytest_browser
def test_every_page_fits_in_1400_px_and_wide_tables_scroll_in_their_box(built: tuple[Path, Path]) -> None:
    _, site = built
    pages = [
        site / "index.html",
        *sorted((site / "models").glob("*.html")),
        *sorted((site / "benchmarks").glob("*.html")),
    ]
    with headless_chromium(1400, 900) as driver:
        driver.set_window_size(1400, 900)
        for page in pages:
            driver.get(page.resolve().as_uri())
            wait_until(lambda: driver.execute_script("return document.readyState") == "complete")
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= 1400, (page.name, width)
            assert console_errors(driver) == [], page.name
        driver.get((site / "index.html").resolve().as_uri())
        box = driver.execute_script(
            "var b = document.getElementById('t-overall').parentElement;"
            "return [b.className, b.scrollWidth, b.clientWidth, getComputedStyle(b).overflowX];"
        )
        assert box[0] == "table-box" and box[1] > box[2] and box[3] == "auto"  # wide: it scrolls inside


@pytest_browser
def test_history_axis_shows_nights_and_the_comparison_link_opens(built: tuple[Path, Path]) -> None:
    _, site = built
    page = next(p for p in (site / "models").glob("*.html") if "nightly model</h1>" in p.read_text("utf-8"))
    with headless_chromium(1400, 900) as driver:
        driver.get(page.resolve().as_uri())
        wait_until(lambda: driver.execute_script("return !!document.querySelector('#history .main-svg')"))
        ticks = driver.execute_script(
            "return Array.from(document.querySelectorAll('#history .xtick text')).map(t => t.textContent)"
        )
        assert "2025-06-01" in ticks and "2025-06-02" in ticks
        driver.find_element("css selector", "a.comparison").click()
        wait_until(lambda: "nights/2025-06-02/" in driver.current_url)
        assert "vs cand" in driver.find_element("tag name", "body").text


def test_benchmark_tables_show_the_speech_judges_columns_with_declared_directions(tmp_path: Path) -> None:
    """A spoken task's table shows, beside its primary metric, the speech judges' headline metrics
    the runs have (here naturalness DNSMOS, higher is better, and prosody monotony, lower), with
    CIs and arrows from the recorded declarations; a text task's table shows none."""
    import re

    from evalkit.leaderboard.runs import load_run
    from evalkit.leaderboard.tables import version_groups

    specs = {
        "dnsmos_ovrl": {
            "name": "dnsmos_ovrl",
            "direction": "higher",
            "unit": "MOS",
            "range": [1, 5],
            "description": "DNSMOS overall",
        },
        "monotony_index": {
            "name": "monotony_index",
            "direction": "lower",
            "unit": "",
            "range": [0, 1],
            "description": "monotony",
        },
    }
    folders = []
    for name, mos, mono in (("flat", 2.1, 0.8), ("lively", 3.4, 0.3)):
        folder = write_run(
            tmp_path, name, f"openai:{name}@http://h:1/v1", {"qa": 0.6}, 0.2, "2025-06-01T02:00:00+0000"
        )
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        spoken = task_summary("numeric", "accuracy", 0.5)
        for judge, metric, value in (
            ("naturalness", "dnsmos_ovrl", mos),
            ("prosody", "monotony_index", mono),
        ):
            stats = {"value": value, "ci_low": value - 0.1, "ci_high": value + 0.1, "n": 10}
            spoken["judges"][judge] = {"n": 10, "n_scored": 10, "coverage": 1.0, "metrics": {metric: stats}}
        summary["tasks"]["spoken"] = spoken
        manifest["tasks"].append(
            {**manifest["tasks"][0], "name": "spoken", "judges": ["numeric", "naturalness", "prosody"]}
        )
        manifest["judges"]["spoken"] = {
            "numeric": {"metrics": [ACC_SPEC]},
            "naturalness": {"metrics": [specs["dnsmos_ovrl"]]},
            "prosody": {"metrics": [specs["monotony_index"]]},
        }
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
        folders.append(folder)
    groups = version_groups([load_run(f) for f in folders])
    (spoken_group,) = groups["spoken"]
    columns = [(c["label"], c["direction"]) for c in spoken_group["speech_columns"]]
    assert columns == [("DNSMOS", "higher"), ("monotony", "lower")]
    by_run = {r["run_id"]: r["speech"] for r in spoken_group["rows"]}
    assert by_run["lively"]["DNSMOS"]["value"] == 3.4 and by_run["flat"]["monotony"]["value"] == 0.8
    assert groups["qa"][0]["speech_columns"] == []
    site = tmp_path / "site"
    build_site(folders, site)
    page = next((site / "benchmarks").glob("spoken-*.html")).read_text(encoding="utf-8")
    heads = re.findall(r'<th data-type="num" class="speech-col"[^>]*>([^<]*)</th>', page)
    assert heads == ["DNSMOS ↑", "monotony ↓"]
    assert "3.400" in page and "[0.200, 0.400]" in page
    qa = next((site / "benchmarks").glob("qa-*.html")).read_text(encoding="utf-8")
    assert "speech-col" not in qa

"""The leaderboard site built from real runs (loopback OpenAI server, in-process runner): data files
equal the runs' summaries, dataset versions are kept apart with a warning, the overall rule, links
that resolve inside the site folder, and one-line errors for bad input through the CLI.

The runs: models ``alpha`` and ``beta`` on two nights (mmau-mini from a local copy + a jsonl task),
``alpha`` once more on a changed MMAU copy (same id and revision, another fingerprint), and
``gamma`` on the jsonl task only. ``beta``'s second night fails half its MMAU requests. Nights are
set in each manifest's ``started`` (runs made seconds apart stand for runs made days apart).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import soundfile as sf

from evalkit.leaderboard.assets import local_refs, script_json
from evalkit.leaderboard.site import build_site
from evalkit.runner import RunConfig, evaluate
from evalkit.testing.openai_server import OpenAIServer, Reply, last_user_text

pytest.importorskip("aiohttp")

MMAU_ROWS = [
    ("s-1", "What is the source of the sound?", ["Dog barking", "Cat meowing", "Car horn"], "Dog barking"),
    ("s-2", "How many times does the bell ring?", ["one", "two", "three"], "three"),
    ("m-1", "Which instrument plays the melody?", ["Piano", "Electric guitar", "Violin"], "Violin"),
    ("p-1", "What emotion does the speaker convey?", ["Happy", "Sad", "Angry"], "Sad"),
]
SUMS = [("q1", "What is 2 plus 3?", "5"), ("q2", "What is 4 plus 4?", "8"), ("q3", "What is 1 plus 6?", "7")]
NIGHT1, NIGHT2 = "2025-06-01T02:00:00+0000", "2025-06-02T02:00:00+0000"


def write_mmau(root: Path, changed: bool = False) -> Path:
    """A local MMAU test-mini copy (official layout); ``changed`` alters one question, which changes
    the content fingerprint but not the dataset id or revision."""
    (root / "audios").mkdir(parents=True)
    rows = []
    for i, (rid, question, choices, answer) in enumerate(MMAU_ROWS):
        t = np.arange(int(16000 * 0.25)) / 16000
        sf.write(root / "audios" / f"{rid}.wav", 0.2 * np.sin(2 * np.pi * (220 + 50 * i) * t), 16000)
        if changed and i == 0:
            question = "What makes the sound?"
        rows.append(
            {
                "id": rid,
                "question": question,
                "choices": choices,
                "answer": answer,
                "audio_id": f"./audios/{rid}.wav",
                "task": "sound",
                "split": "test-mini",
            }
        )
    (root / "mmau-test-mini.json").write_text(json.dumps(rows), encoding="utf-8")
    return root


def write_sums(path: Path) -> Path:
    lines = [
        json.dumps(
            {
                "task": "sums",
                "id": sid,
                "conversation": [{"role": "user", "text": text}],
                "reference": {"answer": answer},
            }
        )
        for sid, text, answer in SUMS
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def right_answer(body: dict[str, Any]) -> Reply:
    text = last_user_text(body)
    for _, question, _, answer in MMAU_ROWS:
        if question in text or ("What makes the sound?" in text and answer == "Dog barking"):
            return Reply(f"The answer is {answer}.")
    for _, question, answer in SUMS:
        if question in text:
            return Reply(f"The answer is {answer}.")
    return Reply("I do not know.")


def first_option(body: dict[str, Any]) -> Reply:
    text = last_user_text(body)
    for _, question, choices, _ in MMAU_ROWS:
        if question in text:
            return Reply(f"The answer is {choices[0]}.")
    return Reply("The answer is 12.")


@dataclass
class Runs:
    """The run directories made for the tests, by name, and their data folders."""

    dirs: dict[str, Path]
    root: Path

    def summary(self, name: str) -> dict[str, Any]:
        return json.loads((self.dirs[name] / "summary.json").read_text(encoding="utf-8"))


def _run(
    server: OpenAIServer, model: str, tasks: str, out: Path, started: str, linked_audio: bool = False
) -> Path:
    server.model = model
    config = RunConfig(
        model=f"openai:{model}@{server.base_url}",
        tasks=tasks,
        out_dir=str(out),
        use_cache=False,
        max_attempts=1,
        judge_workers=1,
        model_options={"api_key_env": "OPENAI_API_KEY"},
    )
    store = evaluate(config, show_progress=False)
    store.update_manifest(started=started)
    if linked_audio:  # the report's other mode: audio past the embedding budget is linked, not embedded
        from evalkit.reports.html import render

        (store.root / "report.html").write_text(render(store, embed_limit=0), encoding="utf-8")
    return store.root


def make_runs(root: Path) -> Runs:
    """Six real runs (see the module docstring)."""
    mmau_a, mmau_b = write_mmau(root / "mmau-a"), write_mmau(root / "mmau-b", changed=True)
    sums = write_sums(root / "sums.jsonl")
    both = f"mmau-mini:data={mmau_a},jsonl:path={sums},judges=numeric"
    out = root / "runs"
    dirs: dict[str, Path] = {}
    with OpenAIServer() as server:
        server.answer = first_option
        dirs["alpha-1"] = _run(server, "alpha", both, out, NIGHT1)
        dirs["beta-1"] = _run(server, "beta", both, out, NIGHT1)
        server.answer = right_answer
        dirs["alpha-2"] = _run(server, "alpha", both, out, NIGHT2)
        dirs["alpha-b"] = _run(server, "alpha", f"mmau-mini:data={mmau_b}", out, "2025-06-02T03:00:00+0000")
        dirs["gamma-1"] = _run(server, "gamma", f"jsonl:path={sums},judges=numeric", out, NIGHT2)
        server.answer = first_option
        rule = server.fail_matching(lambda body: "bell" in json.dumps(body) or "emotion" in json.dumps(body))
        dirs["beta-2"] = _run(server, "beta", both, out, NIGHT2, linked_audio=True)
        server.rules.remove(rule)
    return Runs(dirs, root)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return make_runs(tmp_path_factory.mktemp("lb"))


@pytest.fixture(scope="module")
def site(runs: Runs) -> Path:
    index = build_site(list(runs.dirs.values()), runs.root / "site")
    assert index == runs.root / "site" / "index.html"
    return index.parent


def load(site: Path, name: str) -> Any:
    return json.loads((site / "data" / f"{name}.json").read_text(encoding="utf-8"))


def js_payload(site: Path, name: str) -> Any:
    text = (site / "data" / f"{name}.js").read_text(encoding="utf-8")
    match = re.search(rf"window\.EVALKIT_DATA\[\"{name}\"\] = (.*);\n$", text, re.S)
    assert match, text[:200]
    return json.loads(match.group(1))


# -- data files --------------------------------------------------------------------------------------
def test_runs_data_holds_each_runs_summary_verbatim(runs: Runs, site: Path) -> None:
    """Verbatim but for the builder's local folders, which a public site never shows."""
    from evalkit.leaderboard.public import local_folders, scrub_text, scrubber

    data = load(site, "runs")
    by_source = {item["source"]: item for item in data}  # the folder's name, never its path
    assert set(by_source) == {p.name for p in runs.dirs.values()}
    manifests = {
        name: json.loads((p / "manifest.json").read_text(encoding="utf-8")) for name, p in runs.dirs.items()
    }
    documents = [d for name in runs.dirs for d in (manifests[name], runs.summary(name))]
    pattern = scrubber(local_folders(list(runs.dirs.values()), documents))
    for name, path in runs.dirs.items():
        item = by_source[path.name]
        assert item["summary"] == json.loads(scrub_text(json.dumps(runs.summary(name)), pattern)), name
        assert item["manifest"] == json.loads(scrub_text(json.dumps(manifests[name]), pattern))
        assert str(path.parent) not in json.dumps(item)
    # ordered by manifest start time, and the JS twin carries the very same data
    assert [d["started"] for d in data] == sorted(d["started"] for d in data)
    assert js_payload(site, "runs") == data
    assert js_payload(site, "leaderboard") == load(site, "leaderboard")


def test_tables_show_latest_run_per_model_with_ci_and_errors(runs: Runs, site: Path) -> None:
    board = load(site, "leaderboard")
    [ref] = [g for g in board["benchmarks"]["jsonl-sums"]]
    rows = {r["model"]: r for r in ref["rows"]}
    assert set(rows) == {"openai:alpha", "openai:beta", "openai:gamma"}
    # alpha's latest (night 2) answers every sum right; its night-1 run is only in the history
    sums2 = runs.summary("alpha-2")["tasks"]["jsonl-sums"]["judges"]["numeric"]["metrics"]["accuracy"]
    assert rows["openai:alpha"]["value"] == sums2["value"] == 1.0
    assert rows["openai:alpha"]["run_id"] == runs.dirs["alpha-2"].name and rows["openai:alpha"]["n_runs"] == 2
    assert rows["openai:beta"]["value"] == 0.0
    [mmau_ref, _] = board["benchmarks"]["mmau-mini"]
    beta = next(r for r in mmau_ref["rows"] if r["model"] == "openai:beta")
    beta_summary = runs.summary("beta-2")["tasks"]["mmau-mini"]
    judge = beta_summary["primary"]["judge"]
    assert beta["n_model_errors"] == beta_summary["judges"][judge]["n_model_errors"] == 2
    assert beta["coverage"] == 0.5
    assert (beta["ci_low"], beta["ci_high"]) == (
        beta_summary["primary"]["ci_low"],
        beta_summary["primary"]["ci_high"],
    )
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "50%" in index and "(2/4)" in index


def test_dataset_versions_are_separate_tables_with_a_warning(runs: Runs, site: Path) -> None:
    board = load(site, "leaderboard")
    groups = board["benchmarks"]["mmau-mini"]
    assert len(groups) == 2
    ref, other = groups
    assert ref["reference"] and not other["reference"]
    assert ref["key"]["dataset_id"] == other["key"]["dataset_id"] == "gamma-lab-umd/MMAU-test-mini"
    assert ref["key"]["revision"] == other["key"]["revision"]
    fp_a = runs.summary("alpha-2")["tasks"]["mmau-mini"]["dataset"]["fingerprint"]
    fp_b = runs.summary("alpha-b")["tasks"]["mmau-mini"]["dataset"]["fingerprint"]
    assert fp_a != fp_b
    assert ref["key"]["fingerprint"] == fp_a and other["key"]["fingerprint"] == fp_b
    assert {r["model"] for r in ref["rows"]} == {"openai:alpha", "openai:beta"}
    assert [(r["model"], r["run_id"]) for r in other["rows"]] == [("openai:alpha", runs.dirs["alpha-b"].name)]
    assert ref["warning"] is None and "not comparable" in other["warning"]
    for page in (site / "index.html", next((site / "benchmarks").glob("mmau-mini-*.html"))):
        html = page.read_text(encoding="utf-8")
        assert 'class="warning" role="alert"' in html and "Different dataset version" in html
        assert fp_a[:12] in html and fp_b[:12] in html


def test_overall_is_the_mean_over_benchmarks_for_models_that_have_all(runs: Runs, site: Path) -> None:
    overall = load(site, "leaderboard")["overall"]
    assert overall["tasks"] == ["jsonl-sums", "mmau-mini"] and overall["excluded_tasks"] == []
    rows = {r["model"]: r for r in overall["rows"]}

    def primary(name: str, task: str) -> float:
        return runs.summary(name)["tasks"][task]["primary"]["value"]

    assert rows["openai:alpha"]["value"] == pytest.approx(
        (primary("alpha-2", "jsonl-sums") + primary("alpha-2", "mmau-mini")) / 2
    )
    assert rows["openai:beta"]["value"] == pytest.approx(
        (primary("beta-2", "jsonl-sums") + primary("beta-2", "mmau-mini")) / 2
    )
    # alpha's run on the other MMAU version never enters the overall
    assert rows["openai:alpha"]["per_task"]["mmau-mini"] == primary("alpha-2", "mmau-mini")
    assert rows["openai:gamma"]["value"] is None and rows["openai:gamma"]["missing"] == ["mmau-mini"]
    assert rows["openai:beta"]["min_coverage"] == 0.5
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "Overall = unweighted mean" in index and "missing: mmau-mini" in index


def test_history_has_every_run_in_start_order(runs: Runs, site: Path) -> None:
    history = load(site, "leaderboard")["history"]
    alpha_sums = next(s for s in history["openai:alpha"] if s["task"] == "jsonl-sums")
    assert [p["run_id"] for p in alpha_sums["points"]] == [
        runs.dirs["alpha-1"].name,
        runs.dirs["alpha-2"].name,
    ]
    assert [p["value"] for p in alpha_sums["points"]] == [0.0, 1.0]
    assert len([s for s in history["openai:alpha"] if s["task"] == "mmau-mini"]) == 2  # one line per version
    assert (site / "assets" / "plotly.min.js").stat().st_size > 1_000_000


# -- files and links ---------------------------------------------------------------------------------
def page_links(page: Path) -> set[str]:
    return {
        unquote(urlsplit(v).path)
        for v in local_refs(page.read_text(encoding="utf-8"))
        if not v.startswith("#") and urlsplit(v).path
    }


def test_every_link_resolves_inside_the_site(runs: Runs, site: Path) -> None:
    pages = [site / "index.html", *(site / "models").glob("*.html"), *(site / "benchmarks").glob("*.html")]
    assert len(list((site / "models").glob("*.html"))) == 3
    assert len(list((site / "benchmarks").glob("*.html"))) == 2
    reports = set()
    for page in pages:
        for link in page_links(page):
            target = (page.parent / link).resolve()
            assert target.is_file(), f"{page.name} links {link}"
            assert target.is_relative_to(site.resolve()), f"{page.name} links outside the site: {link}"
            if target.name == "report.html":
                reports.add(target)
    assert len(reports) == len(runs.dirs)  # every run's report is reachable from some page
    for report in reports:  # audio the reports link (not embedded) was copied with them
        for link in page_links(report):
            assert (report.parent / link).resolve().is_file(), f"{report} links {link}"


def test_linked_input_audio_is_carried_once_into_the_site(runs: Runs, site: Path) -> None:
    """The budget-0 report links its input audio in the data folders (``../../mmau-a/...``): the
    site carries each clip in a recorded data folder once, by content, into ``inputs/`` and
    rewrites the links; nothing outside the site is linked and nothing else is copied."""
    source = (runs.dirs["beta-2"] / "report.html").read_text(encoding="utf-8")
    outside = [link for link in local_refs(source).values() if link.startswith("..")]
    assert len(outside) >= 4, "the budget-0 report should link its input audio"
    report = site / "runs" / runs.dirs["beta-2"].name / "report.html"
    html = report.read_text(encoding="utf-8")
    carried = [link for link in page_links(report) if link.startswith("..")]
    assert len(carried) == len(outside) and all(link.startswith("../../inputs/") for link in carried)
    assert "audio not copied into the site" not in html
    assert not (report.parent / "linked").exists()
    for link in page_links(report):
        target = (report.parent / link).resolve()
        assert target.is_relative_to(site.resolve()) and target.is_file(), link
    assert len(list((site / "inputs").iterdir())) <= len(outside)  # shared clips stored once


def test_model_text_is_escaped(tmp_path: Path, runs: Runs) -> None:
    run = tmp_path / "evil-run"
    run.mkdir()
    source = runs.dirs["gamma-1"]
    for name in ("summary.json", "report.html"):
        (run / name).write_bytes((source / name).read_bytes())
    manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    manifest["model"]["spec"] = "openai:<script>alert(1)</script>"
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    site = build_site([run], tmp_path / "site").parent
    for page in [site / "index.html", *(site / "models").glob("*.html")]:
        html = page.read_text(encoding="utf-8")
        assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    js = (site / "data" / "leaderboard.js").read_text(encoding="utf-8")
    assert "</script>" not in js and "\\u003c/script\\u003e" in js
    assert json.loads(script_json("</script><!--\u2028")) == "</script><!--\u2028"


def test_rebuild_in_place_and_refuse_a_foreign_folder(tmp_path: Path, runs: Runs) -> None:
    out = tmp_path / "site"
    build_site([runs.dirs["gamma-1"]], out)
    build_site([runs.dirs["alpha-1"]], out)  # nightly rebuild: old pages are replaced
    assert [p.name for p in (out / "runs").iterdir()] == [runs.dirs["alpha-1"].name]
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    proc = cli("leaderboard", "build", str(runs.dirs["alpha-1"]), "--out", str(foreign))
    assert_one_error_line(proc, str(foreign), "not an evalkit site")
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "mine"


# -- the CLI -----------------------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalkit.cli", *args], capture_output=True, text=True, timeout=120
    )


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_builds_the_site(runs: Runs, tmp_path: Path) -> None:
    out = tmp_path / "cli-site"
    proc = cli("leaderboard", "build", str(runs.root / "runs"), "--out", str(out))  # a folder of runs
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"site: {out / 'index.html'}"
    assert len(json.loads((out / "data" / "runs.json").read_text(encoding="utf-8"))) == len(runs.dirs)


def test_cli_bad_input_is_one_error_line_exit_2(runs: Runs, tmp_path: Path) -> None:
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    assert_one_error_line(
        cli("leaderboard", "build", str(not_a_run), "--out", str(tmp_path / "s1")),
        str(not_a_run),
        "not a run directory",
    )
    assert_one_error_line(
        cli("leaderboard", "build", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s2")),
        str(tmp_path / "nowhere"),
    )
    broken = tmp_path / "no-summary"
    broken.mkdir()
    (broken / "manifest.json").write_bytes((runs.dirs["gamma-1"] / "manifest.json").read_bytes())
    assert_one_error_line(
        cli("leaderboard", "build", str(runs.dirs["alpha-1"]), str(broken), "--out", str(tmp_path / "s3")),
        str(broken / "summary.json"),
        f"evalkit score --finalize-only {broken}",
    )
    assert not (tmp_path / "s3").exists()  # bad input fails before anything is written

"""report.html of a real run: a loopback OpenAI-compatible server that reasons and speaks, a spoken
samples task with audio inputs, three judges (numeric, prosody, emotion), and model text that tries
to break out of the page. Every check compares the page with the run's own files (manifest.json,
summary.json, responses.jsonl, scores.jsonl), never with numbers typed into the test.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from evalkit.records import GenerationParams, Usage
from evalkit.registry import register_task
from evalkit.reports import charts as report_charts
from evalkit.reports.html import render, sample_rows, write_report
from evalkit.run_files import Summary
from evalkit.runner import RunConfig, evaluate
from evalkit.store import RunStore
from evalkit.tasks.samples_file import SamplesFileTask
from evalkit.testing.openai_server import OpenAIServer, Reply, last_user_text

pytest.importorskip("aiohttp")
pytest.importorskip("plotly")

EVIL = "<script>alert(1)</script> and </script><img src=x onerror=alert(2)>"
#: a group name that would end a <script> element if chart JSON were not escaped
EVIL_CATEGORY = "hard</script><b>"


@register_task("report-spoken")
class SpokenSamplesTask(SamplesFileTask):
    """Samples from a JSONL file, answered in speech: the requests ask for text and audio, as a
    speech-output model is asked, so the run has output audio for the report and the judges."""

    params = GenerationParams(max_tokens=256, extra={"modalities": ["text", "audio"]})
    requires = ("audio_in", "audio_out")


@dataclass
class BuiltRun:
    store: RunStore
    data_dir: Path
    #: sample ids by the status the scripted server gives them
    expected_status: dict[str, str]


def write_clip(path: Path, seconds: float, freq: float) -> str:
    """A short voiced-like tone (the "user" speaking) as a 16 kHz WAV file."""
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)), 16000)
    return path.name


def scripted_answer(body: dict[str, Any]) -> Reply:
    """Answers keyed on the question text; reasoning grows with the number asked for, so the
    reasoning-length curve has several bins."""
    text = last_user_text(body)
    if "evil" in text:
        return Reply(f"{EVIL} The answer is 9.", reasoning=f"thinking </script> {EVIL}")
    if "mumble" in text:
        return Reply("I would rather not say.", reasoning="hmm " * 3)
    number = re.findall(r"Reply (\d+)", text)[-1]
    return Reply(f"The answer is {number}.", reasoning="step " * (2 + 3 * int(number)))


def spoken_samples(data_dir: Path) -> list[dict[str, Any]]:
    """Single-turn spoken questions: audio plus a text cue the scripted server reads."""

    def single(sample_id: str, cue: str, answer: str, category: str, freq: float) -> dict[str, Any]:
        clip = write_clip(data_dir / f"{sample_id}.wav", 0.3, freq)
        return {
            "id": sample_id,
            "conversation": [
                {"role": "user", "audio": {"path": clip}, "text": cue, "transcript": f"question {sample_id}"}
            ],
            "reference": {"answer": answer},
            "meta": {"category": category},
        }

    samples = [
        single("s1", "Reply 1.", "1", "easy", 180),
        single("s2", "Reply 2.", "2", "easy", 200),
        single("s3", "Reply 3.", "4", EVIL_CATEGORY, 220),  # wrong on purpose
        single("s4", "Reply 4.", "4", EVIL_CATEGORY, 240),
        single("s5", "Reply 5.", "5", "easy", 260),
        single("s6", "Reply 6.", "7", EVIL_CATEGORY, 280),  # wrong on purpose
        single("evil", "evil question, Reply 9.", "9", "easy", 300),
        single("mumble", "mumble", "3", "easy", 320),  # parse failure
        single("boom", "explode Reply 8.", "8", EVIL_CATEGORY, 340),  # the server refuses it
    ]
    return samples


def conversations(data_dir: Path) -> list[dict[str, Any]]:
    """Two spoken three-turn conversations (the prosody and emotion judges measure every turn)."""
    out = []
    for c in range(2):
        turns = []
        for k in range(3):
            clip = write_clip(data_dir / f"conv{c}_t{k}.wav", 0.3, 150 + 60 * k + 20 * c)
            turns.append({"role": "user", "audio": {"path": clip}, "text": f"Reply {k + 1 + c}."})
        out.append(
            {
                "id": f"conv{c}",
                "conversation": turns,
                # conv1's last answer is wrong on purpose: accuracy by turn is not flat
                "reference": {
                    "turns": [{"answer": str(1 + c)}, {"answer": str(2 + c)}, {"answer": str(3 + 2 * c)}]
                },
            }
        )
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps({"task": "x", **r}) + "\n" for r in rows), encoding="utf-8")
    return path


def build_run(root: Path) -> BuiltRun:
    """A finished run with three tasks: spoken questions (reasoning, speech, audio inputs, groups, a
    parse failure, a model error, hostile text), spoken conversations (per-turn accuracy, prosody
    and emotion judges) and plain text."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    spoken = write_jsonl(data_dir / "spoken.jsonl", spoken_samples(data_dir))
    conv = write_jsonl(data_dir / "conv.jsonl", conversations(data_dir))
    text = write_jsonl(
        data_dir / "text.jsonl",
        [
            {
                "id": "t1",
                "conversation": [{"role": "user", "text": "Reply 2."}],
                "reference": {"answer": "2"},
            },
            {
                "id": "t2",
                "conversation": [{"role": "user", "text": "Reply 3."}],
                "reference": {"answer": "5"},
            },
        ],
    )
    with OpenAIServer(answer=scripted_answer, think="field", audio_seconds=0.3) as server:
        server.fail_matching(lambda body: "explode" in last_user_text(body), status=400)
        config = RunConfig(
            model=f"openai:loopback@{server.base_url}",
            tasks=(
                f"report-spoken:path={spoken},judges=numeric,group_by=category,"
                f"report-spoken:path={conv},judges=numeric+prosody+emotion,"
                f"jsonl:path={text},judges=numeric"
            ),
            concurrency=4,
            out_dir=str(root / "runs"),
            use_cache=False,
            judge_workers=2,
            seed=7,
        )
        store = evaluate(config, argv=["evalkit", "run", "--seed", "7"], show_progress=False)
    expected = {
        **dict.fromkeys(["s1", "s2", "s4", "s5", "evil", "conv0", "t1"], "correct"),
        **dict.fromkeys(["s3", "s6", "conv1", "t2"], "incorrect"),
        "mumble": "parse-failure",
        "boom": "error",
    }
    return BuiltRun(store, data_dir, expected)


_BUILT: dict[str, BuiltRun] = {}


def shared_run(tmp_path_factory: pytest.TempPathFactory) -> BuiltRun:
    """One run per test session for this module and the browser tests (building it scores audio,
    which takes seconds); tests that rewrite report.html rebuild it before they finish."""
    if "run" not in _BUILT:
        _BUILT["run"] = build_run(tmp_path_factory.mktemp("report-run"))
    return _BUILT["run"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> BuiltRun:
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def page(run: BuiltRun) -> str:
    return (run.store.root / "report.html").read_text(encoding="utf-8")


def summary_of(run: BuiltRun) -> dict[str, Any]:
    return json.loads((run.store.root / "summary.json").read_text(encoding="utf-8"))


def manifest_of(run: BuiltRun) -> dict[str, Any]:
    return json.loads((run.store.root / "manifest.json").read_text(encoding="utf-8"))


def text_of(fragment: str) -> str:
    """Visible text of an HTML fragment: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def element(page: str, element_id: str) -> str:
    match = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"[^>]*>(.*?)</\1>', page, re.S)
    assert match, f"no element #{element_id}"
    return text_of(match.group(2))


def chart_figures(page: str) -> dict[str, dict[str, Any]]:
    return {
        m.group(1): json.loads(m.group(2))
        for m in re.finditer(
            r'<script type="application/json" data-chart="([^"]+)">(.*?)</script>', page, re.S
        )
    }


def audio_sources(page: str) -> list[str]:
    return [unescape(src) for src in re.findall(r'<audio[^>]*\ssrc="([^"]*)"', page)]


# -- the run itself is what the test thinks it is ------------------------------------------------------
def test_the_scripted_run_has_every_kind_of_sample(run: BuiltRun) -> None:
    rows = sample_rows(run.store.responses(), run.store.scores())
    assert {r["id"]: r["status"] for r in rows} == run.expected_status
    assert any(r.output.audio is not None for r in run.store.responses())  # the model spoke


# -- header ---------------------------------------------------------------------------------------------
def test_header_shows_the_manifest_and_token_facts(run: BuiltRun, page: str) -> None:
    manifest, summary = manifest_of(run), summary_of(run)
    assert element(page, "fact-model") == manifest["model"]["spec"]
    assert element(page, "fact-seed") == "7" == str(manifest["seed"])
    tokens: Counter[str] = Counter()
    for task in summary["tasks"].values():
        tokens.update(task["requests"]["tokens"])
    assert tokens["reasoning_tokens"] > 0
    assert element(page, "fact-tokens") == f"{tokens['prompt_tokens']:,} / {tokens['completion_tokens']:,}"
    assert element(page, "fact-reasoning-tokens") == f"{tokens['reasoning_tokens']:,}"
    session = manifest["last_session"]
    assert element(page, "fact-throughput").startswith(f"{session['samples_per_s']:.3f} samples/s")
    assert element(page, "fact-duration") == f"{session['seconds']:.1f} s"  # a short run
    assert element(page, "evalkit-version").startswith(manifest["versions"]["evalkit"])
    assert manifest["hardware"]["platform"] in element(page, "hardware")
    versions = element(page, "versions")
    for name, version in manifest["versions"].items():
        assert f"{name} {version}" in versions
    datasets = element(page, "datasets")
    for task in manifest["tasks"]:
        assert task["dataset"]["id"] in datasets
        assert task["dataset"]["fingerprint"][:16] in datasets
    assert "none (plain spec)" in text_of(page)  # no model card: said, not left blank


# -- metric tables --------------------------------------------------------------------------------------
def test_metric_rows_and_cis_equal_summary_json(run: BuiltRun, page: str) -> None:
    summary = summary_of(run)
    checked = 0
    for task_name, task in summary["tasks"].items():
        table = re.search(
            rf'<table class="metrics" data-task="{re.escape(task_name)}">(.*?)</table>', page, re.S
        )
        assert table, task_name
        for judge_name, judge in task["judges"].items():
            for metric, m in judge["metrics"].items():
                row = re.search(
                    rf'<tr data-judge="{judge_name}" data-metric="{metric}">(.*?)</tr>', table.group(1), re.S
                )
                assert row, (task_name, judge_name, metric)
                cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
                value, ci = text_of(cells[2]), text_of(cells[3])
                fmt = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
                assert value == fmt(m["value"])
                assert ci == f"[{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]"
                assert text_of(cells[4]) == f"{judge['n_scored']} / {judge['n']}"
                # the judge's declaration (summary.json metrics_declared): direction mark and unit
                declared = judge["metrics_declared"][metric]
                assert f'data-direction="{declared["direction"]}"' in cells[1]
                assert not declared["unit"] or declared["unit"] in text_of(cells[1])
                checked += 1
    assert checked >= 5
    numeric = summary["tasks"]["jsonl-spoken"]["judges"]["numeric"]
    assert numeric["n_parse_failures"] == 1 and numeric["n_model_errors"] == 1


def test_group_breakdowns_are_shown_with_escaped_group_names(run: BuiltRun, page: str) -> None:
    groups = summary_of(run)["tasks"]["jsonl-spoken"]["judges"]["numeric"]["groups"]["category"]
    assert set(groups) == {"easy", EVIL_CATEGORY}
    table = re.search(
        r'<table class="groups" data-task="jsonl-spoken" data-judge="numeric" data-key="category">'
        r"(.*?)</table>",
        page,
        re.S,
    )
    assert table
    rows = [text_of(r) for r in re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)]
    m = groups[EVIL_CATEGORY]["accuracy"]
    assert (
        f"{EVIL_CATEGORY} accuracy {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] {m['n']}" in rows
    )
    assert "hard&lt;/script&gt;&lt;b&gt;" in table.group(1)


# -- escaping and self-containment -----------------------------------------------------------------------
def test_model_text_is_escaped_everywhere(run: BuiltRun, page: str) -> None:
    assert EVIL in "".join(r.output.text or "" for r in run.store.responses())  # it did reach the run
    assert "<script>alert(1)" not in page
    assert "<img src=x" not in page and EVIL_CATEGORY not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # every </script> in the page closes a <script> the template opened (plotly.js aside)
    from plotly.offline import get_plotlyjs

    template_part = page.replace(get_plotlyjs(), "")
    assert template_part.count("</script>") == template_part.count("<script")
    evil = re.search(r'<section class="sample" id="sample-jsonl-spoken-evil".*?</section>', page, re.S)
    assert evil and EVIL in text_of(evil.group(0))  # shown to the reader as text
    assert f"thinking </script> {EVIL}" in text_of(evil.group(0))  # reasoning too


def test_plotly_is_inlined_exactly_once_and_nothing_is_fetched(page: str) -> None:
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    assert page.count(js[:2000]) == 1 and page.count(js[-2000:]) == 1
    assert not re.search(r"<script[^>]*\ssrc=", page)
    assert not re.search(r'<link[^>]*\shref="https?:', page)
    assert not re.search(r'\ssrc="https?:', page)


# -- charts ---------------------------------------------------------------------------------------------
def test_category_chart_plots_summary_values(run: BuiltRun, page: str) -> None:
    groups = summary_of(run)["tasks"]["jsonl-spoken"]["judges"]["numeric"]["groups"]["category"]
    figures = chart_figures(page)
    [category] = [f for key, f in figures.items() if key.startswith("chart-category")]
    bar = category["data"][0]
    assert bar["x"] == list(groups)  # the group name survives JSON escaping intact
    assert bar["y"] == pytest.approx([groups[g]["accuracy"]["value"] for g in groups])
    assert bar["text"] == [f"n={groups[g]['accuracy']['n']}" for g in groups]
    upper = [groups[g]["accuracy"]["ci_high"] - groups[g]["accuracy"]["value"] for g in groups]
    assert bar["error_y"]["array"] == pytest.approx(upper)


def test_reasoning_curve_bins_every_scored_sample(run: BuiltRun, page: str) -> None:
    figures = chart_figures(page)
    curve = figures["chart-reasoning"]
    [spoken] = [t for t in curve["data"] if t["name"].startswith("jsonl-spoken")]
    scored = [
        s
        for s in run.store.scores()
        if s.task == "jsonl-spoken" and s.score.judge == "numeric" and s.score.error is None
    ]
    counts = [int(t.removeprefix("n=")) for t in spoken["text"]]
    assert sum(counts) == len(scored) and len(counts) >= 2
    assert spoken["x"] == sorted(spoken["x"])  # bins in order of length
    # the overall accuracy is the count-weighted mean of the bins
    accuracy = summary_of(run)["tasks"]["jsonl-spoken"]["judges"]["numeric"]["metrics"]["accuracy"]["value"]
    assert np.dot(counts, spoken["y"]) / sum(counts) == pytest.approx(accuracy)


def test_per_turn_charts_come_from_by_turn_and_judge_details(run: BuiltRun, page: str) -> None:
    figures = chart_figures(page)
    by_turn = summary_of(run)["tasks"]["jsonl-conv"]["judges"]["numeric"]["by_turn"]
    assert [v["value"] for v in by_turn.values()] == [1.0, 1.0, 0.5]
    [line] = figures["chart-turn-accuracy"]["data"]
    assert line["x"] == [int(t) + 1 for t in by_turn] and line["y"] == [by_turn[t]["value"] for t in by_turn]
    [prosody] = [f for key, f in figures.items() if key.startswith("chart-prosody")]
    [arousal] = [f for key, f in figures.items() if key.startswith("chart-arousal")]
    scores = [s for s in run.store.scores() if s.task == "jsonl-conv"]
    labels = dict((label, feature) for feature, label in report_charts.PROSODY_FEATURES)
    assert prosody["data"]
    for trace in prosody["data"]:  # each feature: the mean over conversations of each turn's value
        feature = labels[trace["name"]]
        for turn, y in zip(trace["x"], trace["y"], strict=True):
            values = [
                r[feature]
                for s in scores
                if s.score.judge == "prosody"
                for r in s.score.details["turn_features"]
                if r["turn"] + 1 == turn and r[feature] is not None  # the page counts from 1
            ]
            assert y == pytest.approx(np.mean(values))
    model = next(t for t in arousal["data"] if t["name"] == "model arousal")
    rows = [r for s in scores if s.score.judge == "emotion" for r in s.score.details["per_turn"]]
    for turn, y, n in zip(model["x"], model["y"], model["text"], strict=True):
        values = [r["arousal"] for r in rows if r["turn"] + 1 == turn and r["arousal"] is not None]
        assert y == pytest.approx(np.mean(values)) and n == f"n={len(values)}"


def test_a_chart_without_data_is_a_note_never_a_fake_chart(run: BuiltRun) -> None:
    summary = summary_of(run)
    silent = [
        r.model_copy(update={"output": r.output.model_copy(update={"reasoning": None, "usage": Usage()})})
        for r in run.store.responses()
    ]
    flat = {**summary, "tasks": {n: {**t, "judges": {}} for n, t in summary["tasks"].items()}}
    charts = report_charts.build_charts(Summary.model_validate(flat), silent, [])
    assert [c.figure_json for c in charts] == [None, None, None]
    assert [c.note for c in charts] == [
        "No per-group breakdown in summary.json (the tasks define no group keys).",
        "No reasoning was recorded in this run.",
        "No per-turn data: no multi-turn accuracy breakdown and no prosody or emotion judge.",
    ]


def test_quantile_bins_and_token_fallback() -> None:
    points = [(10, 1.0), (10, 0.0), (20, 1.0), (30, 1.0), (40, 0.0), (50, 0.0), (60, 0.0), (70, 1.0)]
    bins = report_charts.quantile_bins(points, n_bins=4)
    assert [b.n for b in bins] == [2, 2, 2, 2]
    assert [(b.low, b.high) for b in bins] == [(10, 10), (20, 30), (40, 50), (60, 70)]
    assert [b.value for b in bins] == pytest.approx([0.5, 1.0, 0.0, 0.5])
    # equal lengths never straddle two bins: three 5s and a 9 make two bins, not four
    skewed = report_charts.quantile_bins([(5, 1.0), (5, 0.0), (5, 1.0), (9, 0.0)], n_bins=4)
    assert [(b.low, b.high, b.n) for b in skewed] == [(5, 5, 3), (9, 9, 1)]
    assert len(report_charts.quantile_bins([(5, 1.0), (5, 0.0)])) == 1
    assert report_charts.reasoning_length(17, "ignored text") == 17
    assert report_charts.reasoning_length(None, "So, 2 + 3 = 5.") == 8  # So , 2 + 3 = 5 .


def test_script_safe_json_round_trips() -> None:
    text = json.dumps({"s": "</script><!-- & \u2028"})
    safe = report_charts.script_safe_json(text)
    assert "<" not in safe and ">" not in safe and "&" not in safe and "\u2028" not in safe
    assert json.loads(safe) == json.loads(text)


# -- sample browser ---------------------------------------------------------------------------------------
def test_sample_browser_filters_and_statuses(run: BuiltRun, page: str) -> None:
    sections = re.findall(
        r'<section class="sample" id="[^"]+" data-status="([^"]+)" data-task="([^"]+)"[^>]*>', page
    )
    assert Counter(s for s, _ in sections) == Counter(run.expected_status.values())
    assert {t for _, t in sections} == {"jsonl-spoken", "jsonl-conv", "jsonl-text"}
    task_box = re.search(r'<select id="task-filter">(.*?)</select>', page, re.S)
    assert task_box and re.findall(r'<option value="([^"]*)">', task_box.group(1)) == [
        "",
        "jsonl-conv",
        "jsonl-spoken",
        "jsonl-text",
    ]
    boxes = re.findall(r'<input type="checkbox" class="status-filter" value="([^"]+)" checked>', page)
    assert boxes == ["correct", "incorrect", "parse-failure", "error"]
    assert "samples-cap" not in page


def test_reasoning_is_collapsed_and_judge_explanations_shown(run: BuiltRun, page: str) -> None:
    details = re.findall(r'<details class="reasoning"([^>]*)>', page)
    with_reasoning = [r for r in run.store.responses() if r.output.reasoning]
    assert len(details) == len(with_reasoning) and all("open" not in d for d in details)
    explanations = {text_of(e) for e in re.findall(r'<span class="explanation">(.*?)</span>', page, re.S)}
    for rec in run.store.scores():
        if rec.score.explanation:
            assert " ".join(rec.score.explanation.split()) in explanations


def test_every_turn_has_playable_audio_inputs_linked_outputs_embedded(run: BuiltRun, page: str) -> None:
    responses = run.store.responses()
    spoken_turns = [r for r in responses if r.task != "jsonl-text"]
    inputs = [unescape(s) for s in re.findall(r'<audio[^>]*class="input-audio" src="([^"]*)"', page)]
    outputs = re.findall(r'<audio[^>]*class="output-audio" src="([^"]*)"', page)
    assert len(inputs) == len(spoken_turns)  # every spoken user turn, the failed one included
    assert len(outputs) == sum(r.output.audio is not None for r in responses) == len(spoken_turns) - 1
    said = {(run.store.root / r.input.audio_path).resolve() for r in spoken_turns}
    assert {(run.store.root / src).resolve() for src in inputs} == said  # the dataset's files, linked
    for src in outputs:
        assert src.startswith("data:audio/ogg;base64,")  # compressed: Ogg Vorbis, re-encoded
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"OggS"


def test_input_clips_are_linked_so_the_report_does_not_grow_with_their_bytes(run: BuiltRun) -> None:
    bare = len(render(run.store, embed_limit=0).encode())  # nothing embedded: links only
    responses = run.store.responses()
    inputs = {r.input.audio_path for r in responses if r.input.audio_path}
    outputs = {r.output.audio.path for r in responses if r.output.audio is not None}
    input_bytes = sum((run.store.root / p).stat().st_size for p in inputs)
    output_bytes = sum((run.store.root / p).stat().st_size for p in outputs)
    embedded = len(render(run.store).encode()) - bare
    assert input_bytes > 0.1 * output_bytes > 0
    assert embedded <= 4 / 3 * output_bytes * 1.05  # base64 of the model's audio, none of the inputs


def test_audio_beyond_the_budget_is_linked_and_survives_a_copy(run: BuiltRun, tmp_path: Path) -> None:
    page = render(run.store, embed_limit=0)
    sources = audio_sources(page)
    assert sources and not any(s.startswith("data:") for s in sources)
    for src in sources:
        assert (run.store.root / src).resolve().is_file(), src
    copy = tmp_path / "elsewhere" / run.store.root.name
    shutil.copytree(run.store.root, copy)
    outputs = [unescape(s) for s in re.findall(r'<audio[^>]*class="output-audio" src="([^"]*)"', page)]
    assert outputs and all((copy / src).is_file() for src in outputs)


def test_large_runs_cap_the_sample_browser(run: BuiltRun, monkeypatch: pytest.MonkeyPatch) -> None:
    capped = render(run.store, max_samples=3)
    assert len(re.findall(r'<section class="sample"', capped)) == 3
    n = len(run.expected_status)
    assert f"Showing the first 3 of {n} samples" in text_of(capped)
    monkeypatch.setenv("EVALKIT_REPORT_MAX_SAMPLES", "2")
    path = write_report(run.store)
    assert len(re.findall(r'<section class="sample"', path.read_text(encoding="utf-8"))) == 2
    monkeypatch.delenv("EVALKIT_REPORT_MAX_SAMPLES")
    assert len(re.findall(r'<section class="sample"', write_report(run.store).read_text("utf-8"))) == n

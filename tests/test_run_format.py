"""The run directory as a self-contained, versioned format (``evalkit.run_files``).

A real run against the loopback OpenAI-compatible server writes ``schema_version`` in every file
and line and the samples as run (samples.jsonl, audio by path in the data root or inside the run,
with digests); ``evalkit score`` re-judges it with no model call and reproduces scores.jsonl byte
for byte; ``evalkit report`` renders and never rewrites; finalize reads each stream twice; a run
directory of the previous format (``tests/fixtures/run_v0``, written by evalkit at commit 530216d)
still reads and reports; a newer writer's unknown fields do not break this reader.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from evalkit import store as store_module
from evalkit.errors import EvalkitError
from evalkit.finalize import finalize
from evalkit.records import SCHEMA_VERSION, ResponseRecord, SampleRecord, ScoreRecord
from evalkit.reports.html import write_report
from evalkit.rescore import rescore
from evalkit.run_files import Manifest, Summary, parse_line
from evalkit.runner import RunConfig, evaluate
from evalkit.store import RESPONSES, SAMPLES, SCORES, RunStore
from evalkit.testing.openai_server import OpenAIServer

FIXTURE_V0 = Path(__file__).parent / "fixtures" / "run_v0"
STREAMS = (RESPONSES, SCORES, SAMPLES)


def _wav_bytes(seconds: float = 0.1, rate: int = 16000) -> bytes:
    import io

    buf = io.BytesIO()
    tone = (0.1 * np.sin(np.arange(int(seconds * rate)) / 5)).astype("float32")
    sf.write(buf, tone, rate, format="WAV")
    return buf.getvalue()


def write_data(folder: Path) -> Path:
    """Four samples: text, audio by path, audio as inline bytes, and two turns. The loopback server
    answers with the last number in the question, so two are right and two wrong."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clip.wav").write_bytes(_wav_bytes())
    inline = base64.b64encode(_wav_bytes(0.05)).decode("ascii")
    rows = [
        {"id": "text", "task": "x", "conversation": [{"role": "user", "text": "Repeat 5."}],
         "reference": {"answer": "5"}, "meta": {"kind": "text"}},
        {"id": "by-path", "task": "x",
         "conversation": [{"role": "user", "text": "What number?", "audio": {"path": "clip.wav"}}],
         "reference": {"answer": "7"}, "meta": {"kind": "audio"}},
        {"id": "inline", "task": "x",
         "conversation": [{"role": "user", "text": "Say 3.", "audio": {"data": inline}}],
         "reference": {"answer": "3"}, "meta": {"kind": "audio"}},
        {"id": "two-turns", "task": "x",
         "conversation": [{"role": "user", "text": "10 - 4?"}, {"role": "assistant", "text": "6"},
                          {"role": "user", "text": "Now repeat 12."}],
         "reference": {"answer": "99"}, "meta": {"kind": "text"}},
    ]  # fmt: skip
    path = folder / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def server():
    with OpenAIServer() as srv:
        yield srv


def make_run(server: OpenAIServer, tmp_path: Path, judges: str = "numeric") -> RunStore:
    samples = write_data(tmp_path / "data")
    config = RunConfig(
        model=f"openai:{server.model}@{server.base_url}",
        tasks=f"jsonl:path={samples},judges={judges},group_by=kind",
        concurrency=3,
        out_dir=str(tmp_path / "runs"),
        use_cache=False,
    )
    return evaluate(config, argv=["evalkit", "run"], show_progress=False)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evalkit.cli", *args], capture_output=True, text=True, timeout=120
    )


# -- a run of this version --------------------------------------------------------------------------
def test_every_file_and_line_carries_the_schema_version(server: OpenAIServer, tmp_path: Path) -> None:
    store = make_run(server, tmp_path)
    for name in ("manifest.json", "summary.json"):
        assert json.loads((store.root / name).read_text())["schema_version"] == SCHEMA_VERSION
    for name in STREAMS:
        found = lines(store.root / name)
        assert found and all(next(iter(line)) == "schema_version" for line in found), name
        assert {line["schema_version"] for line in found} == {SCHEMA_VERSION}
    assert store.manifest().schema_version == store.summary().schema_version == SCHEMA_VERSION


def test_samples_jsonl_holds_the_samples_as_run_with_audio_digests(
    server: OpenAIServer, tmp_path: Path
) -> None:
    store = make_run(server, tmp_path)
    records = {r.sample.id: r for r in store.iter_samples()}
    assert list(records) == ["text", "by-path", "inline", "two-turns"]  # finalize's order
    assert [r.sample_index for r in records.values()] == [0, 1, 2, 3]
    by_path = records["by-path"].sample.conversation[0].audio
    assert by_path is not None and Path(by_path.path).is_absolute()  # inside the confined data root
    assert Path(by_path.path) == (tmp_path / "data" / "clip.wav").resolve()
    inline = records["inline"].sample.conversation[0].audio
    assert inline is not None and inline.data is None and not Path(inline.path).is_absolute()
    assert inline.path.startswith("audio/inputs/")  # bytes are kept inside the run, by path
    for rec, path in (
        (records["by-path"], Path(by_path.path)),
        (records["inline"], store.root / inline.path),
    ):
        assert rec.audio_sha256 == {0: hashlib.sha256(path.read_bytes()).hexdigest()}
    assert records["two-turns"].sample.reference == {"answer": "99"}
    assert records["text"].audio_sha256 == {}


def test_score_reproduces_scores_exactly_without_calling_the_model(
    server: OpenAIServer, tmp_path: Path
) -> None:
    store = make_run(server, tmp_path)
    before = {n: (store.root / n).read_bytes() for n in (*STREAMS, "summary.json")}
    hits = server.hits
    proc = cli("score", str(store.root))
    assert proc.returncode == 0, proc.stderr
    assert server.hits == hits  # the model under test was never asked
    for name, data in before.items():
        assert (store.root / name).read_bytes() == data, name
    manifest = store.manifest()
    assert [s["judges"] for s in manifest.rescored] == [{"jsonl-samples": ["numeric"]}]
    assert not (store.root / ".lock.owner").exists()


def test_score_with_another_judge_adds_it_and_keeps_the_others(server: OpenAIServer, tmp_path: Path) -> None:
    store = make_run(server, tmp_path)
    numeric = [line for line in lines(store.root / SCORES)]
    rescore(store.root, ["numeric-spoken"])
    scores = lines(store.root / SCORES)
    assert [s for s in scores if s["score"]["judge"] == "numeric"] == numeric
    assert [s["sample_id"] for s in scores if s["score"]["judge"] == "numeric-spoken"] == [
        "text",
        "by-path",
        "inline",
        "two-turns",
    ]
    assert store.manifest().tasks[0].judges == ["numeric", "numeric-spoken"]
    assert set(store.summary().tasks["jsonl-samples"].judges) == {"numeric", "numeric-spoken"}


def test_score_refuses_audio_that_changed_since_the_run(server: OpenAIServer, tmp_path: Path) -> None:
    store = make_run(server, tmp_path)
    before = (store.root / SCORES).read_bytes()
    (tmp_path / "data" / "clip.wav").write_bytes(_wav_bytes(0.2))
    with pytest.raises(EvalkitError, match=r"clip\.wav: changed or missing since the run read it"):
        rescore(store.root)
    assert (store.root / SCORES).read_bytes() == before


def test_report_renders_and_never_rewrites_the_data_files(server: OpenAIServer, tmp_path: Path) -> None:
    store = make_run(server, tmp_path)
    scores = store.root / SCORES
    shuffled = scores.read_text(encoding="utf-8").splitlines(keepends=True)[::-1]
    scores.write_text("".join(shuffled), encoding="utf-8")  # as a hand edit would leave it
    data = {n: (store.root / n).read_bytes() for n in (*STREAMS, "summary.json", "manifest.json")}
    (store.root / "report.html").unlink()
    proc = cli("report", str(store.root))
    assert proc.returncode == 0, proc.stderr
    assert (store.root / "report.html").is_file()
    for name, content in data.items():
        assert (store.root / name).read_bytes() == content, name


def _count_stream_opens(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every open of a run stream for reading by the run store (``evalkit.store``: all JSONL
    reading goes through it), by file name."""
    opened: Counter[str] = Counter()
    real_open = builtins.open

    def counting_open(file, mode="r", *args, **kwargs):
        if Path(str(file)).name in STREAMS and "r" in mode and "+" not in mode:
            opened[Path(str(file)).name] += 1
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(store_module, "open", counting_open, raising=False)
    return opened


def test_finalize_reads_each_stream_at_most_twice(
    server: OpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_run(server, tmp_path)
    summary_before = (store.root / "summary.json").read_bytes()
    report_before = (store.root / "report.html").read_text(encoding="utf-8")
    opened = _count_stream_opens(monkeypatch)
    finalize(store)  # sort, score passes, summary and the report's scan: one rewrite
    assert set(opened) == set(STREAMS) and max(opened.values()) <= 2, opened
    assert (store.root / "summary.json").read_bytes() == summary_before
    opened.clear()
    write_report(store)  # `evalkit report`: one pass of its own over the finished files
    assert opened == Counter({RESPONSES: 1, SCORES: 1}), opened
    # the page from finalize's pass and the page from the report's own pass are the same
    assert (store.root / "report.html").read_text(encoding="utf-8") == report_before


# -- the previous format ----------------------------------------------------------------------------
@pytest.fixture
def run_v0(tmp_path: Path) -> Path:
    """A copy of the fixture (reading a run takes its lock file; the fixture stays untouched)."""
    return Path(shutil.copytree(FIXTURE_V0, tmp_path / "run_v0"))


def test_a_run_of_the_previous_format_reads_typed(run_v0: Path) -> None:
    store = RunStore.open_existing(run_v0)
    manifest, summary = store.manifest(), store.summary()
    assert manifest.schema_version == 0 and summary.schema_version == 0
    assert manifest.status == "completed" and manifest.model_spec.startswith("openai:loopback@")
    assert [(t.name, t.class_, t.judges) for t in manifest.tasks] == [
        ("jsonl-samples", "evalkit.tasks.samples_file.SamplesFileTask", ["numeric"])
    ]
    task = summary.tasks["jsonl-samples"]
    assert task.primary is not None and task.primary.value == pytest.approx(2 / 3)
    assert task.judges["numeric"].groups["category"]["audio"]["accuracy"].value == 0.0
    assert task.n_truncated == 0 and task.requests.truncated_share is None  # fields added later
    assert len(list(store.iter_responses())) == 4 and len(list(store.iter_scores())) == 3
    assert list(store.iter_samples()) == []  # samples.jsonl did not exist yet


def test_a_run_of_the_previous_format_still_reports(run_v0: Path) -> None:
    data = {p.name: p.read_bytes() for p in run_v0.iterdir() if p.is_file()}
    proc = cli("report", str(run_v0))
    assert proc.returncode == 0, proc.stderr
    page = (run_v0 / "report.html").read_text(encoding="utf-8")
    assert "jsonl-samples" in page and "0.667" in page
    for name, content in data.items():
        assert (run_v0 / name).read_bytes() == content, name  # read, never upgraded in place


def test_a_run_of_the_previous_format_compares_and_cannot_be_rejudged(run_v0: Path, tmp_path: Path) -> None:
    other = Path(shutil.copytree(FIXTURE_V0, tmp_path / "other"))
    proc = cli("compare", str(run_v0), str(other))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = cli("score", str(run_v0))
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "samples.jsonl: missing" in line and "schema_version 0" in line
    proc = cli("score", "--finalize-only", str(run_v0))  # re-sorting and summarising still work
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_v0 / "summary.json").read_text())["schema_version"] == SCHEMA_VERSION


# -- forward compatibility ------------------------------------------------------------------------
def _newer(record: dict[str, Any]) -> bytes:
    return json.dumps({**record, "schema_version": SCHEMA_VERSION + 1}).encode()


def test_a_newer_line_with_unknown_fields_reads_and_a_current_one_does_not(tmp_path: Path) -> None:
    score = {
        "task": "t",
        "sample_id": "s",
        "sample_index": 0,
        "score": {"judge": "numeric", "metrics": {"accuracy": 1.0}, "confidence": 0.9},
        "judge_version": "2",
    }
    rec = parse_line(_newer(score), ScoreRecord)
    assert rec.score.metrics == {"accuracy": 1.0} and rec.sample_id == "s"
    with pytest.raises(ValueError, match="confidence"):
        parse_line(json.dumps(score).encode(), ScoreRecord)  # this version: a typo stays an error
    response = {
        "task": "t",
        "sample_id": "s",
        "sample_index": 0,
        "turn": 0,
        "request_hash": "h",
        "output": {"text": "5", "usage": {"audio_tokens": 3}},
        "role": "target",
    }
    assert parse_line(_newer(response), ResponseRecord).output.text == "5"
    sample = {"task": "t", "sample_index": 0, "sample": {"id": "s", "task": "t", "conversation": [
        {"role": "user", "text": "hi", "speaker": "a"}]}}  # fmt: skip
    assert parse_line(_newer(sample), SampleRecord).sample.conversation[0].text == "hi"
    # the same holds for lines read from a run's files
    path = tmp_path / SCORES
    path.write_bytes(_newer(score) + b"\n")
    [read] = RunStore(tmp_path).iter_scores()
    assert read.score.judge == "numeric"


def test_a_newer_manifest_reads_keeps_its_unknown_fields_and_is_never_rewritten(
    server: OpenAIServer, tmp_path: Path
) -> None:
    store = make_run(server, tmp_path)
    raw = json.loads((store.root / "manifest.json").read_text())
    raw["schema_version"] = SCHEMA_VERSION + 1
    raw["model_roles"] = {"judge": "openai:big"}
    raw["tasks"][0]["metrics"] = [{"name": "accuracy", "direction": "higher"}]
    (store.root / "manifest.json").write_text(json.dumps(raw))
    manifest = store.manifest()
    assert isinstance(manifest, Manifest) and manifest.tasks[0].judges == ["numeric"]
    assert (manifest.model_extra or {})["model_roles"] == {"judge": "openai:big"}
    assert (manifest.tasks[0].model_extra or {})["metrics"][0]["direction"] == "higher"
    summary = json.loads((store.root / "summary.json").read_text())
    summary["tasks"]["jsonl-samples"]["judges"]["numeric"]["metrics"]["accuracy"]["unit"] = "share"
    (store.root / "summary.json").write_text(json.dumps(summary))
    assert isinstance(store.summary(), Summary)
    for attempt in (lambda: finalize(store), lambda: rescore(store.root)):
        with pytest.raises(EvalkitError, match=r"written by a newer evalkit .*upgrade evalkit"):
            attempt()
    proc = cli("report", str(store.root))
    assert proc.returncode == 0, proc.stderr  # reading (rendering) a newer run still works


def test_a_newer_file_that_changed_a_field_says_to_upgrade(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99, "tasks": "now a string"}))
    with pytest.raises(
        EvalkitError, match=rf"manifest\.json: field tasks: .*schema 99 > {SCHEMA_VERSION}.*upgrade"
    ):
        RunStore.open_existing(tmp_path).manifest()


def test_the_report_scan_keeps_exactly_the_first_samples_in_page_order() -> None:
    """finalize feeds the scan in file order (task order of the run, then index); the page shows
    the first ``cap`` samples by (task name, index): the bounded set kept while streaming must be
    exactly those, whatever order the records come in."""
    from evalkit.records import ModelOutput, Score
    from evalkit.reports.charts import ChartData
    from evalkit.reports.html import ReportScan, sample_rows

    order = [("zeta", i) for i in (3, 0, 2)] + [("alpha", i) for i in (5, 1, 4, 0)] + [("zeta", 1)]
    responses = [
        ResponseRecord(
            task=t,
            sample_id=f"{t}-{i}",
            sample_index=i,
            turn=0,
            request_hash="h",
            output=ModelOutput(text="x"),
        )
        for t, i in order
    ]
    scores = [
        ScoreRecord(task=r.task, sample_id=r.sample_id, sample_index=r.sample_index, score=Score(judge="j"))
        for r in reversed(responses)
    ]
    for cap in (0, 1, 3, 6, 20):
        scan = ReportScan(ChartData(Summary()), cap)
        for rec in responses:
            scan.add_response(rec)
        for rec in scores:
            scan.add_score(rec)
        expected = sample_rows(responses, scores)[:cap]
        assert [(r["task"], r["index"]) for r in scan.shown_rows()] == [
            (r["task"], r["index"]) for r in expected
        ]
        assert all(len(r["records"]) == 1 and len(r["scores"]) == 1 for r in scan.shown_rows())
        assert len(scan.rows()) == len(order)

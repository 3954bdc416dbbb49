"""``--shard I/N`` and ``evalkit merge``: a run split into shards and merged back must be the run
that was never split.

"The same" is defined on the files (they are the API):

- scores.jsonl: byte-identical. A ``ScoreRecord`` is task, sample id and index, meta and the
  judge's verdict; nothing in it depends on when or where it was made.
- responses.jsonl: identical line by line once ``output.timing`` (time to first token and total,
  measured on the wire) is removed; that is the only field of a ``ResponseRecord`` that legitimately
  differs between two runs with the cache off (``cached`` would differ if one run filled the cache
  for the other, so these runs do not use it). Spoken replies' paths are the same relative
  ``audio/...`` paths and the files have the same bytes.
- summary.json: identical once each task's request latency figures (computed from that timing) are
  removed: metrics, bootstrap CIs, groups, per-turn breakdowns, error and parse-failure counts.

The model is the deterministic loopback server (a real HTTP server on 127.0.0.1): it answers with
the last number in the question, so the expected accuracy is known from the samples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import assert_ok, evalkit_run, only_run_dir, read_json, read_jsonl

from evalkit.errors import EvalkitError
from evalkit.merge import merge_shards
from evalkit.records import GenerationParams
from evalkit.registry import register_task
from evalkit.runner import RunConfig, evaluate
from evalkit.sharding import Shard, parse_shard
from evalkit.tasks.samples_file import SamplesFileTask
from evalkit.testing.openai_server import OpenAIServer

pytest.importorskip("aiohttp")

N_SAMPLES = 13  # not a multiple of 3: shards of 5, 4 and 4


@register_task("jsonl-spoken-test")
class SpokenSamplesTask(SamplesFileTask):
    """The ``jsonl`` task asking for spoken replies, so that merged runs carry output audio."""

    params = GenerationParams(max_tokens=64, extra={"modalities": ["text", "audio"]})
    requires = ()


def write_samples(path: Path, n: int = N_SAMPLES) -> Path:
    """One- and two-turn text questions in two categories; every fourth has a wrong reference (the
    server echoes the question's number), and sample 7 carries an unreadable audio clip (an
    ``input_audio`` error record), so merged runs carry correct, wrong and failed samples. (Not a
    server refusal: the loopback server's error text names the request's arrival number, which
    legitimately differs between runs.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        turns = [{"role": "user", "text": f"Question {i}: reply {i}."}]
        answers = [str(i if i % 4 else i + 1)]
        if i % 3 == 0:
            turns += [{"role": "assistant", "text": "..."}, {"role": "user", "text": f"And now {i * 2}?"}]
            answers.append(str(i * 2))
        if i == 7:
            (path.parent / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio at all")
            turns[0]["audio"] = {"path": "corrupt.wav"}
        sample = {
            "id": f"s{i:02d}",
            "task": "mine",
            "conversation": turns,
            "reference": {"answer": answers[0]}
            if len(answers) == 1
            else {"turns": [{"answer": a} for a in answers]},
            "meta": {"category": "even" if i % 2 == 0 else "odd"},
        }
        lines.append(json.dumps(sample) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def server():
    with OpenAIServer() as srv:
        yield srv


def config(server: OpenAIServer, tasks: str, out: Path, shard: str | None = None, **kw: Any) -> RunConfig:
    return RunConfig(
        model=f"openai:{server.model}@{server.base_url}",
        tasks=tasks,
        concurrency=kw.pop("concurrency", 4),
        out_dir=str(out),
        use_cache=False,
        shard=shard,
        **kw,
    )


def without_timing(line: dict[str, Any]) -> dict[str, Any]:
    line = json.loads(json.dumps(line))
    line["output"].pop("timing", None)
    return line


def comparable_summary(summary: dict[str, Any]) -> dict[str, Any]:
    summary = json.loads(json.dumps(summary))
    for task in summary["tasks"].values():
        task["requests"].pop("latency_s")
        task["requests"].pop("first_token_s")
    return summary


def assert_same_run(merged: Path, plain: Path) -> None:
    """The definition of "identical to a single run" from the module docstring."""
    assert (merged / "scores.jsonl").read_bytes() == (plain / "scores.jsonl").read_bytes()
    assert (merged / "samples.jsonl").read_bytes() == (plain / "samples.jsonl").read_bytes()
    merged_responses = read_jsonl(merged / "responses.jsonl")
    plain_responses = read_jsonl(plain / "responses.jsonl")
    assert [without_timing(r) for r in merged_responses] == [without_timing(r) for r in plain_responses]
    assert comparable_summary(read_json(merged / "summary.json")) == comparable_summary(
        read_json(plain / "summary.json")
    )
    audio = [r["output"]["audio"]["path"] for r in merged_responses if "audio" in r["output"]]
    for rel in audio:
        assert not Path(rel).is_absolute()
        assert (merged / rel).read_bytes() == (plain / rel).read_bytes()
    assert (merged / "report.html").is_file()


def test_parse_shard_and_ownership() -> None:
    assert parse_shard(None) is None
    assert parse_shard("2/3") == Shard(2, 3)
    assert parse_shard(" 1 / 1 ") == Shard(1, 1)
    owned = [[i for i in range(10) if Shard(k, 3).owns(i)] for k in (1, 2, 3)]
    assert owned == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [Shard(k, 3).size(10) for k in (1, 2, 3)] == [4, 3, 3]
    assert Shard(3, 4).size(2) == 0 and Shard(1, 2).size(None) is None
    for bad, fragment in [
        ("3", "expected I/N"),
        ("a/b", "expected I/N"),
        ("0/3", "between 1 and 3"),
        ("4/3", "between 1 and 3"),
        ("1/0", "at least 1"),
        ("-1/3", "expected I/N"),
    ]:
        with pytest.raises(EvalkitError, match=fragment) as info:
            parse_shard(bad)
        assert "--shard" in str(info.value) and "\n" not in str(info.value)


def test_three_shards_merged_equal_a_single_run_with_spoken_replies(server, tmp_path):
    samples = write_samples(tmp_path / "data" / "spoken.jsonl")
    tasks = f"jsonl-spoken-test:path={samples},judges=numeric,group_by=category"
    plain = evaluate(config(server, tasks, tmp_path / "plain"), show_progress=False).root
    shard_dirs = []
    for k in (2, 3, 1):  # any order: nothing depends on which shard ran first
        store = evaluate(config(server, tasks, tmp_path / f"shard{k}", shard=f"{k}/3"), show_progress=False)
        shard_dirs.append(store.root)
        manifest = read_json(store.root / "manifest.json")
        assert manifest["config"]["shard"] == f"{k}/3"
        indices = {r["sample_index"] for r in read_jsonl(store.root / "scores.jsonl")}
        assert indices == {i for i in range(N_SAMPLES) if i % 3 == k - 1}
        summary = read_json(store.root / "summary.json")
        assert summary["shard"]["index"] == k and summary["shard"]["count"] == 3
        assert summary["tasks"]["jsonl-spoken"]["n_samples"] == len(indices)

    merged = merge_shards(shard_dirs, tmp_path / "merged").root
    assert_same_run(merged, plain)
    summary = read_json(merged / "summary.json")
    assert "shard" not in summary
    task = summary["tasks"]["jsonl-spoken"]
    assert task["n_samples"] == N_SAMPLES
    judge = task["judges"]["numeric"]
    # wrong references: 0, 4, 8, 12 (every fourth); 7 has broken audio: 8 right of 12 scored
    assert judge["n_model_errors"] == 1 and judge["n_scored"] == N_SAMPLES - 1
    assert judge["metrics"]["accuracy"]["value"] == pytest.approx(8 / 12)
    assert set(judge["by_turn"]) == {"0", "1"}
    responses = read_jsonl(merged / "responses.jsonl")
    assert sum("audio" in r["output"] for r in responses) == N_SAMPLES + 5 - 1  # 5 two-turn, 1 failed

    manifest = read_json(merged / "manifest.json")
    assert manifest["config"]["shard"] is None and manifest["status"] == "completed"
    assert [s["shard"] for s in manifest["merged"]["shards"]] == ["1/3", "2/3", "3/3"]
    plain_session = read_json(plain / "manifest.json")["last_session"]
    for counter in ("requests", "errors", "samples", "cache_hits", "retries"):
        assert manifest["last_session"][counter] == plain_session[counter], counter
    assert server.hits == 2 * 17  # the plain run and the shards each sent 17 requests (7 never left)
    assert manifest["last_session"]["samples"] == N_SAMPLES


def test_resume_within_a_shard_finishes_only_that_shard(server, tmp_path):
    samples = write_samples(tmp_path / "q.jsonl")
    tasks = f"jsonl:path={samples},judges=numeric"
    store = evaluate(config(server, tasks, tmp_path / "runs", shard="2/3"), show_progress=False)
    # simulate a kill: drop the last two samples' lines and mark the run unfinished
    responses = read_jsonl(store.root / "responses.jsonl")
    scores = read_jsonl(store.root / "scores.jsonl")
    keep = {r["sample_index"] for r in scores[:-2]}
    (store.root / "responses.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in responses if r["sample_index"] in keep), encoding="utf-8"
    )
    (store.root / "scores.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in scores if r["sample_index"] in keep), encoding="utf-8"
    )
    store.update_manifest(status="interrupted")
    before = server.hits
    resumed = evaluate(config(server, tasks, tmp_path / "other"), resume_dir=store.root, show_progress=False)
    assert resumed.root == store.root
    indices = [r["sample_index"] for r in read_jsonl(store.root / "scores.jsonl")]
    assert indices == [i for i in range(N_SAMPLES) if i % 3 == 1]
    assert server.hits - before == 1  # sample 10; 7 fails again before any request (its audio)
    assert read_json(store.root / "manifest.json")["config"]["shard"] == "2/3"


def shard_runs(server, tmp_path: Path, tasks: str, n: int = 3, **kw: Any) -> list[Path]:
    return [
        evaluate(config(server, tasks, tmp_path / f"s{k}", shard=f"{k}/{n}", **kw), show_progress=False).root
        for k in range(1, n + 1)
    ]


def test_merge_refuses_what_is_not_one_run(server, tmp_path):
    samples = write_samples(tmp_path / "q.jsonl")
    tasks = f"jsonl:path={samples},judges=numeric"
    one, two, three = shard_runs(server, tmp_path, tasks)

    with pytest.raises(EvalkitError, match=r"shard\(s\) 2/3 missing"):
        merge_shards([one, three], tmp_path / "m1")
    with pytest.raises(EvalkitError, match="shard 1/3 is given twice") as info:
        merge_shards([one, two, three, one], tmp_path / "m2")
    assert str(one) in str(info.value)

    other_seed = evaluate(config(server, tasks, tmp_path / "seed", shard="2/3", seed=1), show_progress=False)
    with pytest.raises(EvalkitError, match="seed differs") as info:
        merge_shards([one, other_seed.root, three], tmp_path / "m3")
    assert str(other_seed.root) in str(info.value)

    with OpenAIServer(model="another") as other:
        cfg = config(other, tasks, tmp_path / "model", shard="3/3")
        other_model = evaluate(cfg, show_progress=False).root
    with pytest.raises(EvalkitError, match="model spec differs"):
        merge_shards([one, two, other_model], tmp_path / "m4")

    four = evaluate(config(server, tasks, tmp_path / "four", shard="3/4"), show_progress=False).root
    with pytest.raises(EvalkitError, match="shard count differs"):
        merge_shards([one, two, four], tmp_path / "m5")

    # same file name, other content: the task name matches, the dataset fingerprint does not
    moved = tmp_path / "moved" / "q.jsonl"
    moved.parent.mkdir()
    moved.write_text(samples.read_text().replace("Question 5", "Question five"), encoding="utf-8")
    (moved.parent / "corrupt.wav").write_bytes((samples.parent / "corrupt.wav").read_bytes())
    changed = evaluate(
        config(server, f"jsonl:path={moved},judges=numeric", tmp_path / "data", shard="3/3"),
        show_progress=False,
    ).root
    with pytest.raises(EvalkitError, match="task 'jsonl-q' dataset.fingerprint differs"):
        merge_shards([one, two, changed], tmp_path / "m6")

    # the same content at another path (another machine) is the same run
    same = tmp_path / "elsewhere" / "q.jsonl"
    same.parent.mkdir()
    same.write_text(samples.read_text(), encoding="utf-8")
    (same.parent / "corrupt.wav").write_bytes((samples.parent / "corrupt.wav").read_bytes())
    relocated = evaluate(
        config(server, f"jsonl:path={same},judges=numeric", tmp_path / "reloc", shard="3/3"),
        show_progress=False,
    ).root
    assert merge_shards([one, two, relocated], tmp_path / "m7").root.is_dir()

    unfinished = read_json(two / "manifest.json")
    unfinished["status"] = "interrupted"
    (two / "manifest.json").write_text(json.dumps(unfinished), encoding="utf-8")
    with pytest.raises(EvalkitError, match="not completed") as info:
        merge_shards([one, two, three], tmp_path / "m8")
    assert f"--resume {two}" in str(info.value)

    for name in ("m1", "m2", "m3", "m4", "m5", "m6", "m8"):
        assert not (tmp_path / name).exists(), name  # a refusal leaves no half-merged folder


def test_merge_refuses_a_record_from_another_shard_and_a_used_out_folder(server, tmp_path):
    samples = write_samples(tmp_path / "q.jsonl")
    tasks = f"jsonl:path={samples},judges=numeric"
    one, two = shard_runs(server, tmp_path, tasks, n=2)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine", encoding="utf-8")
    with pytest.raises(EvalkitError, match="not an empty folder"):
        merge_shards([one, two], tmp_path / "busy")
    assert (tmp_path / "busy" / "x").read_text() == "mine"

    stray = read_jsonl(one / "scores.jsonl")[0]
    with open(two / "scores.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(stray) + "\n")
    with pytest.raises(EvalkitError, match=f"sample {stray['sample_index']} .* is not in shard 2/2"):
        merge_shards([one, two], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def merge_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evalkit.cli", "merge", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_shards_then_merge_equal_the_plain_cli_run(server, tmp_path):
    samples = write_samples(tmp_path / "q.jsonl")
    common = [
        "--model", f"openai:{server.model}@{server.base_url}",
        "--tasks", f"jsonl:path={samples},judges=numeric,group_by=category",
        "--no-cache", "--concurrency", "3",
    ]  # fmt: skip
    assert_ok(evalkit_run(*common, "--out", str(tmp_path / "plain")))
    plain = only_run_dir(tmp_path / "plain")
    shards = []
    for k in (1, 2, 3):
        proc = evalkit_run(*common, "--shard", f"{k}/3", "--out", str(tmp_path / f"shard{k}"))
        assert_ok(proc)
        shards.append(only_run_dir(tmp_path / f"shard{k}"))

    refused = merge_cli(str(shards[0]), str(shards[2]), "--out", str(tmp_path / "merged"))
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: shard(s) 2/3 missing"), refused.stderr

    proc = merge_cli(*map(str, shards), "--out", str(tmp_path / "merged"))
    assert proc.returncode == 0, proc.stderr
    assert "merged 3 shards" in proc.stdout
    assert_same_run(tmp_path / "merged", plain)


@pytest.mark.parametrize(
    ("shard", "fragment"),
    [("4/3", "the shard index I must be between 1 and 3"), ("one/3", "expected I/N"), ("2", "expected I/N")],
)
def test_cli_bad_shard_is_one_line_before_any_request(server, tmp_path, shard, fragment):
    samples = write_samples(tmp_path / "q.jsonl")
    proc = evalkit_run(
        "--model", f"openai:{server.model}@{server.base_url}",
        "--tasks", f"jsonl:path={samples},judges=numeric", "--shard", shard, "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--shard" in lines[0] and fragment in lines[0], proc.stderr
    assert server.hits == 0 and not (tmp_path / "o").exists()

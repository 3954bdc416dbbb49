"""A reasoning model end to end against the loopback server: ``evalkit run --model step-audio-r1.5
--base-url URL --tasks mmau-mini`` sends the card's budget with no flags, an empty answer is scored
(not an error), a reply cut by the token limit is marked and counted, the 5% warning names
--max-tokens; command-line flags beat the card; a --reasoning-budget sweep and its comparison."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import assert_ok, evalkit_run, only_run_dir, read_json, read_jsonl
from test_mmau import ROWS, write_layout

from evalkit.testing.openai_server import OpenAIServer, Reply, last_user_text

pytest.importorskip("aiohttp")


def step_audio_reply(body: dict[str, Any]) -> Reply:
    """s-1: right; s-2: empty after its reasoning; s-3: cut by the token limit mid-think."""
    question = last_user_text(body)
    if "source of the sound" in question:
        return Reply("I hear barking.</think>Dog barking<|EOT|>")
    if ROWS[1]["question"] in question:
        return Reply("Let me think.</think>")
    if ROWS[2]["question"] in question:
        return Reply("First I consider every option and then", finish_reason="length")
    return Reply("Hmm.</think>None of these.")


def run(
    *args: str, server: OpenAIServer, tmp_path: Path, name: str
) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / name
    proc = evalkit_run(
        "--base-url", server.base_url, "--out", str(out), "--cache-path", str(tmp_path / f"{name}.db"), *args
    )  # fmt: skip
    assert_ok(proc)
    return proc, out


def test_step_audio_on_mmau_mini_sends_the_cards_budget_and_counts_empty_and_cut_replies(
    tmp_path: Path,
) -> None:
    data = write_layout(tmp_path / "mmau", "mmau-test-mini.json", "test-mini-audios")
    with OpenAIServer(model="Step-Audio-R1.5", answer=step_audio_reply) as server:
        proc, run_dir = run(
            "--model", "step-audio-r1.5", "--tasks", "mmau-mini", "--data", str(data), "--limit", "4",
            server=server, tmp_path=tmp_path, name="runs",
        )  # fmt: skip
        run_dir = only_run_dir(run_dir)
        bodies = [r.body for r in server.requests]
    assert len(bodies) == 4
    for body in bodies:
        assert (body["max_tokens"], body["temperature"], body["repetition_penalty"]) == (32000, 0.7, 1.0)
        assert [p["type"] for p in body["messages"][-1]["content"]] == ["text", "input_audio"]  # text first

    manifest = read_json(run_dir / "manifest.json")
    generation = manifest["generation"]["mmau-mini"]
    assert generation["max_tokens"] == {"value": 32000, "source": "card"}
    assert generation["temperature"] == {"value": 0.7, "source": "card"}
    assert generation["top_p"]["source"] == "default" and generation["stop"]["source"] == "card"

    responses = {r["sample_id"]: r["output"] for r in read_jsonl(run_dir / "responses.jsonl")}
    assert responses["s-1"]["finish_reason"] == "stop" and not responses["s-1"]["truncated"]
    assert responses["s-2"]["text"] == "" and "error" not in responses["s-2"]
    assert responses["m-1"]["truncated"] is True and responses["m-1"]["finish_reason"] == "length"
    assert responses["m-1"]["text"] == "" and responses["m-1"]["reasoning"].startswith("First I consider")

    scores = {s["sample_id"]: s["score"] for s in read_jsonl(run_dir / "scores.jsonl")}
    assert all("error" not in s for s in scores.values())  # empty and cut replies are scored
    assert scores["s-2"]["metrics"]["accuracy"] == 0.0 and scores["m-1"]["metrics"]["accuracy"] == 0.0
    summary = read_json(run_dir / "summary.json")["tasks"]["mmau-mini"]
    assert (summary["n_empty"], summary["n_truncated"]) == (2, 1)  # the cut reply has no answer either
    assert summary["requests"]["truncated_share"] == 0.25
    judge = summary["judges"]["mmau-string-match"]
    assert (judge["n_scored"], judge["n_model_errors"]) == (4, 0)

    [warning] = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert "mmau-mini" in warning and "--max-tokens" in warning and "25%" in warning
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert report.count('class="warn marker-truncated"') == 1
    assert report.count('class="warn marker-empty"') == 2
    assert re.search(r'id="fact-empty-truncated"[^>]*>2 / 1<', report)


def test_command_line_beats_the_card(tmp_path: Path) -> None:
    data = write_layout(tmp_path / "mmau", "mmau-test-mini.json", "test-mini-audios")
    with OpenAIServer(model="Step-Audio-R1.5", answer=step_audio_reply) as server:
        proc, run_dir = run(
            "--model", "step-audio-r1.5", "--tasks", "mmau-mini", "--data", str(data), "--limit", "1",
            "--max-tokens", "2048", "--temperature", "0.2", "--top-p", "0.9",
            server=server, tmp_path=tmp_path, name="runs",
        )  # fmt: skip
        run_dir = only_run_dir(run_dir)
        [body] = [r.body for r in server.requests]
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (2048, 0.2, 0.9)
    generation = read_json(run_dir / "manifest.json")["generation"]["mmau-mini"]
    assert {k: generation[k]["source"] for k in ("max_tokens", "temperature", "top_p")} == dict.fromkeys(
        ("max_tokens", "temperature", "top_p"), "cli"
    )
    assert not [line for line in proc.stderr.splitlines() if line.startswith("warning:")]


def budget_reply(body: dict[str, Any]) -> Reply:
    """A model that thinks as long as it may: right only when the budget reaches 64 tokens."""
    budget = body["max_tokens"]
    thought = " ".join(["step"] * (budget // 2))
    if budget < 64:
        return Reply("", reasoning=thought, finish_reason="length")
    return Reply("The answer is 4.", reasoning=thought)


def test_reasoning_budget_sweep_and_its_comparison(tmp_path: Path) -> None:
    sums = tmp_path / "sums.jsonl"
    rows = [
        {
            "id": f"q{i}",
            "task": "sums",
            "conversation": [{"role": "user", "text": "2+2?"}],
            "reference": {"answer": "4"},
        }
        for i in range(3)
    ]
    sums.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with OpenAIServer(answer=budget_reply, think="inline") as server:
        proc, _ = run(
            "--model", "openai:loopback", "--tasks", f"jsonl:path={sums},judges=numeric",
            "--reasoning-budget", "16", "--reasoning-budget", "64,128",
            server=server, tmp_path=tmp_path, name="sweep",
        )  # fmt: skip
        budgets = sorted({r.body["max_tokens"] for r in server.requests})
    assert budgets == [16, 64, 128]
    run_dirs = sorted((tmp_path / "sweep").iterdir())
    assert len(run_dirs) == 3
    hint = [line for line in proc.stdout.splitlines() if "--compare-budgets" in line]
    assert hint and all(str(d) in hint[0] for d in run_dirs)

    page = tmp_path / "budgets.html"
    cmd = [
        sys.executable,
        "-m",
        "evalkit.cli",
        "report",
        "--compare-budgets",
        *map(str, run_dirs),
        "--out",
        str(page),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines() if line.startswith("jsonl")]
    assert [(int(b), float(v), int(t.split()[0])) for _, b, _, v, _, t in lines] == [
        (16, 0.0, 3),
        (64, 1.0, 0),
        (128, 1.0, 0),
    ]
    reasoning = [float(r) for *_, r, _ in lines]
    assert reasoning[0] < reasoning[1] < reasoning[2]
    assert "Plotly.newPlot('budgets'" in page.read_text(encoding="utf-8")

    bad = subprocess.run(
        [*cmd[:5], str(run_dirs[0]), "--out", str(page)], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "two or more" in bad.stderr


TEXT_JUDGES = [
    "choice", "math-verify", "mmau-choice", "mmau-string-match", "mmsu-extract", "mmsu-official",
    "mmsu-independent", "mmsu-strict", "numeric", "numeric-spoken", "spoken-mqa-official",
]  # fmt: skip


@pytest.mark.parametrize("name", TEXT_JUDGES)
@pytest.mark.parametrize("text", ["", "  \n", None], ids=["empty", "whitespace", "none"])
def test_text_judges_score_an_empty_answer(name: str, text: str | None) -> None:
    """An empty answer reaches every text judge as an answer: scored (wrong), never a crash."""
    from evalkit.judges.base import load_judge
    from evalkit.records import ModelOutput, Sample, Turn

    choices = ["one", "two", "three", "four"]
    reference = {"answer": "four", "choices": choices, "answer_gt": "four", "split": "short_digit"}
    sample = Sample(id="x", task="t", conversation=[Turn(role="user", text="q")], reference=reference)
    score = load_judge(name).score(sample, [ModelOutput(text=text)])
    assert score.error is None and score.metrics.get("accuracy") in (0.0, None)


def test_reasoning_budget_values() -> None:
    from evalkit.cli import budget_configs
    from evalkit.errors import EvalkitError
    from evalkit.runner import RunConfig

    config = RunConfig(model="m", tasks="t")
    assert budget_configs(config, None, None) == [config]
    assert [c.max_tokens for c in budget_configs(config, ["512", "1024, 4096", "512"], None)] == [
        512,
        1024,
        4096,
    ]
    for bad in (["0"], ["1k"], [","]):
        with pytest.raises(EvalkitError, match="positive token counts"):
            budget_configs(config, bad, None)
    with pytest.raises(EvalkitError, match="drop --max-tokens"):
        budget_configs(RunConfig(model="m", tasks="t", max_tokens=8), ["16"], None)

"""`evalkit nightly` end to end through the real CLI (subprocesses) against the loopback
OpenAI-compatible server, on the three demo tasks.

The server plays two models. The *oracle* knows every demo question by the sound of it (the test
maps each clip, encoded exactly as the ``openai:`` adapter sends it, to its transcript and answer)
and answers all of them right; the *broken* model answers every question with a number no item
has. Oracle nights are identical, so a second oracle night must not regress; a broken night after
an oracle baseline is 16 items right -> wrong (8 arithmetic, 8 choice), which the exact McNemar
test calls significant (p = 2 / 2^8 per task).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from evalkit.audio import to_base64_wav
from evalkit.tasks.base import resolve_tasks
from evalkit.tasks.demo import items
from evalkit.testing.openai_server import OpenAIServer, Reply

pytest.importorskip("aiohttp")

EVALKIT = shutil.which("evalkit", path=str(Path(sys.executable).parent)) or "evalkit"
TASKS = ["demo-arithmetic", "demo-choice", "demo-multiturn"]


def evalkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVALKIT, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"},
    )


def answers_by_clip() -> dict[str, str]:
    """sha256 of each demo clip as the adapter sends it (base64 16 kHz WAV) -> the right answer."""
    by_question = {q: a for q, a, _ in items.ARITHMETIC}
    by_question |= {q: letter for q, _, letter, _ in items.CHOICE}
    by_question |= {q: a for _, turns in items.MULTITURN for q, a in turns}
    out: dict[str, str] = {}
    for task in resolve_tasks(",".join(TASKS)):
        for sample in task.samples():
            for turn in sample.conversation:
                if turn.audio is not None:
                    clip = hashlib.sha256(to_base64_wav(turn.audio, sample_rate=16000).encode()).hexdigest()
                    out[clip] = by_question[turn.transcript]
    return out


def last_clip(body: dict[str, Any]) -> str:
    message = [m for m in body["messages"] if m["role"] == "user"][-1]
    [part] = [p for p in message["content"] if p.get("type") == "input_audio"]
    return hashlib.sha256(part["input_audio"]["data"].encode()).hexdigest()


@pytest.fixture(scope="module")
def oracle_answers() -> dict[str, str]:
    answers = answers_by_clip()
    assert len(answers) == 8 + 8 + 12  # every clip distinct, every transcript known
    return answers


@pytest.fixture
def server(oracle_answers):
    with OpenAIServer() as srv:
        srv.answer = lambda body: Reply(f"The answer is {oracle_answers[last_clip(body)]}.")
        yield srv


def write_config(tmp_path: Path, server: OpenAIServer, **extra: Any) -> Path:
    config = {
        "out": "state",
        "models": [{"spec": f"openai:{server.model}@{server.base_url}", "name": "loopback"}],
        "tasks": TASKS,
        "run": {"limit": 8, "concurrency": 4, "seed": 1},
        "compare": {"min_effect": 0.02, "alpha": 0.05},
        **extra,
    }
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def history(state: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (state / "history.jsonl").read_text(encoding="utf-8").splitlines()]


def baseline_run(state: Path) -> str:
    baselines = json.loads((state / "baselines.json").read_text(encoding="utf-8"))
    assert list(baselines) == ["loopback | " + ",".join(TASKS)]
    return next(iter(baselines.values()))["run_dir"]


def assert_exit(proc: subprocess.CompletedProcess[str], code: int) -> None:
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"


def test_nights_baseline_history_and_a_planted_regression(server, tmp_path):
    config = write_config(tmp_path, server, site="site")
    state = tmp_path / "state"

    # no baseline yet and no flag: refused before a single request
    refused = evalkit("nightly", str(config), "--date", "2024-05-01")
    assert_exit(refused, 2)
    assert refused.stderr.count("\n") == 1 and "no baseline for model 'loopback'" in refused.stderr
    assert "--update-baseline" in refused.stderr and server.hits == 0

    # night 1: the oracle, baseline set by the flag; nothing to compare with yet
    night1 = evalkit("nightly", str(config), "--update-baseline", "--date", "2024-05-01")
    assert_exit(night1, 0)
    assert "loopback: no baseline yet" in night1.stdout and "baseline updated" in night1.stdout
    assert server.hits == 28
    [rec1] = history(state)
    assert rec1["date"] == "2024-05-01" and rec1["verdicts"] is None and rec1["baseline_updated"] is True
    assert rec1["summary"]["demo-arithmetic"]["numeric-spoken/accuracy"] == 1.0
    assert rec1["summary"]["demo-choice"]["choice/accuracy"] == 1.0
    assert rec1["summary"]["demo-multiturn"]["numeric-spoken/turn_accuracy"] == 1.0
    assert "git_revision" in rec1 and rec1["run_status"] == "completed"
    assert baseline_run(state) == rec1["run_dir"]
    assert (tmp_path / "site" / "index.html").is_file()

    # night 2: the same model again: compared, no regression, baseline kept
    night2 = evalkit("nightly", str(config), "--date", "2024-05-02")
    assert_exit(night2, 0)
    assert server.hits == 56  # the response cache is off for nightly runs: every request sent again
    rec2 = history(state)[1]
    assert rec2["baseline_run_dir"] == rec1["run_dir"] and rec2["run_dir"] != rec1["run_dir"]
    assert rec2["regressions"] == [] and rec2["exit_code"] == 0 and rec2["baseline_updated"] is False
    assert set(rec2["verdicts"]["demo-choice"].values()) == {"no significant change"}
    assert baseline_run(state) == rec1["run_dir"]
    md = (state / "nights" / "2024-05-02" / "loopback.md").read_text(encoding="utf-8")
    assert "0 worse, 0 better" in md and "## demo-arithmetic" in md
    assert (
        (state / "nights" / "2024-05-02" / "loopback.html")
        .read_text(encoding="utf-8")
        .startswith("<!doctype")
    )
    assert rec2["comparison"] == "nights/2024-05-02/loopback.md"
    # the site is rebuilt from every night in the history, so the model's history plot grows
    data = json.loads((tmp_path / "site" / "data" / "leaderboard.json").read_text(encoding="utf-8"))
    [model_history] = data["history"].values()
    assert len(model_history) == len(TASKS)
    for line in model_history:  # both nights, oldest first (not only tonight's run)
        assert len(line["points"]) == 2
        assert line["points"][0]["started"] < line["points"][1]["started"]

    # night 3: the server breaks: every answer wrong -> significant regression, exit 1
    server.answer = lambda body: Reply("The answer is 99999.")
    night3 = evalkit("nightly", str(config), "--date", "2024-05-03")
    assert_exit(night3, 1)
    assert "REGRESSED" in night3.stdout
    rec3 = history(state)[2]
    assert rec3["exit_code"] == 1
    assert "demo-arithmetic: numeric-spoken/accuracy" in rec3["regressions"]
    assert "demo-choice: choice/accuracy" in rec3["regressions"]
    assert rec3["verdicts"]["demo-choice"]["choice/accuracy"] == "worse"
    assert "WORSE" in (state / "nights" / "2024-05-03" / "loopback.md").read_text(encoding="utf-8")
    assert baseline_run(state) == rec1["run_dir"]  # a bad night never moves the baseline by itself

    # night 4: accepting the new behaviour: still compared with (and failing against) the old
    # baseline, then the baseline moves; night 5, the same broken model, is then no regression
    night4 = evalkit("nightly", str(config), "--update-baseline", "--date", "2024-05-04")
    assert_exit(night4, 1)
    rec4 = history(state)[3]
    assert baseline_run(state) == rec4["run_dir"]
    night5 = evalkit("nightly", str(config), "--date", "2024-05-05")
    assert_exit(night5, 0)
    assert len(history(state)) == 5 and history(state)[4]["baseline_run_dir"] == rec4["run_dir"]

    # night 6: every request refused (400): no metric can regress on zero pairs, the gates fail it
    server.fail_matching(lambda body: True, status=400)
    night6 = evalkit("nightly", str(config), "--date", "2024-05-06")
    assert_exit(night6, 1)
    rec6 = history(state)[5]
    assert rec6["exit_code"] == 1 and rec6["regressions"] == []
    assert any("demo-choice" in g and "--min-coverage" in g for g in rec6["gate_failures"])
    assert "REGRESSED" in night6.stdout and "gate failed" in night6.stdout


def test_same_date_twice_gets_its_own_night_folder(server, tmp_path):
    config = write_config(tmp_path, server, tasks=["demo-arithmetic"], run={"limit": 2})
    assert_exit(evalkit("nightly", str(config), "--update-baseline", "--date", "2024-06-01"), 0)
    assert_exit(evalkit("nightly", str(config), "--date", "2024-06-01"), 0)
    nights = sorted(p.name for p in (tmp_path / "state" / "nights").iterdir())
    assert nights == ["2024-06-01", "2024-06-01-2"]
    assert (tmp_path / "state" / "nights" / "2024-06-01-2" / "loopback.md").is_file()
    assert [r["date"] for r in history(tmp_path / "state")] == ["2024-06-01", "2024-06-01"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("models: [m]\ntasks: demo\nsuite: x\n", "unknown key 'suite'"),
        ("models: [m]\ntasks: demo\nrun: {limt: 3}\n", "unknown key 'run.limt'"),
        ("models: [{spec: m, url: x}]\ntasks: demo\n", "unknown key 'models.0.url'"),
        ("tasks: demo\n", "missing key 'models'"),
        ("models: [m]\ntasks: demo\nrun: {limit: 0}\n", "run.limit"),
        ("models: [m]\ntasks: demo\ncompare: {directions: {wer: up}}\n", "compare.directions.wer"),
        ("models: [m, m]\ntasks: demo\n", "two models are named 'm'"),
        ("models: [m\n", "not valid YAML"),
        ("- m\n", "is a mapping"),
    ],
)
def test_bad_configs_are_one_line_errors_naming_file_and_key(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    proc = evalkit("nightly", str(path))
    assert_exit(proc, 2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), proc.stderr
    assert fragment in lines[0] and "Traceback" not in proc.stderr


def test_missing_config_and_bad_date(tmp_path):
    missing = evalkit("nightly", str(tmp_path / "none.yaml"))
    assert_exit(missing, 2)
    assert "cannot read the nightly config" in missing.stderr
    config = tmp_path / "c.yaml"
    config.write_text("models: [m]\ntasks: demo\n", encoding="utf-8")
    bad_date = evalkit("nightly", str(config), "--update-baseline", "--date", "yesterday")
    assert_exit(bad_date, 2)
    assert "--date 'yesterday'" in bad_date.stderr


def test_example_config_is_valid():
    from evalkit.nightly import load_config

    example = Path(__file__).resolve().parent.parent / "examples" / "nightly.yaml"
    config = load_config(example)
    assert config.models and config.task_list

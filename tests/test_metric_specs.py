"""Judges declare every metric they write (``Judge.metrics``, ``MetricSpec``), and the readers
(compare, summary, report, leaderboard) take directions and units from those declarations."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import pytest

from evalkit.judges.base import Judge, JudgeOptions, MetricSpec
from evalkit.models.tts import espeak
from evalkit.records import AudioRef, ModelOutput, Sample, Turn
from evalkit.registry import judges as judge_registry

#: judges that write no metric at all (a withheld-answer benchmark records predictions only)
NO_METRICS = {"mmau-submission"}


def judge_classes() -> dict[str, type[Judge]]:
    return {name: judge_registry.get(name) for name in judge_registry.names()}


def test_every_builtin_judge_declares_its_metrics_once_with_a_direction():
    for name, cls in judge_classes().items():
        names = [spec.name for spec in cls.metrics]
        assert len(names) == len(set(names)), f"{name}: a metric declared twice"
        assert names or name in NO_METRICS, f"judge {name!r} declares no metrics"
        assert isinstance(cls.scorer_version, str) and cls.scorer_version, name
        assert issubclass(cls.Options, JudgeOptions), name
        for spec in cls.metrics:
            assert spec.direction in ("higher", "lower", "descriptive")
            lo, hi = spec.range
            assert lo is None or hi is None or lo < hi, f"{name}/{spec.name}: empty range"
            assert spec.description, f"{name}/{spec.name}: no description"


def _metric_literals(tree: ast.AST) -> set[str]:
    """Every metric name a module writes as a literal: ``metrics={"x": ...}``, ``metrics["x"] = ...``,
    ``{"x": ...}`` returned as the metrics of a helper, ``dict.fromkeys(("x", ...))``."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "metrics":
            found |= _keys_of(node.value)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id == "metrics":
                found |= _constant_strings(node.slice)
        elif isinstance(node, ast.AnnAssign | ast.Assign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "metrics" for t in targets) and node.value is not None:
                found |= _keys_of(node.value)
    return found


def _keys_of(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Dict):
        return {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "fromkeys" and node.args:
        return _constant_strings(node.args[0])
    return set()


def _constant_strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_every_metric_name_written_in_a_judge_module_is_declared_by_one_of_its_judges():
    """The static half: catches the judges that need model weights to run (asr, naturalness,
    emotion-ser) and the ones that need a judge model (rubric, emotion-llm)."""
    by_module: dict[str, set[str]] = {}
    for cls in judge_classes().values():
        for klass in cls.__mro__:
            if issubclass(klass, Judge) and klass.__module__.startswith("evalkit.judges."):
                by_module.setdefault(klass.__module__, set()).update(s.name for s in cls.metrics)
    checked = 0
    for module, declared in by_module.items():
        tree = ast.parse(inspect.getsource(sys.modules[module]))
        written = _metric_literals(tree)
        assert not written - declared, f"{module} writes undeclared metrics {sorted(written - declared)}"
        checked += bool(written)
    assert checked >= 8  # the walker sees the judge modules' metric literals at all


def test_the_static_walker_finds_an_undeclared_metric():
    source = (
        'def f():\n    metrics = {"accuracy": 1.0}\n    metrics["sneaky"] = 2\n'
        '    return Score(metrics={"x": 1})\n'
    )
    assert _metric_literals(ast.parse(source)) == {"accuracy", "sneaky", "x"}


def text_sample(reference: dict, turns: int = 1) -> Sample:
    return Sample(id="s", task="t", conversation=[Turn(role="user", text="q")] * turns, reference=reference)


MMSU_REF = {"answer": "cat", "choices": ["cat", "dog", "cow", "duck"]}

#: judge -> (sample, outputs) on which it writes every metric it can without model weights
TEXT_CASES = {
    "choice": (text_sample({"answer": "B", "choices": ["a", "b"]}, 2), ["B", "The answer is B"]),
    "numeric": (text_sample({"answer": "3"}, 2), ["3", "4"]),
    "numeric-spoken": (text_sample({"answer": "3"}), ["three"]),
    "math-verify": (text_sample({"answer": "3"}), ["$3$"]),
    "spoken-mqa-official": (text_sample({"answer": "42", "split": "short_digit"}), ["The answer is 42"]),
    "mmau-string-match": (text_sample({"answer": "cat", "choices": ["cat", "dog"]}), ["cat"]),
    "mmau-choice": (text_sample({"answer": "cat", "choices": ["cat", "dog"]}), ["(A) cat"]),
    "mmau-submission": (text_sample({}), ["cat"]),
    "mmsu-official": (text_sample(MMSU_REF), ["A"]),
    "mmsu-independent": (text_sample(MMSU_REF), [""]),
    "mmsu-strict": (text_sample(MMSU_REF), ["B"]),
    "mmsu-extract": (text_sample({**MMSU_REF, "answer": "A"}), ["The answer is A"]),
}


@pytest.mark.parametrize("name", sorted(TEXT_CASES))
def test_text_judges_write_only_declared_metrics(name: str):
    sample, texts = TEXT_CASES[name]
    judge = judge_registry.get(name)()
    score = judge.score(sample, [ModelOutput(text=t) for t in texts])
    assert score.error is None, score.error
    assert judge.undeclared(score) == []
    assert set(score.metrics) <= {s.name for s in judge.metrics}


def test_an_undeclared_metric_is_reported():
    class Sloppy(Judge):
        name = "sloppy"
        metrics = (MetricSpec(name="a", direction="higher", description="declared"),)

        def score(self, sample, outputs):
            from evalkit.records import Score

            return Score(judge=self.name, metrics={"a": 1.0, "b": 2.0})

    score = Sloppy().score(text_sample({}), [])
    assert Sloppy.undeclared(score) == ["b"]


@pytest.fixture(scope="module")
def spoken() -> tuple[Sample, list[ModelOutput]]:
    sentences = ["The weather is nice today.", "I am very glad to hear that.", "See you tomorrow then."]
    turns = [Turn(role="user", text=s, audio=AudioRef(data=espeak(s, wpm=160))) for s in sentences]
    sample = Sample(id="c", task="t", conversation=turns, reference={"emotions": ["neutral", "happy", "sad"]})
    outputs = [ModelOutput(text=s, audio=AudioRef(data=espeak(s, wpm=150))) for s in sentences]
    return sample, outputs


@pytest.mark.parametrize("name", ["prosody", "emotion", "voice"])
def test_speech_judges_write_only_declared_metrics(name: str, spoken):
    judge = judge_registry.get(name)()
    score = judge.score(*spoken)
    assert score.error is None, score.error
    assert score.metrics, "the judge wrote no metric on three spoken turns"
    assert judge.undeclared(score) == []


def test_describe_records_scorer_version_options_and_declarations():
    judge = judge_registry.get("prosody")()
    info = judge.describe()
    assert info["scorer_version"] == judge.scorer_version
    assert info["options"] == {}
    assert [m["name"] for m in info["metrics"]] == [s.name for s in judge.metrics]
    assert MetricSpec(**info["metrics"][0]) == judge.metrics[0]


def test_metric_spec_refuses_unknown_fields_and_directions():
    with pytest.raises(ValueError):
        MetricSpec(name="x", direction="up", description="d")
    with pytest.raises(ValueError):
        MetricSpec(name="x", direction="higher", description="d", better="up")


# -- the readers: a real run, compare, leaderboard ---------------------------------------------------
@pytest.fixture(scope="module")
def server():
    from evalkit.testing.openai_server import OpenAIServer

    with OpenAIServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, server) -> Path:
    """A finished ``demo`` run against the loopback server (alive for the module: resumes)."""
    from cli_helpers import assert_ok, evalkit_run, only_run_dir

    out = tmp_path_factory.mktemp("specs-run")
    spec = f"openai:{server.model}@{server.base_url}"
    assert_ok(evalkit_run("--model", spec, "--tasks", "demo", "--out", str(out)))
    return only_run_dir(out)


def test_a_run_records_each_judge_and_summary_carries_the_declarations(demo_run: Path):
    from cli_helpers import read_json

    manifest, summary = read_json(demo_run / "manifest.json"), read_json(demo_run / "summary.json")
    assert manifest["judges"], "no judges recorded"
    for task in manifest["tasks"]:
        for judge in task["judges"]:
            record = manifest["judges"][task["name"]][judge]
            cls = judge_registry.get(judge)
            assert record["scorer_version"] == cls.scorer_version
            assert record["options"] == cls().options.model_dump(mode="json")
            declared = summary["tasks"][task["name"]]["judges"][judge]["metrics_declared"]
            assert declared == {s.name: s.model_dump(mode="json", exclude={"name"}) for s in cls.metrics}
            written = set(summary["tasks"][task["name"]]["judges"][judge]["metrics"])
            assert written and written <= set(declared)


def _copy_with_judge(run: Path, dest: Path, task: str, judge: str, **changes) -> Path:
    """``run`` copied, with ``changes`` applied to one judge's manifest record."""
    import shutil

    from evalkit.store import RunStore

    shutil.copytree(run, dest)
    store = RunStore(dest)
    judges = store.read_manifest()["judges"]
    judges[task][judge].update(changes)
    store.update_manifest(judges=judges)
    return dest


def test_compare_refuses_a_different_scorer_version_or_judge_option(demo_run: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from evalkit.cli import app
    from evalkit.compare import compare_runs
    from evalkit.store import RunStore

    manifest = RunStore(demo_run).read_manifest()
    task = manifest["tasks"][0]["name"]
    judge = manifest["tasks"][0]["judges"][0]
    assert compare_runs(demo_run, demo_run).exit_code == 0
    bumped = _copy_with_judge(demo_run, tmp_path / "bumped", task, judge, scorer_version="2")
    result = CliRunner().invoke(app, ["compare", str(demo_run), str(bumped)])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert f"judge {judge!r} has a different scorer version (1 vs 2)" in line
    options = _copy_with_judge(demo_run, tmp_path / "options", task, judge, options={"threshold": 0.5})
    result = CliRunner().invoke(app, ["compare", str(demo_run), str(options)])
    assert result.exit_code == 2 and "different options (threshold: missing vs 0.5)" in result.stderr


def test_a_resume_with_different_judge_settings_is_refused(demo_run: Path, tmp_path: Path):
    from cli_helpers import evalkit_run

    from evalkit.store import RunStore

    manifest = RunStore(demo_run).read_manifest()
    task, judge = manifest["tasks"][0]["name"], manifest["tasks"][0]["judges"][0]
    older = _copy_with_judge(demo_run, tmp_path / "older", task, judge, scorer_version="0")
    proc = evalkit_run("--resume", str(older))
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert f"judge {judge!r} of task {task!r} has a different scorer version (0 vs 1)" in line
    same = _copy_with_judge(demo_run, tmp_path / "same", task, judge)
    proc = evalkit_run("--resume", str(same))
    assert proc.returncode == 0, proc.stderr


def test_compare_takes_directions_from_the_recorded_declarations(demo_run: Path, tmp_path: Path):
    """A judge not installed here (a plug-in) is read by what the run recorded; ``--direction``
    still overrides a declaration."""
    from evalkit.compare import CompareOptions, compare_runs
    from evalkit.store import RunStore

    manifest = RunStore(demo_run).read_manifest()
    task, judge = manifest["tasks"][0]["name"], manifest["tasks"][0]["judges"][0]
    flipped = [{**m, "direction": "lower"} for m in manifest["judges"][task][judge]["metrics"]]
    base = _copy_with_judge(demo_run, tmp_path / "base", task, judge, metrics=flipped)
    cand = _copy_with_judge(demo_run, tmp_path / "cand", task, judge, metrics=flipped)
    cmp = compare_runs(base, cand)
    assert {m.direction for m in cmp.metrics if m.task == task and m.judge == judge} == {"lower"}
    override = compare_runs(base, cand, CompareOptions(directions={f"{judge}/accuracy": "higher"}))
    by_metric = {m.metric: m.direction for m in override.metrics if m.task == task and m.judge == judge}
    assert by_metric["accuracy"] == "higher"


def test_compare_calls_a_declared_descriptive_metric_changed_never_worse(tmp_path: Path):
    import numpy as np
    from test_compare import write_run

    from evalkit.compare import compare_runs

    rng = np.random.default_rng(1)
    base = [{"pitch_sd_st": float(2 + n)} for n in rng.normal(0, 0.1, 100)]
    cand = [{"pitch_sd_st": float(3 + n)} for n in rng.normal(0, 0.1, 100)]
    b = write_run(tmp_path / "b", "speech", "prosody", base, finish=False)
    c = write_run(tmp_path / "c", "speech", "prosody", cand, finish=False)
    [m] = compare_runs(b, c).metrics
    assert m.direction == "descriptive" and m.verdict == "changed" and m.significant


def _entry(model: str, value: float | None, direction: str | None):
    from datetime import datetime

    from evalkit.leaderboard.runs import RunEntry, TaskResult, VersionKey

    key = VersionKey(task="speech", dataset_id="d", revision="r", fingerprint="f", judge="asr", metric="wer")
    result = TaskResult(
        task="speech",
        key=key,
        dataset={},
        value=value,
        ci_low=None,
        ci_high=None,
        n=10,
        n_scored=10,
        coverage=1.0,
        n_model_errors=0,
        n_judge_errors=0,
        n_parse_failures=0,
        n_request_errors=0,
        direction=direction,
    )
    started = datetime(2026, 1, 1)
    return RunEntry(
        path=Path(model),
        run_id=model,
        model=model,
        started=started,
        started_text="",
        status="completed",
        manifest={},
        summary={},
        results=[result],
    )


def test_leaderboard_sorts_a_lower_is_better_metric_ascending_and_keeps_it_out_of_the_overall():
    from evalkit.leaderboard.tables import overall, version_groups

    groups = version_groups(
        [_entry("a", 0.3, "lower"), _entry("b", 0.1, "lower"), _entry("c", None, "lower")]
    )
    [group] = groups["speech"]
    assert group["direction"] == "lower"
    assert [r["model"] for r in group["rows"]] == ["b", "a", "c"]
    assert overall(groups)["excluded_tasks"] == ["speech"]
    higher = version_groups([_entry("a", 0.3, "higher"), _entry("b", 0.1, "higher")])
    assert [r["model"] for r in higher["speech"][0]["rows"]] == ["a", "b"]


def test_leaderboard_reads_the_direction_of_an_older_run_from_the_registered_judge():
    from evalkit.leaderboard.runs import task_result

    summary = {"judges": {"asr": {"metrics": {"wer": {"value": 0.2}}, "n": 1, "n_scored": 1}}}
    result = task_result("speech", summary, {"judges": ["asr"], "primary_metric": "wer"})
    assert result is not None and result.direction == "lower"

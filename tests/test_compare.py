"""`evalkit compare` on run directories written through the run store and ``finalize`` (the same
API the runner uses), with planted effects of known size and realistic noise.

The noise model of the binary cases: every item has a latent "the model can do this" bit drawn
once (true accuracy 0.7); each run reads it through its own independent noise, flipping each item
with probability 0.1 (sampling temperature, server nondeterminism). Two runs of one model differ by
that noise alone; a planted drop additionally turns a share of right items wrong in the candidate.
All randomness is seeded, so every test is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.compare import CompareOptions, compare_runs, md_escape, to_html, to_markdown, verdict
from evalkit.errors import EvalkitError
from evalkit.finalize import finalize
from evalkit.records import ErrorInfo, Score, ScoreRecord
from evalkit.store import RunStore

DATASET = {"id": "synthetic/items", "revision": "v1", "split": "test", "fingerprint": "f" * 64}


def write_run(
    root: Path,
    task: str,
    judge: str,
    rows: list[dict[str, float | None] | str],
    dataset: dict[str, Any] | None = None,
    model: str = "openai:m@http://x",
    finish: bool = True,
) -> Path:
    """A finished run directory: manifest, scores.jsonl (one row per item: metrics, or the error
    kind ``"model_error"`` / ``"judge_error"``) and summary.json + report.html from ``finalize``
    (``finish=False`` skips the last step, which compare does not read, for the many-pairs test)."""
    store = RunStore(root)
    root.mkdir(parents=True)
    store.write_manifest(
        {
            "run_id": root.name,
            "model": {"spec": model},
            "tasks": [
                {
                    "name": task,
                    "class": "evalkit.tasks.base.Task",
                    "judges": [judge],
                    "group_by": [],
                    "primary_metric": "accuracy",
                    "dataset": dataset or DATASET,
                }
            ],
            "seed": 0,
            "status": "completed",
        }
    )
    store.open_streams()
    for index, row in enumerate(rows):
        if isinstance(row, str):
            score = Score(judge=judge, error=ErrorInfo(kind=row, message="failed"))
        else:
            score = Score(judge=judge, metrics=row)
        store.append_score(ScoreRecord(task=task, sample_id=f"s{index}", sample_index=index, score=score))
    store.close_streams()
    if finish:
        finalize(store)
    return root


def noisy_binary(latent: np.ndarray, rng: np.random.Generator, flip: float = 0.1) -> np.ndarray:
    """One run's correctness: the latent ability seen through independent per-item noise."""
    return np.where(rng.random(latent.size) < flip, 1 - latent, latent)


def accuracy_rows(values: np.ndarray) -> list[dict[str, float | None] | str]:
    return [{"accuracy": float(v)} for v in values]


def invoke(*args: str):
    return CliRunner().invoke(app, ["compare", *args])


def verdicts(cmp) -> dict[str, str]:
    return {f"{m.judge}/{m.metric}": m.verdict for m in cmp.metrics}


# -- binary metrics ---------------------------------------------------------------------------------
def test_planted_drop_exits_1_through_the_cli(tmp_path):
    rng = np.random.default_rng(7)
    latent = (rng.random(400) < 0.7).astype(float)
    base = noisy_binary(latent, rng)
    cand = noisy_binary(latent, rng)
    # the regression: 15% of the items the candidate got right are now wrong (about 9 points)
    cand = np.where((cand == 1) & (rng.random(400) < 0.15), 0.0, cand)
    b = write_run(tmp_path / "base", "qa", "choice", accuracy_rows(base))
    c = write_run(tmp_path / "cand", "qa", "choice", accuracy_rows(cand))

    result = invoke(str(b), str(c), "--md", str(tmp_path / "out.md"), "--html", str(tmp_path / "out.html"))
    assert result.exit_code == 1, result.output
    assert "| choice / accuracy | ↑ |" in result.stdout and "WORSE" in result.stdout
    assert (tmp_path / "out.md").read_text(encoding="utf-8") == result.stdout
    assert "WORSE" in (tmp_path / "out.html").read_text(encoding="utf-8")

    [m] = compare_runs(b, c).metrics
    assert m.binary and m.verdict == "worse"
    assert m.diff == pytest.approx(cand.mean() - base.mean()) and m.diff < -0.05
    assert m.ci_high < 0 and m.p_value < 0.001
    lost, gained = m.discordant
    assert lost == int(((base == 1) & (cand == 0)).sum()) and gained == int(((base == 0) & (cand == 1)).sum())
    assert m.counts.shared == 400 and m.counts.errored == m.counts.only_base == m.counts.only_cand == 0


def test_two_runs_of_one_model_differing_by_noise_exit_0(tmp_path):
    rng = np.random.default_rng(11)
    latent = (rng.random(400) < 0.7).astype(float)
    b = write_run(tmp_path / "base", "qa", "choice", accuracy_rows(noisy_binary(latent, rng)))
    c = write_run(tmp_path / "cand", "qa", "choice", accuracy_rows(noisy_binary(latent, rng)))
    result = invoke(str(b), str(c))
    assert result.exit_code == 0, result.output
    assert "no significant change" in result.stdout and "0 worse, 0 better" in result.stdout


def test_false_regression_rate_over_many_noise_only_pairs_is_small(tmp_path):
    """Not one lucky seed: over 60 independent same-model pairs, "worse" (one tail of a 5% test
    that also needs a 2-point drop) must be rare; expected about 1."""
    worse = 0
    for k in range(60):
        rng = np.random.default_rng(1000 + k)
        latent = (rng.random(400) < 0.7).astype(float)
        b_rows, c_rows = accuracy_rows(noisy_binary(latent, rng)), accuracy_rows(noisy_binary(latent, rng))
        b = write_run(tmp_path / f"b{k}", "qa", "choice", b_rows, finish=False)
        c = write_run(tmp_path / f"c{k}", "qa", "choice", c_rows, finish=False)
        worse += compare_runs(b, c, CompareOptions(resamples=200)).exit_code
    assert worse <= 4


def test_compare_is_deterministic(tmp_path):
    rng = np.random.default_rng(3)
    b = write_run(tmp_path / "base", "qa", "choice", accuracy_rows((rng.random(50) < 0.6).astype(float)))
    c = write_run(tmp_path / "cand", "qa", "choice", accuracy_rows((rng.random(50) < 0.6).astype(float)))
    assert to_markdown(compare_runs(b, c)) == to_markdown(compare_runs(b, c))


def test_errored_only_and_not_applicable_items_are_counted_not_paired(tmp_path):
    base_rows: list[dict[str, float | None] | str] = [{"accuracy": 1.0} for _ in range(30)]
    cand_rows: list[dict[str, float | None] | str] = [{"accuracy": 0.0} for _ in range(25)]  # 5 never run
    base_rows[0] = "model_error"
    cand_rows[1] = "judge_error"
    cand_rows[2] = "model_error"
    base_rows[2] = "model_error"
    cand_rows[3] = {"accuracy": None}
    b = write_run(tmp_path / "base", "qa", "choice", base_rows)
    c = write_run(tmp_path / "cand", "qa", "choice", cand_rows)
    [m] = compare_runs(b, c).metrics
    assert m.counts.only_base == 5 and m.counts.only_cand == 0
    assert m.counts.errored == 3 and m.counts.errored_base == 2 and m.counts.errored_cand == 2
    assert m.counts.not_applicable == 1
    assert m.counts.shared == 25 - 3 - 1
    assert m.base_mean == 1.0 and m.cand_mean == 0.0  # errors were not folded in as zeros
    assert m.verdict == "worse"
    row = next(line for line in to_markdown(compare_runs(b, c)).splitlines() if "choice / accuracy" in line)
    assert "| 21 | 5 | 0 | 3 (2/2) |" in row


# -- continuous metrics and direction ----------------------------------------------------------------
def wer_rows(
    rng: np.random.Generator, latent: np.ndarray, shift: float
) -> list[dict[str, float | None] | str]:
    noise = rng.normal(0, 0.03, latent.size)
    return [
        {"wer": float(max(0.0, w)), "pitch_sd_st": float(2 + shift * 20 + n)}
        for w, n in zip(latent + noise + shift, noise, strict=True)
    ]


def test_continuous_lower_is_better_metric_regresses_when_it_rises(tmp_path):
    rng = np.random.default_rng(5)
    latent = rng.uniform(0.05, 0.4, 200)
    b = write_run(tmp_path / "base", "speech", "asr", wer_rows(rng, latent, 0.0))
    c = write_run(tmp_path / "cand", "speech", "asr", wer_rows(rng, latent, 0.05))
    cmp = compare_runs(b, c)
    by_name = {m.metric: m for m in cmp.metrics}
    wer = by_name["wer"]
    assert not wer.binary and wer.p_value is None
    assert wer.diff == pytest.approx(0.05, abs=0.01) and wer.ci_low > 0
    assert wer.verdict == "worse" and cmp.exit_code == 1
    # a metric the asr judge does not declare moved a lot: its direction is unknown, so "changed",
    # never a regression (a declared descriptive one: tests/test_metric_specs.py)
    assert by_name["pitch_sd_st"].verdict == "changed" and by_name["pitch_sd_st"].direction is None

    improved = compare_runs(c, b)  # the same pair the other way round: WER fell
    assert {m.metric: m.verdict for m in improved.metrics}["wer"] == "better" and improved.exit_code == 0


def test_continuous_noise_only_is_no_change(tmp_path):
    rng = np.random.default_rng(6)
    latent = rng.uniform(0.05, 0.4, 200)
    b = write_run(tmp_path / "base", "speech", "asr", wer_rows(rng, latent, 0.0))
    c = write_run(tmp_path / "cand", "speech", "asr", wer_rows(rng, latent, 0.0))
    assert verdicts(compare_runs(b, c)) == {
        "asr/wer": "no significant change",
        "asr/pitch_sd_st": "no significant change",
    }


def test_unknown_metric_direction_is_never_guessed_and_can_be_declared(tmp_path):
    rows_b = [{"plugin_score": 0.8} for _ in range(50)]
    rows_c = [{"plugin_score": 0.5 + 0.01 * (i % 3)} for i in range(50)]
    b = write_run(tmp_path / "base", "qa", "plug", rows_b)
    c = write_run(tmp_path / "cand", "qa", "plug", rows_c)
    result = invoke(str(b), str(c))
    assert result.exit_code == 0, result.output
    assert "changed" in result.stdout and "direction unknown" in result.stdout
    assert "plug/plugin\\_score" not in result.stdout  # underscores stay readable
    declared = invoke(str(b), str(c), "--direction", "plug/plugin_score=higher")
    assert declared.exit_code == 1 and "WORSE" in declared.stdout
    bad = invoke(str(b), str(c), "--direction", "plugin_score=up")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --direction 'plugin_score=up'")


@pytest.mark.parametrize(
    ("diff", "significant", "direction", "expected"),
    [
        (-0.02, True, "higher", "worse"),  # exactly min effect counts
        (-0.019, True, "higher", "no significant change"),  # significant but too small
        (-0.5, False, "higher", "no significant change"),  # large but noise
        (0.03, True, "lower", "worse"),
        (-0.03, True, "lower", "better"),
        (0.03, True, "descriptive", "changed"),
        (0.03, True, None, "changed"),
    ],
)
def test_verdict_rule(diff, significant, direction, expected):
    assert verdict(diff, significant, direction, 0.02)[0] == expected


def test_min_effect_and_alpha_options_change_the_verdict(tmp_path):
    rng = np.random.default_rng(7)
    latent = (rng.random(400) < 0.7).astype(float)
    base = noisy_binary(latent, rng)
    cand = np.where((base == 1) & (rng.random(400) < 0.15), 0.0, base)
    b = write_run(tmp_path / "base", "qa", "choice", accuracy_rows(base))
    c = write_run(tmp_path / "cand", "qa", "choice", accuracy_rows(cand))
    assert invoke(str(b), str(c)).exit_code == 1
    assert invoke(str(b), str(c), "--min-effect", "0.5").exit_code == 0
    assert invoke(str(b), str(c), "--alpha", "1e-6", "--min-effect", "0").exit_code == 1  # p is tiny


# -- refusals -----------------------------------------------------------------------------------------
def test_runs_of_different_datasets_are_refused_with_one_line(tmp_path):
    rows = accuracy_rows(np.ones(20))
    b = write_run(tmp_path / "base", "qa", "choice", rows)
    c = write_run(tmp_path / "cand", "qa", "choice", rows, dataset={**DATASET, "fingerprint": "0" * 64})
    result = invoke(str(b), str(c))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot compare ")
    for fragment in (str(b), str(c), "task 'qa'", "fingerprint", "re-run the baseline"):
        assert fragment in lines[0]
    assert result.stdout == ""

    other_revision = write_run(tmp_path / "rev", "qa", "choice", rows, dataset={**DATASET, "revision": "v2"})
    with pytest.raises(EvalkitError, match="different dataset revision \\(v1 vs v2\\)"):
        compare_runs(b, other_revision)


def test_missing_run_directory_or_manifest_is_a_one_line_error(tmp_path):
    b = write_run(tmp_path / "base", "qa", "choice", accuracy_rows(np.ones(5)))
    missing = invoke(str(b), str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "nope" in missing.stderr and "no manifest.json" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = invoke(str(tmp_path / "empty"), str(b))
    assert empty.exit_code == 2 and len(empty.stderr.strip().splitlines()) == 1


def test_runs_sharing_no_task_are_refused(tmp_path):
    b = write_run(tmp_path / "base", "qa", "choice", accuracy_rows(np.ones(5)))
    c = write_run(tmp_path / "cand", "other", "choice", accuracy_rows(np.ones(5)))
    result = invoke(str(b), str(c))
    assert result.exit_code == 2 and "share no task" in result.stderr


# -- rendering ------------------------------------------------------------------------------------------
NASTY_TASK = "qa|x<script>alert(1)</script>"
NASTY_MODEL = "openai:<b>bold</b>@http://x"


def test_markdown_and_html_escape_names(tmp_path):
    rows = accuracy_rows(np.ones(30))
    b = write_run(tmp_path / "base", NASTY_TASK, "choice", rows, model=NASTY_MODEL)
    c = write_run(tmp_path / "cand", NASTY_TASK, "choice", accuracy_rows(np.zeros(30)), model=NASTY_MODEL)
    cmp = compare_runs(b, c)
    md = to_markdown(cmp)
    assert "## qa\\|x&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "<script>" not in md and "<b>" not in md and "(openai:&lt;b&gt;bold&lt;/b&gt;@http://x)" in md
    table = [line for line in md.splitlines() if line.startswith("| choice")]
    assert len(table) == 1 and table[0].count(" | ") == 12  # 13 cells: nothing broke the row

    html = to_html(cmp)
    assert "<script>" not in html and "<b>bold" not in html
    assert "<h2>qa|x&lt;script&gt;alert(1)&lt;/script&gt;</h2>" in html
    assert '<tr class="worse">' in html and "<td>WORSE</td>" in html
    assert "exact McNemar p under 0.05" in html


def test_md_escape():
    assert md_escape("a|b") == "a\\|b"
    assert md_escape("[x](javascript:1)") == "[x\\](javascript:1)"
    assert md_escape("[0.1, 0.2]") == "[0.1, 0.2]"
    assert md_escape("line\nbreak") == "line break"
    assert md_escape("turn_accuracy") == "turn_accuracy"


def test_comparison_files_are_written_where_asked(tmp_path):
    b = write_run(tmp_path / "base", "qa", "choice", accuracy_rows(np.ones(10)))
    c = write_run(tmp_path / "cand", "qa", "choice", accuracy_rows(np.ones(10)))
    result = invoke(
        str(b), str(c), "--md", str(tmp_path / "d" / "c.md"), "--html", str(tmp_path / "d" / "c.html")
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "c.md").read_text(encoding="utf-8").startswith("# evalkit compare")
    assert (tmp_path / "d" / "c.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    summary = json.loads((b / "summary.json").read_text(encoding="utf-8"))
    assert summary["tasks"]["qa"]["judges"]["choice"]["metrics"]["accuracy"]["value"] == 1.0


# -- gates: coverage, errors, shared items ------------------------------------------------------------
def gate_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("gate failed:")]


@pytest.mark.parametrize(
    ("label", "cand_rows", "flags"),
    [
        (
            "100% model errors",
            ["model_error"] * 200,
            {"--min-coverage", "--max-error-increase", "--min-shared"},
        ),
        (
            "60% model errors",
            ["model_error"] * 120 + [{"accuracy": 1.0}] * 80,
            {"--min-coverage", "--max-error-increase", "--min-shared"},
        ),
        ("empty scores.jsonl", [], {"--min-coverage", "--min-shared"}),
        ("5 of 200 items scored", [{"accuracy": 1.0}] * 5, {"--min-coverage", "--min-shared"}),
    ],
)
def test_a_candidate_that_answered_too_little_fails_a_gate(tmp_path, label, cand_rows, flags):
    """Without the gates each of these exited 0: the pairs it lost are simply not compared."""
    b = write_run(tmp_path / "base", "qa", "choice", [{"accuracy": 1.0}] * 200)
    c = write_run(tmp_path / "cand", "qa", "choice", cand_rows)
    result = invoke(str(b), str(c))
    assert result.exit_code == 1, (label, result.output)
    lines = gate_lines(result)
    assert lines and {line.rsplit(" --", 1)[1].split()[0] for line in lines} == {f.lstrip("-") for f in flags}
    assert all("task 'qa'" in line for line in lines)
    scored = sum(1 for r in cand_rows if not isinstance(r, str))
    coverage = next(line for line in lines if "--min-coverage" in line)
    assert f"scored {scored} of 200 items" in coverage
    assert md_escape(coverage) in result.stdout  # the markdown says it too


def test_error_gate_compares_with_the_base_rate_and_the_flags_move_the_gates(tmp_path):
    errors = ["model_error"] * 10 + [{"accuracy": 1.0}] * 190  # 5% errors in both runs: no increase
    b = write_run(tmp_path / "base", "qa", "choice", errors)
    c = write_run(tmp_path / "cand", "qa", "choice", ["judge_error"] * 6 + errors[6:])
    result = invoke(str(b), str(c), "--min-coverage", "0.9")
    assert result.exit_code == 1
    [line] = gate_lines(result)
    assert (
        "judge-error rate 6/200 = 0.030 vs base 0/200 = 0.000" in line and "--max-error-increase 0.02" in line
    )
    assert invoke(str(b), str(c), "--min-coverage", "0.9", "--max-error-increase", "0.05").exit_code == 0
    same = invoke(str(b), str(b), "--min-coverage", "0.9")
    assert gate_lines(same) == [] and same.exit_code == 0
    # the coverage gate is absolute: a run with 5% of its calls failed is not a complete candidate
    assert "coverage 0.950) < --min-coverage 0.98" in invoke(str(b), str(b)).stderr


def test_a_task_missing_from_the_candidate_fails_the_coverage_gate(tmp_path):
    b = write_run(tmp_path / "base", "qa", "choice", [{"accuracy": 1.0}] * 50)
    store = RunStore(b)
    manifest = store.read_manifest()
    manifest["tasks"].append({**manifest["tasks"][0], "name": "other"})
    store.write_manifest(manifest)
    c = write_run(tmp_path / "cand", "qa", "choice", [{"accuracy": 1.0}] * 50)
    result = invoke(str(b), str(c))
    assert result.exit_code == 1
    assert gate_lines(result) == [
        "gate failed: task 'other': not in the candidate run (scored 0 of 0 items, coverage 0) "
        "< --min-coverage 0.98"
    ]


def test_minimum_detectable_effect_marks_small_suites_underpowered(tmp_path):
    """40 items cannot show a 2-point drop (the exact test needs 6 one-way discordant pairs, 0.15);
    4000 items of the same kind can."""
    rng = np.random.default_rng(3)
    small = rng.random(40) < 0.7
    b = write_run(tmp_path / "b40", "qa", "choice", accuracy_rows(small.astype(float)))
    c = write_run(tmp_path / "c40", "qa", "choice", accuracy_rows(small.astype(float)))
    [m] = compare_runs(b, c).metrics
    assert m.verdict == "no significant change" and m.underpowered
    assert m.mde == pytest.approx(6 / 40)
    text = to_markdown(compare_runs(b, c))
    assert "no significant change (underpowered)" in text and "| 0.150 |" in text

    latent = (rng.random(4000) < 0.7).astype(float)
    big_b = write_run(
        tmp_path / "b4k", "qa", "choice", accuracy_rows(noisy_binary(latent, rng, 0.02)), finish=False
    )
    big_c = write_run(
        tmp_path / "c4k", "qa", "choice", accuracy_rows(noisy_binary(latent, rng, 0.02)), finish=False
    )
    [m] = compare_runs(big_b, big_c).metrics
    assert m.mde is not None and m.mde < 0.02 and not m.underpowered


def test_config_differences_between_the_manifests_are_listed(tmp_path):
    b = write_run(tmp_path / "base", "qa", "choice", [{"accuracy": 1.0}] * 20, model="openai:a@http://x")
    c = write_run(tmp_path / "cand", "qa", "choice", [{"accuracy": 1.0}] * 20, model="openai:b@http://x")
    store = RunStore(c)
    store.update_manifest(config={"max_tokens": 64, "out_dir": "elsewhere"}, run_id="other", started="later")
    RunStore(b).update_manifest(config={"max_tokens": 32, "out_dir": "runs"})
    cmp = compare_runs(b, c)
    assert sorted(d[0] for d in cmp.config_differences) == ["config.max_tokens", "model.spec"]
    text = to_markdown(cmp)
    assert 'model.spec: "openai:a@http://x" → "openai:b@http://x"' in text
    assert "config.max_tokens: 32 → 64" in text and "out_dir" not in text
    assert "settings that differ: none" in to_markdown(compare_runs(b, b))
    assert "config.max_tokens" in to_html(cmp)

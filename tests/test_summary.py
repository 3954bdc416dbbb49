"""Seeded bootstrap CIs and summary.json: metrics over scored samples only, errors counted beside
them, groups, per-turn breakdowns and request-level counts."""

from __future__ import annotations

import pytest

from evalkit.records import ErrorInfo, ModelOutput, ResponseRecord, Score, ScoreRecord, Timing, Usage
from evalkit.run_files import Summary
from evalkit.stats import bootstrap_ci, metric_summary
from evalkit.summary import summarise_run, truncation_warnings

# -- bootstrap ------------------------------------------------------------------------------------

VALUES = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]  # mean 0.7


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    first = bootstrap_ci(VALUES, seed=7)
    assert bootstrap_ci(VALUES, seed=7) == first
    assert bootstrap_ci(list(VALUES), seed=7, resamples=2000) == first
    others = {bootstrap_ci(VALUES, seed=s) for s in range(1, 6)}
    assert len(others) > 1  # the seed matters


def test_bootstrap_contains_the_mean_and_stays_in_range() -> None:
    low, high = bootstrap_ci(VALUES, seed=0)
    assert low is not None and high is not None
    assert 0.0 <= low < 0.7 < high <= 1.0


def test_bootstrap_narrows_with_more_data() -> None:
    small = [0.0, 1.0] * 10  # mean 0.5, n = 20
    large = [0.0, 1.0] * 1000  # mean 0.5, n = 2000
    low_s, high_s = bootstrap_ci(small, seed=0)
    low_l, high_l = bootstrap_ci(large, seed=0)
    assert low_s < 0.5 < high_s
    assert low_l < 0.5 < high_l
    assert (high_l - low_l) < (high_s - low_s) / 5  # width shrinks like 1/sqrt(n): ~10x here


def test_bootstrap_level_widens_interval() -> None:
    low90, high90 = bootstrap_ci(VALUES, seed=3, level=0.90)
    low99, high99 = bootstrap_ci(VALUES, seed=3, level=0.99)
    assert low99 <= low90 and high99 >= high90


@pytest.mark.parametrize("values", [[], [0.5]])
def test_bootstrap_needs_two_values(values: list[float]) -> None:
    assert bootstrap_ci(values, seed=0) == (None, None)


def test_bootstrap_of_constant_values_is_a_point() -> None:
    assert bootstrap_ci([0.25] * 5, seed=1) == (0.25, 0.25)


def test_metric_summary() -> None:
    summary = metric_summary([1.0, 0.0, 1.0, 1.0], seed=0)
    assert summary["value"] == 0.75
    assert summary["n"] == 4
    assert summary["ci_low"] <= 0.75 <= summary["ci_high"]
    none = {"ci_low": None, "ci_high": None, "ci_method": None}
    assert metric_summary([], seed=0) == {"value": None, "n": 0} | none
    assert metric_summary([0.5], seed=0) == {"value": 0.5, "n": 1} | none


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval, transcribed from Wilson (1927) / Agresti & Coull (1998)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return centre - half, centre + half


def test_zero_one_metrics_get_wilson_intervals_that_do_not_collapse_at_the_ends():
    import pytest

    for k, n in [(0, 4), (4, 4), (1, 4), (3, 8), (0, 30), (17, 20), (500, 1000)]:
        values = [1.0] * k + [0.0] * (n - k)
        summary = metric_summary(values, seed=0)
        assert summary["ci_method"] == "wilson"
        assert (summary["ci_low"], summary["ci_high"]) == pytest.approx(_wilson_by_hand(k, n), abs=1e-9)
        assert summary["ci_low"] < summary["ci_high"]  # never a point, even at 0/n or n/n
    zero = metric_summary([0.0] * 4, seed=0)
    assert zero["ci_low"] == 0.0 and zero["ci_high"] == pytest.approx(0.490, abs=1e-3)
    # anything that is not 0/1 keeps the bootstrap
    assert metric_summary([0.0, 0.5, 1.0], seed=0)["ci_method"] == "bootstrap"


# -- summarise_run --------------------------------------------------------------------------------


def _score(
    sample: str,
    index: int,
    accuracy: float | None = None,
    *,
    task: str = "arith",
    judge: str = "numeric",
    meta: dict | None = None,
    parse_failed: bool = False,
    error: str | None = None,
    turns: list[bool] | None = None,
) -> ScoreRecord:
    if error is not None:
        score = Score(judge=judge, error=ErrorInfo(kind=error, message=f"{error} happened"))
    else:
        details = {"turns": [{"turn": k, "correct": ok} for k, ok in enumerate(turns)]} if turns else {}
        score = Score(
            judge=judge,
            metrics={"accuracy": accuracy},
            passed=bool(accuracy),
            parse_failed=parse_failed,
            details=details,
        )
    return ScoreRecord(task=task, sample_id=sample, sample_index=index, meta=meta or {}, score=score)


TASK = {
    "name": "arith",
    "judges": ["numeric"],
    "group_by": ["category"],
    "primary_metric": "accuracy",
    "dataset": {"id": "evalkit/arith", "count": 5},
}

SCORES = [
    _score("s0", 0, 1.0, meta={"category": "a"}),
    _score("s1", 1, 0.0, meta={"category": "a"}, parse_failed=True),
    _score("s2", 2, 1.0, meta={"category": "b"}),
    _score("s3", 3, meta={"category": "b"}, error="model_error"),
    _score("s4", 4, meta={"category": "b"}, error="judge_error"),
    _score("s5", 5, 1.0, meta={}),  # no category: its own group
    # another task's records must not leak in
    _score("x0", 0, 0.0, task="other", meta={"category": "a"}),
]


def test_summary_counts_and_metric() -> None:
    summary = summarise_run([TASK], SCORES, [], seed=0)
    assert summary["seed"] == 0
    assert list(summary["tasks"]) == ["arith"]
    task = summary["tasks"]["arith"]
    assert task["dataset"] == {"id": "evalkit/arith", "count": 5}
    assert task["n_samples"] == 6
    judge = task["judges"]["numeric"]
    assert judge["n"] == 6
    assert judge["n_scored"] == 4
    assert judge["coverage"] == pytest.approx(4 / 6)
    assert judge["n_parse_failures"] == 1
    assert judge["n_model_errors"] == 1
    assert judge["n_judge_errors"] == 1
    # errors are not zeros: 3 right of 4 scored, not 3 of 6
    accuracy = judge["metrics"]["accuracy"]
    assert accuracy["value"] == 0.75
    assert accuracy["n"] == 4
    assert accuracy["ci_low"] <= 0.75 <= accuracy["ci_high"]
    assert task["primary"]["judge"] == "numeric"
    assert task["primary"]["metric"] == "accuracy"
    assert task["primary"]["value"] == 0.75
    assert task["primary"]["n"] == 4


def test_summary_groups_by_meta_key() -> None:
    groups = summarise_run([TASK], SCORES, [], seed=0)["tasks"]["arith"]["judges"]["numeric"]["groups"]
    category = groups["category"]
    assert sorted(category) == ["(none)", "a", "b"]
    assert category["a"]["accuracy"]["value"] == 0.5
    assert category["a"]["accuracy"]["n"] == 2
    assert category["b"]["accuracy"]["value"] == 1.0  # the two failed b samples are not zeros
    assert category["b"]["accuracy"]["n"] == 1
    assert category["b"]["accuracy"]["ci_low"] is None  # one value: no interval
    assert category["(none)"]["accuracy"]["value"] == 1.0


def test_summary_is_deterministic() -> None:
    assert summarise_run([TASK], SCORES, [], seed=3) == summarise_run([TASK], SCORES, [], seed=3)


def test_summary_judge_error_kinds_other_than_model_error_are_judge_errors() -> None:
    scores = [
        _score("s0", 0, 1.0),
        _score("s1", 1, error="judge_error"),
        _score("s2", 2, error="rubric_timeout"),
        _score("s3", 3, error="model_error"),
        _score("s4", 4, error="model_error"),
    ]
    judge = summarise_run([TASK], scores, [], seed=0)["tasks"]["arith"]["judges"]["numeric"]
    assert (judge["n"], judge["n_scored"]) == (5, 1)
    assert judge["n_model_errors"] == 2
    assert judge["n_judge_errors"] == 2
    assert judge["coverage"] == pytest.approx(0.2)
    assert judge["metrics"]["accuracy"]["value"] == 1.0


def test_summary_by_turn_for_multi_turn_details() -> None:
    task = {"name": "multi", "judges": ["numeric"], "group_by": []}
    scores = [
        _score("m0", 0, 0.0, task="multi", turns=[True, True, False]),
        _score("m1", 1, 1.0, task="multi", turns=[True, True, True]),
        _score("m2", 2, 0.0, task="multi", turns=[True, False, False]),
        _score("m3", 3, 0.0, task="multi", turns=[False, True, False]),
        _score("m4", 4, task="multi", error="model_error"),
    ]
    judge = summarise_run([task], scores, [], seed=0)["tasks"]["multi"]["judges"]["numeric"]
    by_turn = judge["by_turn"]
    assert sorted(by_turn) == ["0", "1", "2"]
    assert by_turn["0"]["value"] == 0.75  # 3 of 4
    assert by_turn["1"]["value"] == 0.75  # 3 of 4
    assert by_turn["2"]["value"] == 0.25  # 1 of 4
    assert all(row["n"] == 4 for row in by_turn.values())
    assert judge["metrics"]["accuracy"]["value"] == 0.25
    assert judge["groups"] == {}


def test_summary_by_turn_empty_for_single_turn() -> None:
    scores = [_score("s0", 0, 1.0, turns=[True]), _score("s1", 1, 0.0, turns=[False])]
    judge = summarise_run([TASK], scores, [], seed=0)["tasks"]["arith"]["judges"]["numeric"]
    assert judge["by_turn"] == {}


def test_summary_none_metrics_are_not_applicable() -> None:
    rec = ScoreRecord(
        task="arith",
        sample_id="s0",
        sample_index=0,
        score=Score(judge="numeric", metrics={"accuracy": 1.0, "turn_accuracy": None}),
    )
    metrics = summarise_run([TASK], [rec], [], seed=0)["tasks"]["arith"]["judges"]["numeric"]["metrics"]
    assert list(metrics) == ["accuracy"]


def test_summary_task_without_scores() -> None:
    task = summarise_run([TASK], [], [], seed=0)["tasks"]["arith"]
    judge = task["judges"]["numeric"]
    assert (judge["n"], judge["n_scored"], judge["coverage"]) == (0, 0, None)
    assert judge["metrics"] == {}
    assert task["primary"]["value"] is None
    assert task["n_samples"] == 0


def _response(
    sample: str,
    turn: int = 0,
    *,
    error: str | None = None,
    cached: bool = False,
    total: float | None = None,
    first_token: float | None = None,
    prompt: int | None = None,
    completion: int | None = None,
    task: str = "arith",
) -> ResponseRecord:
    if error is not None:
        output = ModelOutput(error=ErrorInfo(kind=error, message="failed"))
    else:
        output = ModelOutput(
            text="ok",
            usage=Usage(prompt_tokens=prompt, completion_tokens=completion),
            timing=Timing(total=total, first_token=first_token),
        )
    return ResponseRecord(
        task=task, sample_id=sample, sample_index=0, turn=turn, request_hash="h", cached=cached, output=output
    )


def test_summary_requests_errors_by_kind() -> None:
    responses = [
        _response("s0", total=1.0, first_token=0.2, prompt=10, completion=5),
        _response("s1", total=3.0, prompt=20, completion=1),
        _response("s2", cached=True, total=100.0, first_token=9.0, prompt=7),  # cached: no latency
        _response("s3", error="timeout"),
        _response("s4", error="timeout"),
        _response("s5", error="http_500"),
        _response("o0", error="input_audio", task="other"),
    ]
    requests = summarise_run([TASK], [], responses, seed=0)["tasks"]["arith"]["requests"]
    assert requests["n_requests"] == 6
    assert requests["n_errors"] == 3
    assert requests["errors_by_kind"] == {"timeout": 2, "http_500": 1}
    assert requests["n_cached"] == 1
    assert requests["tokens"] == {"prompt_tokens": 37, "completion_tokens": 6, "reasoning_tokens": 0}
    assert requests["latency_s"]["mean"] == pytest.approx(2.0)
    assert requests["latency_s"]["p50"] == pytest.approx(2.0)
    assert requests["latency_s"]["p95"] == pytest.approx(2.9)  # linear: 1 + 0.95 * (3 - 1)
    assert requests["first_token_s"]["mean"] == pytest.approx(0.2)


def test_summary_requests_with_no_timings() -> None:
    requests = summarise_run([TASK], [], [_response("s0", error="timeout")], seed=0)["tasks"]["arith"][
        "requests"
    ]
    assert requests["latency_s"] == {"mean": None, "p50": None, "p95": None}
    assert requests["first_token_s"] == {"mean": None}
    assert requests["errors_by_kind"] == {"timeout": 1}


def _answer(sample: str, text: str, finish: str | None, task: str = "arith") -> ResponseRecord:
    output = ModelOutput(text=text, finish_reason=finish)
    return ResponseRecord(
        task=task, sample_id=sample, sample_index=0, turn=0, request_hash="h", output=output
    )


def test_summary_counts_empty_and_truncated_answers_and_warns_above_5_percent() -> None:
    responses = [
        _answer("s0", "", "stop"),  # empty
        _answer("s1", "  \n", "length"),  # empty and cut
        _answer("s2", "The answer is 3", "length"),  # cut, with an answer
        *[_answer(f"t{i}", "7", "stop") for i in range(17)],
        _response("e0", error="timeout"),  # an error is neither: not in the share's denominator
    ]
    task = summarise_run([TASK], [], responses, seed=0)["tasks"]["arith"]
    assert (task["n_empty"], task["n_truncated"]) == (2, 2)
    assert task["requests"]["truncated_share"] == pytest.approx(2 / 20)
    [line] = truncation_warnings(Summary.model_validate({"tasks": {"arith": task}}))
    assert line.startswith("warning: arith: 2 replies (10%)") and "--max-tokens" in line


def test_summary_no_truncation_warning_at_or_below_5_percent() -> None:
    responses = [_answer("s0", "1", "length"), *[_answer(f"t{i}", "7", "stop") for i in range(19)]]
    summary = summarise_run([TASK], [], responses, seed=0)
    assert summary["tasks"]["arith"]["requests"]["truncated_share"] == pytest.approx(0.05)
    assert truncation_warnings(Summary.model_validate(summary)) == []

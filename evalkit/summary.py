"""Scores -> summary.json: per task and judge, each metric with a seeded 95% bootstrap CI, broken
down by the task's group keys and by answered-turn index, with parse-failure and error counts.
Speech judges add per-turn metrics by turn index (``by_turn_metrics``) and, per conversation, the
turns where a jump, drift or voice switch happened (``events``; counted by kind and turn in
``event_counts``), per-turn metrics in turn buckets with a long-turn decay statistic
(``turn_buckets``, ``decay``: ``evalkit.turn_stats``), the declared metrics that did not apply
(``not_applicable``, never a zero) and, per task, the conversational-feel composite (``feel``:
``evalkit.feel``).

Metrics are averaged over the samples a judge could score; samples whose model call or judge
failed are *not* folded in as zeros but counted (``n_model_errors``, ``n_judge_errors``) and shown
beside the metric, together with ``coverage`` = scored / samples the judge applies to. Parse
failures are scored as wrong (the model answered, unreadably) and counted too. Empty answers
(``n_empty``: a completed call with nothing after the reasoning) and replies cut by the token
limit (``n_truncated``) are answers, scored by the judges; both are counted per task, and
``truncation_warnings`` flags a task where more than 5% of replies were cut.

Streaming: records are consumed once, in order, and only the numbers the summary needs are kept
(per task, judge, metric and group a packed float array, plus counters), never the records
themselves, so summarising a 10k-sample run holds ~8 bytes per metric value instead of every
``ScoreRecord`` (per-turn metrics keep one small array per conversation, for the decay's
conversation-level bootstrap). Values keep the records' order, so bootstrap CIs equal those of a
list-based pass.
"""

from __future__ import annotations

import zlib
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from statistics import fmean
from typing import Any

from evalkit.feel import feel_metrics, feel_summary
from evalkit.judges.base import MetricSpec
from evalkit.records import ResponseRecord, ScoreRecord
from evalkit.run_files import Summary
from evalkit.stats import metric_summary, quantile
from evalkit.turn_stats import MIN_DECAY_TURNS, Track, bucket_summaries, decay_summary, tracks_of


def _seed_for(seed: int, *names: str) -> int:
    """A distinct, stable bootstrap seed per (run seed, task, judge, metric, group)."""
    return (seed * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2**32)


def _floats() -> array:
    """A packed float64 column: 8 bytes a value instead of a Python float object plus a pointer."""
    return array("d")


def _summaries(values: dict[str, array], seed: int, *scope: str) -> dict[str, Any]:
    return {m: metric_summary(v, _seed_for(seed, *scope, m)) for m, v in sorted(values.items())}


class JudgeAccumulator:
    """The compact state of one (task, judge) summary, fed one ``ScoreRecord`` at a time."""

    def __init__(self, group_by: Sequence[str], seed: int, scope: tuple[str, ...]):
        self.group_by = list(group_by)
        self.seed = seed
        self.scope = scope
        self.n = 0
        self.n_scored = 0
        self.n_parse_failures = 0
        #: rubric items whose judge reply stayed unreadable after the re-asks (``details``), summed
        self.n_judge_unreadable = 0
        self.errors: Counter[str] = Counter()
        self.metrics: dict[str, array] = defaultdict(_floats)
        #: group key -> group value -> metric -> values
        self.groups: dict[str, dict[str, dict[str, array]]] = {
            key: defaultdict(lambda: defaultdict(_floats)) for key in self.group_by
        }
        self.by_turn: dict[int, array] = defaultdict(_floats)
        #: speech judges' per-turn numbers (``details["turn_metrics"]``): metric -> turn -> values
        self.turn_metrics: dict[str, dict[int, array]] = defaultdict(lambda: defaultdict(_floats))
        #: sample id -> its speech events (``details["events"]``: jumps, drifts, voice switches)
        self.events: dict[str, list[dict[str, Any]]] = {}
        #: per-turn metric -> one ``Track`` per conversation (buckets and decay, ``evalkit.turn_stats``)
        self.tracks: dict[str, list[Track]] = defaultdict(list)
        #: samples the judge did not apply to, by reason (``Judge.not_applicable``)
        self.not_applicable: Counter[str] = Counter()
        #: the metrics that can be parts of the feel composite (``evalkit.feel``): metric -> sample -> value
        self.kept = feel_metrics(scope[-1]) if scope else set()
        self.by_sample: dict[str, dict[str, float]] = defaultdict(dict)

    def add(self, rec: ScoreRecord) -> None:
        self.n += 1
        score = rec.score
        if score.error is not None:
            self.errors[score.error.kind] += 1
            return
        reason = score.details.get("not_applicable")
        if reason is not None:  # neither scored nor an error: counted apart, with the reason
            self.not_applicable[str(reason)] += 1
            return
        self.n_scored += 1
        self.n_parse_failures += score.parse_failed
        self.n_judge_unreadable += int(score.details.get("n_judge_unreadable", 0))
        values = [(m, float(v)) for m, v in score.metrics.items() if v is not None]
        for metric, value in values:
            self.metrics[metric].append(value)
            if metric in self.kept:
                self.by_sample[metric][rec.sample_id] = value
        for key in self.group_by:
            bucket = self.groups[key][str(rec.meta.get(key, "(none)"))]
            for metric, value in values:
                bucket[metric].append(value)
        for row in score.details.get("turns", []):
            self.by_turn[int(row["turn"])].append(float(row["correct"]))
        self._add_speech(rec)

    def _add_speech(self, rec: ScoreRecord) -> None:
        """The per-turn speech metrics and the events of one conversation, as the speech judges
        write them: ``details["turn_metrics"]`` rows ``{"turn": k, metric: value}`` (averaged by
        turn index over conversations, with CIs) and ``details["events"]`` rows ``{"turn": k,
        "kind": "jump" | "drift" | "voice_switch" | ..., "cue"?: ...}`` (kept per conversation,
        as turn, kind and cue only, so summary.json stays small)."""
        details = rec.score.details
        for row in details.get("turn_metrics", []):
            turn = int(row["turn"])
            for metric, value in row.items():
                if metric != "turn" and value is not None:
                    self.turn_metrics[metric][turn].append(float(value))
        for metric, track in tracks_of(details.get("turn_metrics", [])).items():
            self.tracks[metric].append(track)
        events = [
            {"turn": int(e["turn"]), "kind": str(e["kind"])} | ({"cue": str(e["cue"])} if "cue" in e else {})
            for e in details.get("events", [])
        ]
        if events:
            self.events[rec.sample_id] = events

    @property
    def n_not_applicable(self) -> int:
        return sum(self.not_applicable.values())

    def long_turn(self, turn_specs: Mapping[str, MetricSpec]) -> dict[str, Any]:
        """Buckets and decay of the per-turn metrics (``evalkit.turn_stats``), for metrics of
        conversations longer than one turn; ``turn_specs`` give each its direction and unit."""
        seed, scope = self.seed, self.scope
        multi = {m: ts for m, ts in sorted(self.tracks.items()) if any(t.values.size > 1 for t in ts)}
        decaying = {m: ts for m, ts in multi.items() if any(t.values.size >= MIN_DECAY_TURNS for t in ts)}

        def spec_of(metric: str) -> tuple[str | None, str]:
            spec = turn_specs.get(metric)
            return (spec.direction, spec.unit) if spec is not None else (None, "")

        return {
            "turn_buckets": {m: bucket_summaries(ts, seed, *scope, m) for m, ts in multi.items()},
            "decay": {m: decay_summary(ts, *spec_of(m), seed, *scope, m) for m, ts in decaying.items()},
            "turn_metrics_declared": {
                m: turn_specs[m].model_dump(mode="json", exclude={"name"}) for m in multi if m in turn_specs
            },
        }

    def not_applicable_metrics(self, declared: Iterable[str]) -> dict[str, str]:
        """Declared metric with no value in this run -> why: the judge's own reason when it did not
        apply to any sample, else that no scored sample had one (judge errors are errors, not this)."""
        if self.not_applicable and not self.n_scored:
            reason = self.not_applicable.most_common(1)[0][0]
        elif self.n_scored:
            reason = "no scored sample had a value (the metric does not apply to these samples)"
        else:
            return {}
        return {m: reason for m in declared if m not in self.metrics}

    def result(self) -> dict[str, Any]:
        errors = Counter(self.errors)
        seed, scope = self.seed, self.scope
        groups = {
            key: {
                value: _summaries(metrics, seed, *scope, key, value)
                for value, metrics in sorted(self.groups[key].items())
            }
            for key in self.group_by
        }
        return {
            "n": self.n,
            "n_scored": self.n_scored,
            # of the samples the judge applies to (not-applicable ones are neither scored nor failed)
            "coverage": self.n_scored / applicable
            if (applicable := self.n - self.n_not_applicable)
            else None,
            "n_not_applicable": self.n_not_applicable,
            "n_parse_failures": self.n_parse_failures,
            "n_judge_unreadable": self.n_judge_unreadable,
            "n_model_errors": errors.pop("model_error", 0),
            "n_judge_errors": sum(errors.values()),
            "metrics": _summaries(self.metrics, seed, *scope),
            "groups": groups,
            "by_turn": {
                str(turn): metric_summary(vals, _seed_for(seed, *scope, "turn", str(turn)))
                for turn, vals in sorted(self.by_turn.items())
            }
            if len(self.by_turn) > 1
            else {},
            "by_turn_metrics": {
                metric: {
                    str(turn): metric_summary(vals, _seed_for(seed, *scope, "turn", str(turn), metric))
                    for turn, vals in sorted(turns.items())
                }
                for metric, turns in sorted(self.turn_metrics.items())
            },
            "events": dict(sorted(self.events.items())),
            "event_counts": _event_counts(self.events),
        }


def _event_counts(events: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """kind -> turn (as text) -> conversations with that event at that turn."""
    counts: dict[str, Counter[int]] = defaultdict(Counter)
    for rows in events.values():
        for kind, turn in {(e["kind"], e["turn"]) for e in rows}:
            counts[kind][turn] += 1
    return {kind: {str(t): n for t, n in sorted(c.items())} for kind, c in sorted(counts.items())}


def summarise_judge(
    records: Iterable[ScoreRecord], group_by: Sequence[str], seed: int, scope: tuple[str, ...]
) -> dict[str, Any]:
    """One judge's block of summary.json from its records (any iterable, consumed once)."""
    acc = JudgeAccumulator(group_by, seed, scope)
    for rec in records:
        acc.add(rec)
    return acc.result()


class ResponseAccumulator:
    """The compact state of one task's request counts, fed one ``ResponseRecord`` at a time."""

    _TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "reasoning_tokens")

    def __init__(self) -> None:
        self.n_requests = 0
        self.n_errors = 0
        self.errors_by_kind: Counter[str] = Counter()
        self.n_cached = 0
        self.n_answered = 0  # successful calls: the denominator of the truncation share
        self.n_empty = 0
        self.n_truncated = 0
        self.tokens = dict.fromkeys(self._TOKEN_FIELDS, 0)
        self.totals = _floats()
        self.ttft = _floats()

    def add(self, rec: ResponseRecord) -> None:
        self.n_requests += 1
        self.n_cached += rec.cached
        out = rec.output
        if out.error is not None:
            self.n_errors += 1
            self.errors_by_kind[out.error.kind] += 1
            return
        self.n_answered += 1
        self.n_empty += out.empty
        self.n_truncated += out.truncated
        for f in self._TOKEN_FIELDS:
            self.tokens[f] += getattr(out.usage, f) or 0
        if not rec.cached:
            if out.timing.total is not None:
                self.totals.append(out.timing.total)
            if out.timing.first_token is not None:
                self.ttft.append(out.timing.first_token)

    def result(self) -> dict[str, Any]:
        totals, ttft = self.totals, self.ttft
        return {
            "n_requests": self.n_requests,
            "n_errors": self.n_errors,
            "errors_by_kind": dict(self.errors_by_kind),
            "n_cached": self.n_cached,
            "n_empty": self.n_empty,
            "n_truncated": self.n_truncated,
            "truncated_share": self.n_truncated / self.n_answered if self.n_answered else None,
            "tokens": dict(self.tokens),
            # in pure Python: a run whose metrics are all 0/1 never imports numpy (issue 18)
            "latency_s": {
                "mean": fmean(totals) if totals else None,
                "p50": quantile(totals, 0.5),
                "p95": quantile(totals, 0.95),
            },
            "first_token_s": {"mean": fmean(ttft) if ttft else None},
        }


def summarise_responses(responses: Iterable[ResponseRecord]) -> dict[str, Any]:
    """Request-level counts: errors by kind, cache hits, token usage and latency."""
    acc = ResponseAccumulator()
    for rec in responses:
        acc.add(rec)
    return acc.result()


def primary_of(task: Mapping[str, Any]) -> tuple[str, str] | None:
    """(judge, metric) of a task's headline number, from its manifest description: its first
    judge's ``primary_metric`` (None for a task without judges)."""
    judges = task.get("judges") or []
    return (judges[0], task.get("primary_metric", "accuracy")) if judges else None


def summarise_run(
    tasks: list[dict[str, Any]],
    scores: Iterable[ScoreRecord],
    responses: Iterable[ResponseRecord],
    seed: int,
    judges_recorded: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole summary.json. ``tasks`` are the task descriptions stored in the manifest, and
    ``judges_recorded`` its ``judges`` (each judge's block carries ``metrics_declared``: unit,
    range, direction and description of its metrics, ``evalkit.judges.base.MetricSpec``);
    ``scores`` and ``responses`` may be iterators straight off the run's files: each is read once,
    and only compact numbers (plus the task's sample ids, for ``n_samples``) are kept."""
    judges: dict[tuple[str, str], JudgeAccumulator] = {}
    sample_ids: dict[str, set[str]] = {}
    requests: dict[str, ResponseAccumulator] = {}
    for task in tasks:
        name = task["name"]
        sample_ids[name] = set()
        requests[name] = ResponseAccumulator()
        for judge in task["judges"]:
            judges.setdefault((name, judge), JudgeAccumulator(task.get("group_by", []), seed, (name, judge)))
    for resp in responses:  # responses first: finalize's report scan rides on the same pass
        racc = requests.get(resp.task)
        if racc is not None:
            racc.add(resp)
    for rec in scores:
        ids = sample_ids.get(rec.task)
        if ids is None:
            continue
        ids.add(rec.sample_id)
        acc = judges.get((rec.task, rec.score.judge))
        if acc is not None:
            acc.add(rec)

    out: dict[str, Any] = {"seed": seed, "tasks": {}}
    for task in tasks:
        name = task["name"]
        task_judges = {
            judge: _judge_block(judges[(name, judge)], judges_recorded, name) for judge in task["judges"]
        }
        chosen = primary_of(task)
        primary = None
        if chosen is not None:
            primary_judge, primary_metric = chosen
            primary = {
                "judge": primary_judge,
                "metric": primary_metric,
                **task_judges[primary_judge]["metrics"].get(primary_metric, {"value": None}),
            }
        counted = requests[name].result()
        out["tasks"][name] = {
            "dataset": task.get("dataset", {}),
            "n_samples": len(sample_ids[name]),
            # answers, not errors: scored by the judges, counted here (per answered turn)
            "n_empty": counted["n_empty"],
            "n_truncated": counted["n_truncated"],
            "primary": primary,
            "judges": task_judges,
            "requests": counted,
        }
        feel = _task_feel(
            task_judges, {j: judges[(name, j)] for j in task["judges"]}, judges_recorded, name, seed
        )
        if feel is not None:
            out["tasks"][name]["feel"] = feel
    return out


def _judge_block(acc: JudgeAccumulator, recorded: Mapping[str, Any] | None, task: str) -> dict[str, Any]:
    """One judge's block: its numbers, its declarations, the long-turn statistics of its per-turn
    metrics and the declared metrics that did not apply."""
    from evalkit.judges.base import recorded_turn_metric_specs

    judge = acc.scope[-1]
    declared = _declared(recorded, task, judge)
    return {
        **acc.result(),
        "metrics_declared": declared,
        **acc.long_turn(recorded_turn_metric_specs(recorded or {}, task, judge)),
        "not_applicable": acc.not_applicable_metrics(declared),
    }


def _task_feel(
    task_judges: Mapping[str, Any],
    accs: Mapping[str, JudgeAccumulator],
    recorded: Mapping[str, Any] | None,
    task: str,
    seed: int,
) -> dict[str, Any] | None:
    """The task's conversational-feel composite (``evalkit.feel``), None without a judge of any part."""
    from evalkit.judges.base import recorded_metric_specs

    specs = {j: {s.name: s for s in recorded_metric_specs(recorded or {}, task, j)} for j in accs}
    values = {(j, m): dict(v) for j, acc in accs.items() for m, v in acc.by_sample.items()}
    return feel_summary(task_judges, values, specs, seed)


def _declared(recorded: Mapping[str, Any] | None, task: str, judge: str) -> dict[str, dict[str, Any]]:
    """metric -> its declaration (without the name), as the report and leaderboard read it."""
    from evalkit.judges.base import recorded_metric_specs

    specs = recorded_metric_specs(recorded or {}, task, judge)
    return {spec.name: spec.model_dump(mode="json", exclude={"name"}) for spec in specs}


#: above this share of truncated replies a task's numbers say more about the budget than the model
TRUNCATION_WARN_SHARE = 0.05


def truncation_warnings(summary: Summary) -> list[str]:
    """One line per task whose replies were cut by the token limit more than 5% of the time,
    naming the flag that fixes it."""
    lines = []
    for name, task in summary.tasks.items():
        share = task.requests.truncated_share
        if share is not None and share > TRUNCATION_WARN_SHARE:
            lines.append(
                f"warning: {name}: {task.n_truncated} replies ({share:.0%}) hit the token limit "
                "(finish_reason 'length'); raise it with --max-tokens N"
            )
    return lines

"""The judge interface. A judge reads a sample and the model's outputs (one per answered turn)
and returns one ``Score``. Judges are pure functions of their inputs so they can run in a process
pool (``execution = "process"``) and be re-run on a finished run directory."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from evalkit.errors import EvalkitError, UnknownNameError
from evalkit.records import ErrorInfo, ModelOutput, Sample, Score
from evalkit.specs import Options, validate_options

if TYPE_CHECKING:
    from evalkit.service import ModelService

#: one unit of judging work: a sample and the model's outputs for its answered turns
JudgeItem = tuple[Sample, list[ModelOutput]]

#: how a judge is run (``Judge.execution``)
Execution = Literal["inline", "process", "batched"]

#: where a judge's model runs (option ``device``): ``auto`` = cuda when its runtime sees a GPU
JudgeDevice = Literal["auto", "cpu", "cuda"]

#: which way a metric is good; ``descriptive`` metrics (prosody features) are neither
Direction = Literal["higher", "lower", "descriptive"]


class MetricSpec(BaseModel):
    """What a judge declares about one metric it writes in ``Score.metrics``: compare signs its
    verdicts by ``direction``, summary.json and the report show ``unit`` and ``range``, and the
    leaderboard sorts lower-is-better columns ascending. Declared once, on the judge class, so
    no other module keeps its own table of metric meanings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    direction: Direction
    description: str
    #: "" for a plain number or share; otherwise e.g. "Hz", "st", "s", "MOS"
    unit: str = ""
    #: the values the metric can take, (lo, hi); None: unbounded on that side
    range: tuple[float | None, float | None] = (None, None)


def share(name: str, description: str, direction: Direction = "higher") -> MetricSpec:
    """A metric in [0, 1] (accuracy, rates, agreement): the most common declaration."""
    return MetricSpec(name=name, direction=direction, description=description, range=(0.0, 1.0))


def count(name: str, unit: str, description: str, direction: Direction = "descriptive") -> MetricSpec:
    """A count of events (jumps, flips, switches ...): ``unit`` names what is counted, range
    [0, inf); descriptive unless fewer is better (a change can be right)."""
    return MetricSpec(name=name, direction=direction, unit=unit, range=(0.0, None), description=description)


class JudgeOptions(Options):
    """Base of every judge's settings: typed, an unknown key is refused, environment variables
    only provide defaults (``evalkit.specs.env_field``), and the effective values go into the
    manifest, so two runs whose judges were set up differently never look comparable."""


JudgeOptionsT = TypeVar("JudgeOptionsT", bound=JudgeOptions)


def build_options(options_cls: type[JudgeOptionsT], judge: str, **given: Any) -> JudgeOptionsT:
    """``options_cls`` from a judge constructor's keyword arguments, where ``None`` means "not
    given" (the default, or the environment's, applies); a bad value is one ``SpecError`` line."""
    values = {k: v for k, v in given.items() if v is not None}
    return validate_options(options_cls, values, f"judge {judge!r}")


def not_applicable_score(judge: str, reason: str) -> Score:
    """The score of a sample the judge does not apply to: no metrics, the reason in ``details``
    (summary.json counts it as ``n_not_applicable`` and names the reason under ``not_applicable``)."""
    return Score(judge=judge, explanation=f"not applicable: {reason}", details={"not_applicable": reason})


def judge_error(judge: str, exc: BaseException) -> Score:
    """The score recorded when a judge could not judge (the runner's and the batcher's format)."""
    return Score(judge=judge, error=ErrorInfo(kind="judge_error", message=f"{type(exc).__name__}: {exc}"))


class Judge(ABC):
    name: str
    #: how ``evalkit.judging.JudgeExecutor`` runs it: ``inline`` (``ascore`` on the event loop),
    #: ``process`` (``score`` in the process pool: decoding audio, signal processing) or
    #: ``batched`` (``score_batch`` of up to ``batch_size`` samples, one in-process model fed by a
    #: micro-batcher, ``evalkit.batching``)
    execution: ClassVar[Execution] = "inline"
    #: the most samples one ``score_batch`` call takes (``batched`` judges)
    batch_size: int = 0
    #: how long the micro-batcher holds a partial batch waiting for more samples
    batch_max_wait_s: float = 0.1
    #: every metric this judge may write in ``Score.metrics`` (tests fail on an undeclared one)
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()
    #: the per-turn numbers it writes in ``details["turn_metrics"]`` (``evalkit.turn_stats``); their
    #: direction says which way a change over a conversation's turns is good (decay: the bad way).
    #: A per-turn number not declared here takes the declaration of the metric of the same name
    turn_metric_specs: ClassVar[tuple[MetricSpec, ...]] = ()
    #: it measures the model's speech: a sample with no spoken reply at all is not applicable
    #: (``not_applicable``), recorded as such, never a zero and never an error
    needs_speech: ClassVar[bool] = False
    #: bump when a change can change a score: runs of different versions are not comparable
    scorer_version: ClassVar[str] = "1"
    #: the judge's settings model; ``options`` is its effective instance
    Options: ClassVar[type[JudgeOptions]] = JudgeOptions
    options: JudgeOptions = JudgeOptions()

    @abstractmethod
    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        """Score one sample. Outputs are all successful (the runner records a model failure itself)."""

    async def ascore(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        """What the runner awaits. Judges that call a model (rubric LLM judges) override this and
        await the model; plain judges are computed inline."""
        return self.score(sample, outputs)

    def not_applicable(self, sample: Sample, outputs: list[ModelOutput]) -> str | None:
        """Why this judge does not apply to the sample (None: it does). The executor records the
        reason as the sample's score instead of running the judge (``not_applicable_score``)."""
        if self.needs_speech and outputs and all(o.audio is None for o in outputs):
            return "the model returned no speech on any turn (a text-only reply): speech metrics do not apply"
        return None

    def bind(self, service: ModelService) -> None:  # noqa: B027 - a hook: most judges call no model
        """Called once per run, before the first sample: a judge that calls models resolves its
        model roles in the run's ``service`` here (``judges.model_judge.ModelJudge``)."""

    def score_batch(self, items: list[JudgeItem]) -> list[Score]:
        """Score several samples, one ``Score`` per item in order. A failure of one item is that
        item's judge error, never the batch's. Batchable judges override this with one batched
        model call; this default scores the items one by one."""
        scores: list[Score] = []
        for sample, outputs in items:
            try:
                scores.append(self.score(sample, outputs))
            except Exception as exc:  # a judge failure is data, per item
                scores.append(judge_error(self.name, exc))
        return scores

    def describe(self) -> dict[str, Any]:
        """What the run manifest records about this judge: the scorer version and effective options
        (what makes two runs' scores comparable, see ``evalkit.compare``), the metric declarations,
        and how it ran (model-based judges add the resolved device)."""
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "execution": self.execution,
            "batch_size": self.batch_size,
            "scorer_version": self.scorer_version,
            "options": self.options.model_dump(mode="json"),
            "metrics": [spec.model_dump(mode="json") for spec in self.metrics],
            "turn_metrics": [spec.model_dump(mode="json") for spec in self.turn_metric_specs],
        }

    @classmethod
    def metric_spec(cls, metric: str) -> MetricSpec | None:
        """The declaration of ``metric``, or None when this judge does not declare it."""
        return next((spec for spec in cls.metrics if spec.name == metric), None)

    @classmethod
    def undeclared(cls, score: Score) -> list[str]:
        """Metrics ``score`` carries that this judge does not declare (a bug in the judge)."""
        declared = {spec.name for spec in cls.metrics}
        return sorted(set(score.metrics) - declared)


class BatchedModelJudge(Judge):
    """A judge whose model scores many samples in one call. Subclasses implement ``_score_items``
    (one result per item: its Score, or the exception that stopped it), so scoring one sample and
    scoring a batch are the same code path and results never depend on batch company."""

    @abstractmethod
    def _score_items(self, items: list[JudgeItem]) -> list[Score | Exception]:
        """Each item's score, or the exception that stops that item alone from being scored."""

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        (result,) = self._score_items([(sample, outputs)])
        if isinstance(result, Exception):
            raise result
        return result

    def score_batch(self, items: list[JudgeItem]) -> list[Score]:
        return [r if isinstance(r, Score) else judge_error(self.name, r) for r in self._score_items(items)]


def judges_manifest(judges: dict[str, dict[str, Judge]]) -> dict[str, dict[str, dict[str, Any]]]:
    """manifest ``judges``: task -> judge name -> ``Judge.describe()``. Compare reads the scorer
    versions, options and metric declarations from it (``evalkit.compare.check_same_judges``)."""
    return {task: {name: j.describe() for name, j in by_name.items()} for task, by_name in judges.items()}


#: what two records of one judge (``describe()``) must agree on for its scores to be comparable
COMPARABLE_KEYS = ("scorer_version", "options")


def judge_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """``"scorer version (1 vs 2)"`` / ``"options (asr_model: tiny.en vs base.en)"`` for the first
    comparability key two records of one judge disagree on, None when they agree (compare refuses
    two runs, and a resume refuses a run, on a difference)."""
    for key in COMPARABLE_KEYS:
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            option = next(k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k))
            shown = f"{option}: {_shown(a.get(option))} vs {_shown(b.get(option))}"
        else:
            shown = f"{_shown(a)} vs {_shown(b)}"
        return f"{key.replace('_', ' ')} ({shown})"
    return None


def check_judges_unchanged(run_dir: Any, recorded: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """A resumed run's judges must score as they did when it started (else its scores.jsonl
    would mix two scorers): ``EvalkitError`` naming the task, the judge and the difference."""
    for task, by_name in current.items():
        for name, record in by_name.items():
            old = recorded.get(task, {}).get(name)
            difference = None if old is None else judge_difference(old, record)
            if difference is not None:
                raise EvalkitError(
                    f"{run_dir}: judge {name!r} of task {task!r} has a different {difference} than "
                    "when the run started; resume with the same judge settings (environment included) "
                    "or start a new run"
                )


def _shown(value: Any) -> str:
    text = "missing" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def recorded_metric_specs(recorded: Mapping[str, Any], task: str, judge: str) -> tuple[MetricSpec, ...]:
    """The metric declarations of ``task``'s judge as a run recorded them (``recorded``: manifest
    ``judges``), or, for a run from before that record, those of the judge registered under that
    name (none for a judge not installed here). Compare, summary and report all read this."""
    entry = recorded.get(task, {}).get(judge)
    if entry is not None and "metrics" in entry:
        return tuple(MetricSpec.model_validate(m) for m in entry["metrics"])
    from evalkit.registry import judges

    try:
        return tuple(judges.get(judge).metrics)
    except UnknownNameError:
        return ()


def load_judge(name: str) -> Judge:
    from evalkit.registry import judges

    return judges.get(name)()


def recorded_turn_metric_specs(recorded: Mapping[str, Any], task: str, judge: str) -> dict[str, MetricSpec]:
    """per-turn metric -> its declaration, as a run recorded them (``recorded``: manifest
    ``judges``; for a run from before that record, the registered judge's): the judge's
    ``turn_metric_specs`` over its metric declarations of the same names."""
    entry = recorded.get(task, {}).get(judge)
    specs = {spec.name: spec for spec in recorded_metric_specs(recorded, task, judge)}
    if entry is not None and "turn_metrics" in entry:
        turn = [MetricSpec.model_validate(m) for m in entry["turn_metrics"]]
    else:
        from evalkit.registry import judges

        try:
            turn = list(judges.get(judge).turn_metric_specs)
        except UnknownNameError:
            turn = []
    return specs | {spec.name: spec for spec in turn}

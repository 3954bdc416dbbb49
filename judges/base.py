"""The judge interface. A judge reads a sample and the model's outputs (one per answered turn)
and returns one ``Score``. Judges are pure functions of their inputs so they can run in a process
pool (``cpu_heavy``) and be re-run on a finished run directory."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from evalkit.records import ErrorInfo, ModelOutput, Sample, Score

#: one unit of judging work: a sample and the model's outputs for its answered turns
JudgeItem = tuple[Sample, list[ModelOutput]]


def judge_error(judge: str, exc: BaseException) -> Score:
    """The score recorded when a judge could not judge (the runner's and the batcher's format)."""
    return Score(judge=judge, error=ErrorInfo(kind="judge_error", message=f"{type(exc).__name__}: {exc}"))


class Judge(ABC):
    name: str
    #: run in the process pool (decoding audio, signal processing) rather than on the event loop
    cpu_heavy: bool = False
    #: > 1: the judge scores several samples in one model call (``score_batch``), and the runner
    #: sends it to an in-process micro-batcher (``evalkit.batching``) instead of the process pool
    batch_size: int = 0
    #: how long the micro-batcher holds a partial batch waiting for more samples
    batch_max_wait_s: float = 0.1

    @abstractmethod
    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        """Score one sample. Outputs are all successful (the runner records a model failure itself)."""

    async def ascore(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        """What the runner awaits. Judges that call a model (rubric LLM judges) override this and
        await the model; plain judges are computed inline."""
        return self.score(sample, outputs)

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
        """What the run manifest records about this judge (model-based judges add model, device)."""
        return {
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "cpu_heavy": self.cpu_heavy,
            "batch_size": self.batch_size,
        }


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


def load_judge(name: str) -> Judge:
    from evalkit.registry import judges

    return judges.get(name)()

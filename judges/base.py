"""The judge interface. A judge reads a sample and the model's outputs (one per answered turn)
and returns one ``Score``. Judges are pure functions of their inputs so they can run in a process
pool (``cpu_heavy``) and be re-run on a finished run directory."""

from __future__ import annotations

from abc import ABC, abstractmethod

from evalkit.records import ModelOutput, Sample, Score


class Judge(ABC):
    name: str
    #: run in the process pool (decoding audio, signal processing) rather than on the event loop
    cpu_heavy: bool = False

    @abstractmethod
    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        """Score one sample. Outputs are all successful (the runner records a model failure itself)."""

    async def ascore(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        """What the runner awaits. Judges that call a model (rubric LLM judges) override this and
        await the model; plain judges are computed inline."""
        return self.score(sample, outputs)


def load_judge(name: str) -> Judge:
    from evalkit.registry import judges

    return judges.get(name)()

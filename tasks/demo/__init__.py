"""The ``demo`` task family: spoken questions synthesised locally, so an evaluation runs with no
download. Three tasks: ``demo-arithmetic`` (spoken sums, numeric answers), ``demo-choice``
(spoken question, lettered options as text) and ``demo-multiturn`` (three-turn conversations
whose later questions refer back to earlier turns). Audio is generated deterministically by
espeak-ng (two voices, two rates) into the cache on first use; the manifest records a fingerprint
of every sample and audio byte, and the espeak-ng version that made them.
"""

from __future__ import annotations

from typing import Any

from evalkit.records import GenerationParams, Sample, Turn
from evalkit.registry import register_task
from evalkit.tasks.base import InMemoryTask, TaskFamily
from evalkit.tasks.demo import items
from evalkit.tasks.demo.synth import DemoDataset

ASSISTANT = "You are a helpful voice assistant. The user speaks to you; reply briefly."
NUMERIC_RULE = " When the user asks for a number, end your reply with: The answer is N."


class DemoTask(InMemoryTask):
    """Common loading: build samples from ``items``, synthesise their audio once, fingerprint."""

    version = items.VERSION
    params = GenerationParams(max_tokens=96, temperature=0.0)

    def __init__(self) -> None:
        self._dataset = DemoDataset(self.version)

    def build_samples(self) -> list[Sample]:
        raise NotImplementedError

    def parse(self) -> list[Sample]:
        return self._dataset.materialise(self.name, self.build_samples())

    def dataset_info(self) -> dict[str, Any]:
        return self.generated_dataset_info(
            self.version, self._dataset.synthesiser_version(), self._dataset.root
        )


@register_task("demo-arithmetic")
class DemoArithmetic(DemoTask):
    """Spoken arithmetic questions (espeak-ng), numeric answer matching."""

    name = "demo-arithmetic"
    judges = ("numeric-spoken",)
    group_by = ("operation", "voice")
    system_prompt = ASSISTANT + NUMERIC_RULE

    def build_samples(self) -> list[Sample]:
        return [
            Sample(
                id=f"arith-{i:02d}",
                task=self.name,
                conversation=[Turn(role="user", transcript=question)],
                reference={"answer": answer},
                meta={"operation": operation},
            )
            for i, (question, answer, operation) in enumerate(items.ARITHMETIC)
        ]


@register_task("demo-choice")
class DemoChoice(DemoTask):
    """Spoken question with lettered options as text, multiple-choice matching."""

    name = "demo-choice"
    judges = ("choice",)
    group_by = ("category", "voice")
    system_prompt = ASSISTANT

    def build_samples(self) -> list[Sample]:
        samples = []
        for i, (question, choices, answer, category) in enumerate(items.CHOICE):
            options = "\n".join(f"{letter}) {text}" for letter, text in zip("ABCD", choices, strict=True))
            prompt = f"Options:\n{options}\nAnswer with the letter of the correct option."
            samples.append(
                Sample(
                    id=f"choice-{i:02d}",
                    task=self.name,
                    conversation=[Turn(role="user", transcript=question, text=prompt)],
                    reference={"answer": answer, "choices": list(choices)},
                    meta={"category": category},
                )
            )
        return samples


@register_task("demo-multiturn")
class DemoMultiturn(DemoTask):
    """Three-turn spoken conversations; later questions refer back to earlier turns."""

    name = "demo-multiturn"
    judges = ("numeric-spoken",)
    group_by = ("topic", "voice")
    system_prompt = ASSISTANT + NUMERIC_RULE

    def build_samples(self) -> list[Sample]:
        return [
            Sample(
                id=f"multi-{i:02d}",
                task=self.name,
                conversation=[Turn(role="user", transcript=q) for q, _ in turns],
                reference={"turns": [{"answer": a} for _, a in turns]},
                meta={"topic": topic},
            )
            for i, (topic, turns) in enumerate(items.MULTITURN)
        ]


register_task("demo")(
    TaskFamily(
        ["demo-arithmetic", "demo-choice", "demo-multiturn"],
        "All three demo tasks (spoken arithmetic, multiple choice, multi-turn); no download needed.",
    )
)

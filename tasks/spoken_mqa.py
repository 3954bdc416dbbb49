"""Spoken-MQA (arXiv 2505.15000; hub ``amao0o0/spoken-mqa``): spoken maths questions, numeric answers.

One task per hub split (``spoken-mqa-short-digit``, ``-long-digit``, ``-single-step``, ``-multi-step``,
``-knowledge``) because the paper reports each split on its own and their difficulty differs by an
order of magnitude: averaging them into one number would hide what the benchmark measures. The
family ``spoken-mqa`` runs the four splits of the reference evaluation script (the knowledge split is
not in it and not always on the hub, so it is opt-in).

A row holds ``context`` (the spoken question: a datasets Audio cell or a path), ``context_transcript``
(what is said: kept in ``Turn.transcript``, never sent), ``instruction`` and ``answer`` (``{"text": ...}``
dicts; a flattened export has ``instruction.text`` keys instead, and both are read). ``answer.text``
is a list of reference texts on the hub (AudioBench's current scorer reads it so) or a plain string
in a hand-made copy: both are kept as they are in ``reference["answer"]`` (a list stays a list, its
texts unstripped, as the scorer compares them), and the judges read either shape.

Scoring modes:

* ``official`` (default): the authors' reference scorer, AudioBench's ``answer_clean`` (gsm8k
  triggers) + ``compare_answer_with_groundtruth`` as ``src/dataset_src/spoken_mqa.py`` calls them,
  reproduced item by item, quirks included (judge ``spoken-mqa-official``, which reads the split
  from ``Sample.meta``: the digit splits compare with the raw answer text).
* ``gsm8k``: evalkit's generic GSM8K-style rule (judge ``numeric``: the first number after the last
  "The answer is", any case, else the last number in the reply; exact match after normalising both).
* ``math-verify``: symbolic equivalence (``1/2`` = ``0.5``), a more lenient second opinion.
"""

from __future__ import annotations

from typing import Any, ClassVar

from evalkit.errors import EvalkitError
from evalkit.records import GenerationParams, Sample, Turn
from evalkit.registry import register_task
from evalkit.tasks.base import TaskFamily
from evalkit.tasks.benchmark import BenchmarkTask
from evalkit.tasks.prompts import render_prompt
from evalkit.tasks.sources import audio_ref

HUB_ID = "amao0o0/spoken-mqa"

#: task-name suffix -> hub split, in the paper's order
SPLITS: dict[str, str] = {
    "short-digit": "short_digit",
    "long-digit": "long_digit",
    "single-step": "single_step_reasoning",
    "multi-step": "multi_step_reasoning",
    "knowledge": "knowledge",
}
#: the splits the reference evaluation script (Spoken-MQA's eval_spoken_mqa.sh) runs
FAMILY_SPLITS = ("short-digit", "long-digit", "single-step", "multi-step")


def text_field(row: dict[str, Any], key: str, what: str) -> str:
    """``row[key]["text"]`` (nested, as on the hub), ``row[f"{key}.text"]`` (a flattened export), or a
    plain string ``row[key]``; a clear error naming the row otherwise."""
    value = row.get(key)
    if isinstance(value, dict):
        value = value.get("text")
    if value is None:
        value = row.get(f"{key}.text")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise EvalkitError(f"{what}: no {key!r} text (expected {key}.text); fix the dataset row")
    return str(value).strip()


def answer_field(row: dict[str, Any], what: str) -> str | list[str]:
    """``answer.text`` as the dataset holds it: a list of reference texts (the hub; a parquet list
    column arrives as an array) or one string. A list must hold strings only and at least one."""
    value = row.get("answer")
    if isinstance(value, dict):
        value = value.get("text")
    if value is None:
        value = row.get("answer.text")
    if hasattr(value, "tolist"):  # a numpy array from a parquet list column
        value = value.tolist()
    if isinstance(value, list | tuple):
        texts = list(value)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise EvalkitError(
                f"{what}: 'answer.text' must be a text or a non-empty list of texts, got {texts!r}; "
                "fix the dataset row"
            )
        return texts
    if not isinstance(value, str) or not value.strip():
        raise EvalkitError(f"{what}: no 'answer' text (expected answer.text); fix the dataset row")
    return value


class SpokenMQATask(BenchmarkTask):
    """Common base: the row layout, prompt and scoring modes of every Spoken-MQA split."""

    hub_id = HUB_ID
    template = "spoken_mqa.j2"
    modes: ClassVar[dict[str, tuple[str, ...]]] = {
        "official": ("spoken-mqa-official",),
        "gsm8k": ("numeric",),
        "math-verify": ("math-verify",),
    }
    group_by = ("split",)
    # Greedy as in the reference run; the reasoning splits need room for a worked solution before
    # "The answer is N", which a 512-token cap would cut off for verbose models.
    params = GenerationParams(max_tokens=1024, temperature=0.0)

    def to_sample(self, row: dict[str, Any], index: int) -> Sample:
        what = f"{self.name} row {index}"
        instruction = text_field(row, "instruction", what)
        transcript = row.get("context_transcript")
        return Sample(
            id=str(row.get("id") or f"{self.split}-{index:05d}"),
            task=self.name,
            conversation=[
                Turn(
                    role="user",
                    audio=audio_ref(row.get("context"), self.source.base, f"{what} field 'context'"),
                    text=render_prompt(self.template, instruction=instruction),
                    transcript=str(transcript) if transcript is not None else None,
                )
            ],
            reference={"answer": answer_field(row, what)},
            meta={"split": self.split},
        )


def _register(suffix: str, split: str) -> type[SpokenMQATask]:
    """One registered subclass per split: only the name and default split differ."""
    name = f"spoken-mqa-{suffix}"
    cls = type(
        f"SpokenMQA_{split}",
        (SpokenMQATask,),
        {
            "name": name,
            "default_split": split,
            "__doc__": f"Spoken-MQA {split} split (spoken maths questions, numeric answers).",
            "__module__": __name__,
        },
    )
    globals()[cls.__name__] = cls  # importable by the path the manifest records
    return register_task(name)(cls)


TASKS: dict[str, type[SpokenMQATask]] = {suffix: _register(suffix, split) for suffix, split in SPLITS.items()}

register_task("spoken-mqa")(
    TaskFamily(
        [f"spoken-mqa-{suffix}" for suffix in FAMILY_SPLITS],
        "Spoken-MQA: short/long-digit arithmetic, single/multi-step reasoning (one task per split).",
    )
)

"""MMSU (Massive Multi-task Spoken Language Understanding and Reasoning): 5,000 spoken
multiple-choice items over 47 tasks (github.com/dingdongwang/MMSU_Bench, hub ``ddwang2000/MMSU``).

Registered as ``mmsu-bench``, never as plain ``mmsu``: VoiceBench ships an unrelated subset also
called "mmsu" (MMLU questions read aloud), and one name for two benchmarks would make results
impossible to tell apart in a leaderboard.

Rows: ``id``, ``audio`` (hub: an Audio column) or ``audio_path`` (the GitHub/local layout: a path
relative to the data folder), ``question``, ``choice_a``..``choice_d``, ``answer_gt`` (the correct
option's TEXT, not a letter), ``task_name``, ``category``, ``sub-category``, ``sub-sub-category``,
``linguistics_sub_discipline``. An ``audio`` cell wins over ``audio_path`` when both are present.
The hub dataset has one split, ``train`` (it is the whole benchmark, not training data); a local
copy is any folder of the official JSON/JSONL files plus the audio they name.

Prompt: the official one from ``mmsu_inference.py`` (``templates/mmsu.j2``), one user turn with the
audio and the rendered text. Modes:

- ``official`` -> ``mmsu-official``: ``mmsu_evaluation.py`` verdict for verdict: replies it cannot
  read are skipped (left out of the accuracy denominator), and an empty reply takes the letter of
  the last earlier reply that had one (the script's carry-over, applied in dataset order by
  ``finalize_scores``); its scores also carry ``accuracy_independent`` (no carry-over), so the
  summary and the report show both numbers;
- ``independent`` -> ``mmsu-independent``: the same rule item by item, an empty reply is wrong;
- ``strict`` -> ``mmsu-strict``: the same rule, empty and unreadable replies count as wrong;
- ``extract`` -> ``mmsu-extract``: evalkit's tiered letter/option-text extraction.

See ``evalkit.judges.mmsu_letter`` for the rule and where evalkit departs from the script.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from evalkit.judges.mmsu_letter import resolve_carry_over
from evalkit.records import GenerationParams, Sample, ScoreRecord, Turn
from evalkit.registry import register_task
from evalkit.tasks.benchmark import BenchmarkTask
from evalkit.tasks.prompts import render_prompt
from evalkit.tasks.sources import audio_ref

CHOICE_FIELDS = ("choice_a", "choice_b", "choice_c", "choice_d")
META_FIELDS = ("task_name", "category", "sub-category", "sub-sub-category", "linguistics_sub_discipline")


@register_task("mmsu-bench")
class MMSUTask(BenchmarkTask):
    """MMSU (Wang et al. 2025): 5,000 spoken-language MCQs, 47 tasks. Not VoiceBench's 'mmsu'."""

    name = "mmsu-bench"
    hub_id = "ddwang2000/MMSU"
    #: the hub's only split; it holds all 5,000 items
    default_split = "train"
    modes = {
        "official": ("mmsu-official",),
        "independent": ("mmsu-independent",),
        "strict": ("mmsu-strict",),
        "extract": ("mmsu-extract",),
    }
    template = "mmsu.j2"
    group_by = ("category", "sub-category", "task_name")
    #: the instruction asks for a single letter; 512 tokens leave room for models that explain anyway
    params = GenerationParams(max_tokens=512)

    @classmethod
    def finalize_scores(cls, records: Iterator[ScoreRecord]) -> Iterator[ScoreRecord]:
        """The script's carry-over, in dataset order (``resolve_carry_over``)."""
        return resolve_carry_over(records)

    def to_sample(self, row: dict[str, Any], index: int) -> Sample:
        sample_id = str(row["id"]) if row.get("id") is not None else f"mmsu-{index}"
        what = f"MMSU row {index} (id {sample_id!r})"
        cell = row.get("audio") or row.get("audio_path")
        audio = audio_ref(cell, self.source.base, what)
        # As in mmsu_inference.py: options are taken as given (a missing one renders as "None").
        options = {f: row.get(f) for f in CHOICE_FIELDS}
        text = render_prompt(self.template, question=row["question"], **options)
        return Sample(
            id=sample_id,
            task=self.name,
            conversation=[Turn(role="user", text=text, audio=audio)],
            reference={
                "answer": row["answer_gt"],
                # a missing option matches nothing: "" is never an answer_gt and never extracted
                "choices": ["" if options[f] is None else str(options[f]) for f in CHOICE_FIELDS],
            },
            meta={f: row.get(f) for f in META_FIELDS},
        )

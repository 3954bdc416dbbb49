"""MMAU (Sakshi113/MMAU): 10k audio multiple-choice questions over sound, music and speech.

- ``mmau-mini``: the 1,000-item test-mini set (hub ``gamma-lab-umd/MMAU-test-mini``), answers
  public, scored here. Modes: ``official`` (``mmau-string-match``, the evaluation.py rule) and
  ``strict`` (``mmau-choice``: one letter or one unique option text, parse failures counted).
- ``mmau-test``: the full test set (hub ``gamma-lab-umd/MMAU-test``), answers withheld. It is not
  scored: the ``mmau-submission`` judge records each prediction and ``write_submission(run_dir)``
  writes ``mmau-test-submission.json`` in the official format for the leaderboard server.

Both default to split ``test``: the hub repos publish a single split under that name, and the
official local files (``mmau-test-mini.json``, ``mmau-test.json``) contain "test" in their names,
so ``--data`` may point at the folder or at the JSON file itself. A folder holding *both* JSON files
matches both; point ``--data`` at the one file then.

Dataset version: written against ``v05.15.25``, the release that rewrote about a quarter of the
questions and answers. Numbers from different versions are not comparable and must not be mixed;
the version goes into the manifest with the rows' fingerprint, so a run says which one it used.

Audio: an ``audio`` column (datasets Audio: bytes or path) is used when present, else ``audio_id``,
a path relative to the data folder (e.g. ``./test-mini-audios/x.wav``) as in the official layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from evalkit.errors import EvalkitError
from evalkit.records import AudioRef, Sample, Turn
from evalkit.registry import register_task
from evalkit.store import RESPONSES, SCORES, RunStore, atomic_write_text
from evalkit.tasks.benchmark import BenchmarkTask
from evalkit.tasks.prompts import render_prompt
from evalkit.tasks.sources import audio_ref

DATASET_VERSION = "v05.15.25"
META_KEYS = ("task", "difficulty", "sub-category", "category", "dataset")
SUBMISSION_FILE = "mmau-test-submission.json"
#: the key of Sample.meta that carries the original row in mmau-test (see ``write_submission``)
ROW_KEY = "row"


def _audio(row: dict[str, Any], base: Path | None, what: str) -> AudioRef:
    """The hub's ``audio`` column (bytes or path) when present, else the official ``audio_id`` path."""
    if row.get("audio") is not None:
        return audio_ref(row["audio"], base, f"{what} field 'audio'")
    return audio_ref(row.get("audio_id"), base, f"{what} field 'audio_id'")


class _MMAUTask(BenchmarkTask):
    template: ClassVar[str | None] = "mmau.j2"
    default_split: ClassVar[str] = "test"
    dataset_version: ClassVar[str | None] = DATASET_VERSION
    group_by = ("task", "difficulty", "sub-category")

    def _conversation(self, row: dict[str, Any], what: str) -> tuple[list[Turn], list[str]]:
        choices = [str(c) for c in row.get("choices") or []]
        if not choices:
            raise EvalkitError(f"{what}: no choices; the row is not in the MMAU format")
        text = render_prompt(self.template, question=row["question"], choices=choices)
        turn = Turn(role="user", text=text, audio=_audio(row, self.source.base, what))
        return [turn], choices

    def _meta(self, row: dict[str, Any]) -> dict[str, Any]:
        return {key: row.get(key) for key in META_KEYS}


@register_task("mmau-mini")
class MMAUMini(_MMAUTask):
    """MMAU test-mini (1,000 sound/music/speech questions), official string-match scoring."""

    name = "mmau-mini"
    hub_id = "gamma-lab-umd/MMAU-test-mini"
    modes: ClassVar[dict[str, tuple[str, ...]]] = {
        "official": ("mmau-string-match",),
        "strict": ("mmau-choice",),
    }

    def to_sample(self, row: dict[str, Any], index: int) -> Sample:
        what = f"{self.name} row {index} (id {row.get('id')!r})"
        conversation, choices = self._conversation(row, what)
        if row.get("answer") not in choices:
            raise EvalkitError(f"{what}: answer {row.get('answer')!r} is not one of its choices")
        return Sample(
            id=str(row["id"]),
            task=self.name,
            conversation=conversation,
            reference={"answer": row["answer"], "choices": choices},
            meta=self._meta(row),
        )


@register_task("mmau-test")
class MMAUTest(_MMAUTask):
    """MMAU test (answers withheld): records predictions for the official submission file."""

    name = "mmau-test"
    hub_id = "gamma-lab-umd/MMAU-test"
    modes: ClassVar[dict[str, tuple[str, ...]]] = {"official": ("mmau-submission",)}

    @classmethod
    def write_outputs(cls, run_dir: Path) -> list[Path]:
        """Answers are withheld: every finished run writes the file to submit."""
        return [write_submission(run_dir, cls.name)]

    def to_sample(self, row: dict[str, Any], index: int) -> Sample:
        """The original row (minus a hub ``audio`` cell, which may hold megabytes) rides in
        ``meta["row"]``: ScoreRecord copies meta for every sample, model failures included, so
        ``write_submission`` needs nothing but the run directory."""
        what = f"{self.name} row {index} (id {row.get('id')!r})"
        conversation, choices = self._conversation(row, what)
        original = {k: v for k, v in row.items() if k != "audio"}
        return Sample(
            id=str(row["id"]),
            task=self.name,
            conversation=conversation,
            reference={"choices": choices},
            meta={**self._meta(row), ROW_KEY: original},
        )


def write_submission(run_dir: Path, task: str = "mmau-test") -> Path:
    """Write ``run_dir/mmau-test-submission.json``: the original rows in run order, each with a
    ``model_prediction`` (the official submission format). Rows come from scores.jsonl
    (``meta["row"]``), predictions from responses.jsonl (the reply with reasoning stripped). A sample
    whose generation failed gets ``""``: the official scorer counts it wrong, as it would a missing
    one, and the file keeps every item. Returns the file's path."""
    run_dir = Path(run_dir)
    for name in (SCORES, RESPONSES):
        if not (run_dir / name).is_file():
            raise EvalkitError(f"{run_dir}: no {name}; pass a run directory of `evalkit run --tasks {task}`")
    store = RunStore.open_existing(run_dir)
    predictions: dict[str, str] = {}
    for response in store.iter_latest_responses():  # a resumed run's retry replaces its failure
        if response.task == task:
            predictions[response.sample_id] = (response.output.text or "") if response.output.ok else ""
    rows: dict[str, tuple[int, dict[str, Any]]] = {}
    for record in store.iter_latest_scores():
        if record.task != task:
            continue
        if ROW_KEY not in record.meta:
            raise EvalkitError(f"{run_dir}: scores of {task!r} carry no original rows; was it an MMAU run?")
        rows[record.sample_id] = (record.sample_index, record.meta[ROW_KEY])
    if not rows:
        raise EvalkitError(f"{run_dir}: no scored samples of task {task!r}; nothing to submit")
    submission = [
        {**row, "model_prediction": predictions.get(sample_id, "")}
        for sample_id, (_, row) in sorted(rows.items(), key=lambda item: item[1][0])
    ]
    path = run_dir / SUBMISSION_FILE
    atomic_write_text(path, json.dumps(submission, indent=2, ensure_ascii=False) + "\n")
    return path

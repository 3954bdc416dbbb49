"""Memory stays flat because records are streamed, not held: checked by structure, not by timing or
RSS (that is ``benchmarks/scale.py``'s job). A samples file is read lazily (its first samples come
out before a later broken line is reached), the summary consumes one-shot iterators, and the run
store's "latest record" views read the files in two passes instead of loading them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.records import ModelOutput, ResponseRecord, Score, ScoreRecord, Timing, Usage
from evalkit.store import RunStore
from evalkit.summary import summarise_run
from evalkit.tasks.samples_file import SamplesFileTask


def _sample_line(i: int) -> str:
    return json.dumps(
        {
            "id": f"q{i}",
            "task": "t",
            "conversation": [{"role": "user", "text": f"What is {i} + 1?"}],
            "reference": {"answer": str(i + 1)},
            "meta": {"category": f"c{i % 2}"},
        }
    )


def test_samples_are_yielded_before_a_later_broken_line_is_read(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(
        f"{_sample_line(0)}\n{_sample_line(1)}\n{{ not json\n{_sample_line(3)}\n", encoding="utf-8"
    )
    task = SamplesFileTask(path, ("numeric",))
    stream = task.samples()
    assert isinstance(stream, Iterator)
    # a loader that parsed the whole file first would raise here, before the first sample
    assert next(stream).id == "q0"
    assert next(stream).id == "q1"
    with pytest.raises(EvalkitError, match=r"data\.jsonl:3: not a valid sample"):
        next(stream)
    assert task.count() == 4  # counted from lines, without parsing (or holding) them
    assert [s.id for s in task.samples(limit=2)] == ["q0", "q1"]  # the limit stops before line 3


def test_dataset_fingerprint_is_streamed_and_tracks_content(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(_sample_line(i) + "\n" for i in range(3)), encoding="utf-8")
    first = SamplesFileTask(path, ("numeric",)).dataset_info()
    assert first["count"] == 3 and len(first["fingerprint"]) == 64
    path.write_text("".join(_sample_line(i) + "\n" for i in (0, 1, 5)), encoding="utf-8")
    assert SamplesFileTask(path, ("numeric",)).dataset_info()["fingerprint"] != first["fingerprint"]


class OneShot:
    """An iterable that may be iterated once: a second pass (holding or re-reading) fails loudly."""

    def __init__(self, items: list) -> None:
        self._items = items
        self.used = False

    def __iter__(self) -> Iterator:
        assert not self.used, "iterated twice: the consumer must stream, not make several passes"
        self.used = True
        return iter(self._items)


def _score(i: int, judge: str) -> ScoreRecord:
    value = float(i % 3 == 0)
    score = Score(judge=judge, metrics={"accuracy": value}, passed=bool(value))
    return ScoreRecord(
        task="t", sample_id=f"s{i}", sample_index=i, meta={"category": f"c{i % 2}"}, score=score
    )


def _response(i: int) -> ResponseRecord:
    output = ModelOutput(text="x", usage=Usage(prompt_tokens=3), timing=Timing(total=0.1 * i))
    return ResponseRecord(
        task="t", sample_id=f"s{i}", sample_index=i, turn=0, request_hash="h", output=output
    )


TASK = {"name": "t", "judges": ["a", "b"], "group_by": ["category"], "primary_metric": "accuracy"}


def test_summarise_run_consumes_one_shot_iterators_like_lists() -> None:
    scores = [_score(i, judge) for i in range(20) for judge in ("a", "b")]
    responses = [_response(i) for i in range(20)]
    expected = summarise_run([TASK], scores, responses, seed=4)
    once_scores, once_responses = OneShot(scores), OneShot(responses)
    assert summarise_run([TASK], once_scores, once_responses, seed=4) == expected
    assert once_scores.used and once_responses.used
    # plain generators work too
    streamed = summarise_run([TASK], (s for s in scores), (r for r in responses), seed=4)
    assert streamed == expected and streamed["tasks"]["t"]["n_samples"] == 20


def test_latest_records_are_streamed_from_the_files(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.open_streams()
    for i in range(3):
        store.append_response(_response(i))
    retry = _response(1).model_copy(update={"request_hash": "retry"})
    store.append_response(retry)  # a resumed run's retry of s1 replaces the first record
    store.close_streams()
    latest = store.iter_latest_responses()
    assert isinstance(latest, Iterator)
    assert [(r.sample_id, r.request_hash) for r in latest] == [("s0", "h"), ("s1", "retry"), ("s2", "h")]
    assert [r.sample_id for r in store.iter_responses()] == ["s0", "s1", "s2", "s1"]

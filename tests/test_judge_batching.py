"""Batched model-based judges (issue 7): the micro-batcher, the runner routing batched judges to
it, and the ASR / MOS judges giving the same scores batched as one sample at a time."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loopback_runs import numbers_file, run_on_loopback

from evalkit.batching import MicroBatcher
from evalkit.judges.base import JudgeItem, load_judge
from evalkit.judges.numeric import NumericJudge
from evalkit.records import AudioRef, ModelOutput, Sample, Score, Turn
from evalkit.registry import register_judge


@register_judge("test-batched-numeric")
class BatchedNumericJudge(NumericJudge):
    """Numeric matching, batchable: each score records the size of the batch it was scored in.
    A sample whose id starts with "poison" makes the whole batch call raise (as a model crashing
    on one input would); scored alone it is an ordinary per-item failure."""

    name = "test-batched-numeric"
    execution = "batched"
    batch_size = 4
    batch_max_wait_s = 0.2

    def score_batch(self, items: list[JudgeItem]) -> list[Score]:
        poisoned = [s.id for s, _ in items if s.id.startswith("poison")]
        if poisoned and len(items) > 1:
            raise RuntimeError(f"batch crashed on {poisoned}")
        return [
            s.model_copy(update={"details": {**s.details, "batch": len(items)}})
            for s in super().score_batch(items)
        ]

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        if sample.id.startswith("poison"):
            raise ValueError("cannot score a poisoned sample")
        return super().score(sample, outputs)


def _item(i: int, prefix: str = "q") -> JudgeItem:
    sample = Sample(
        id=f"{prefix}{i}", task="t", conversation=[Turn(role="user", text="n?")], reference={"answer": str(i)}
    )
    return sample, [ModelOutput(text=f"The answer is {i}.")]


def _judge_batcher(batch_size: int, max_wait_s: float) -> MicroBatcher[JudgeItem, Score]:
    """What the judge executor builds for a batched judge: the judge's ``score_batch`` fed by the
    one micro-batcher."""
    return MicroBatcher(BatchedNumericJudge().score_batch, batch_size, max_wait_s)


def test_max_wait_flushes_a_partial_batch() -> None:
    async def scenario() -> tuple[list[Score], float, dict[str, Any]]:
        batcher = _judge_batcher(batch_size=8, max_wait_s=0.15)
        started = time.perf_counter()
        scores = await asyncio.gather(*(batcher.submit(_item(i)) for i in range(3)))
        elapsed = time.perf_counter() - started
        await batcher.aclose()
        return list(scores), elapsed, batcher.describe()

    scores, elapsed, info = asyncio.run(scenario())
    assert [s.passed for s in scores] == [True] * 3
    assert [s.details["batch"] for s in scores] == [3, 3, 3]  # one partial batch, not three of one
    assert info["batch_sizes"] == {"3": 1} and info["max_wait_s"] == 0.15
    assert 0.15 <= elapsed < 5  # it waited for more, then flushed what it had


def test_full_batches_do_not_wait_and_order_is_kept() -> None:
    async def scenario() -> tuple[list[Score], dict[str, Any]]:
        batcher = _judge_batcher(batch_size=4, max_wait_s=30.0)
        scores = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(_item(i)) for i in range(8))), timeout=10
        )
        await batcher.aclose()
        return list(scores), batcher.describe()

    scores, info = asyncio.run(scenario())
    assert [s.extracted for s in scores] == [str(i) for i in range(8)]
    assert info["batch_sizes"] == {"4": 2} and info["batch_failures"] == 0


def test_one_bad_item_is_that_items_error_only() -> None:
    async def scenario() -> tuple[list[Score], dict[str, Any]]:
        batcher = _judge_batcher(batch_size=4, max_wait_s=1.0)
        items = [_item(0), _item(1), _item(2, prefix="poison"), _item(3)]
        scores = await asyncio.gather(*(batcher.submit(item) for item in items))
        await batcher.aclose()
        return list(scores), batcher.describe()

    scores, info = asyncio.run(scenario())
    assert [s.error is None for s in scores] == [True, True, False, True]
    assert [s.passed for i, s in enumerate(scores) if i != 2] == [True] * 3
    assert scores[2].error is not None and scores[2].error.kind == "judge_error"
    assert "cannot score a poisoned sample" in scores[2].error.message
    assert info["batch_failures"] == 1 and "batch crashed" in info["batch_failure_messages"][0]


def test_runner_sends_batchable_judges_to_the_batcher(tmp_path: Path) -> None:
    data = numbers_file(tmp_path / "b.jsonl", 12, "b")
    store = run_on_loopback(tmp_path, data, "test-batched-numeric", concurrency=6)
    scores = [json.loads(line)["score"] for line in (store.root / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 12 and all(s["passed"] for s in scores)
    manifest = json.loads((store.root / "manifest.json").read_text())
    (info,) = manifest["judge_batching"].values()
    assert info["name"] == "test-batched-numeric" and info["items"] == 12
    assert info["max_batch"] > 1, info  # samples finishing together were scored together
    assert max(s["details"]["batch"] for s in scores) == info["max_batch"]


# -- the model-based judges (load Whisper / DistillMOS / DNSMOS) ----------------------------------
TEXTS = [
    "The train to the city leaves at seven in the morning.",
    "Purple elephants quietly painted seventeen violins underwater yesterday.",
    "I think the weather will be sunny tomorrow afternoon.",
    "Please remember to buy milk, eggs and bread.",
    "Twelve people joined the meeting at half past three.",
    "The quick brown fox jumps over the lazy dog.",
    "Could you tell me the way to the nearest station?",
    "Music helps many people relax after a long day.",
]


@pytest.fixture(scope="module")
def speech_items() -> list[JudgeItem]:
    """8 one- or two-turn samples of espeak-ng speech at different rates (clips of ~2-12 s)."""
    from evalkit.models.tts import espeak

    items: list[JudgeItem] = []
    for i, text in enumerate(TEXTS):
        outputs = [ModelOutput(text=text, audio=AudioRef(data=espeak(text, wpm=140 + 10 * i)))]
        if i % 3 == 0:  # some two-turn samples; one long reply (> 9.01 s: several DNSMOS windows)
            longer = " ".join(TEXTS[i:] + TEXTS[:i])[:400] if i == 0 else TEXTS[(i + 1) % len(TEXTS)]
            outputs.append(ModelOutput(text=longer, audio=AudioRef(data=espeak(longer, wpm=160))))
        items.append((Sample(id=f"s{i}", task="t", conversation=[Turn(role="user", text="hi")]), outputs))
    return items


def _bad_item() -> JudgeItem:
    broken = AudioRef(data=b"RIFF this is not a wav file")
    return Sample(id="bad", task="t", conversation=[Turn(role="user", text="hi")]), [
        ModelOutput(text="hello there", audio=broken)
    ]


@pytest.mark.slow
def test_asr_batched_equals_single_item(speech_items: list[JudgeItem]) -> None:
    judge = load_judge("asr")
    single = [judge.score(*item) for item in speech_items]
    batch = judge.score_batch([*speech_items[:4], _bad_item(), *speech_items[4:]])
    assert batch[4].error is not None and batch[4].error.kind == "judge_error"
    batched = batch[:4] + batch[5:]
    assert all(s.error is None for s in batched)
    for one, many in zip(single, batched, strict=True):
        # identical transcripts and word times, so identical metrics
        assert one.details["turn_asr"] == many.details["turn_asr"]
        assert one.metrics == many.metrics
    assert np.mean([s.metrics["wer"] for s in single]) < 0.35  # and it still recognises the speech
    assert judge.describe()["device"] == "cpu"


@pytest.mark.slow
def test_naturalness_batched_equals_single_item_and_the_libraries(speech_items: list[JudgeItem]) -> None:
    import torch
    from speechmos import dnsmos

    from evalkit import audio as audio_io
    from evalkit.judges.naturalness import RATE_HZ, _distillmos_class, dnsmos_model

    judge = load_judge("naturalness")
    single = [judge.score(*item) for item in speech_items]
    batch = judge.score_batch([_bad_item(), *speech_items])
    assert batch[0].error is not None and batch[0].error.kind == "judge_error"
    for one, many in zip(single, batch[1:], strict=True):
        assert many.error is None
        for row_one, row_many in zip(one.details["per_turn"], many.details["per_turn"], strict=True):
            for key, value in row_one.items():
                assert row_many[key] == pytest.approx(value, abs=1e-4), key
    # reference: each library's own per-clip call (DistillMOS segmenting in its forward)
    with io.StringIO() as quiet, contextlib.redirect_stdout(quiet):
        reference_model = _distillmos_class()()
    reference_model.eval()
    for score, (_, outputs) in zip(single, speech_items, strict=True):
        for row, output in zip(score.details["per_turn"], outputs, strict=True):
            assert output.audio is not None
            clip, _ = audio_io.load(output.audio, sample_rate=RATE_HZ)
            clip = np.clip(clip, -1.0, 1.0).astype(np.float32)
            with torch.inference_mode():
                expected = float(reference_model(torch.from_numpy(clip)[None, :]).item())
            assert row["distillmos"] == pytest.approx(expected, abs=1e-4)
            dns = dnsmos.DNSMOS.__call__(dnsmos_model(), clip, RATE_HZ, False)
            assert row["dnsmos_ovrl"] == pytest.approx(float(dns["ovrl_mos"]), abs=1e-4)
            assert row["dnsmos_bak"] == pytest.approx(float(dns["bak_mos"]), abs=1e-4)
            assert row["dnsmos_p808"] == pytest.approx(float(dns["p808_mos"]), abs=1e-4)
    assert judge.describe()["distillmos_device"] == "cpu"

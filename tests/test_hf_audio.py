"""The ``hf:`` transformers adapter: dispatch by checkpoint, Qwen2-Audio from audio + text, batching.

The models are tiny and randomly initialised (``evalkit.testing.tiny_models``; a 2-layer Qwen2 for the
text path) on SmolLM2's real tokenizer, built once per session in the session's cache. Their words
are noise, but the whole real pipeline runs on CPU: chat template, processor, audio token expansion,
encoder, left-padded batched ``generate``. What is checked is plumbing that a real checkpoint shares:
counts, determinism, and that batching does not change greedy answers.

The micro-batcher and the option parsing are tested on their own without any model (fast tier).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evalkit.audio import wav_bytes
from evalkit.batching import MicroBatcher
from evalkit.errors import EvalkitError, SpecError
from evalkit.models.base import load_model
from evalkit.models.hf_text import HFTextAdapter, split_spec
from evalkit.records import AudioPart, AudioRef, ChatRequest, GenerationParams, Message, TextPart

# -- fast tier: no model ---------------------------------------------------------------------------


def test_spec_options_parse_like_every_other_spec() -> None:
    name, opts = split_spec("/models/q,device=cpu,dtype=bfloat16,batch=4", {"api_key_env": "X"})
    assert name == "/models/q"
    assert (opts.device, opts.dtype, opts.batch) == ("cpu", "bfloat16", 4)
    name, opts = split_spec("Qwen/Qwen2-Audio-7B-Instruct", {"batch": 2})  # keyword options are defaults
    assert name == "Qwen/Qwen2-Audio-7B-Instruct" and opts.batch == 2 and opts.device == "auto"
    for bad, words in [
        ("/m,dtype=int8", "dtype='int8'"),
        ("/m,batch=0", "batch='0'"),
        ("/m,batch=many", "batch='many'"),
        ("/m,device=tpu", "device='tpu'"),
        ("/m,colour=red", "unknown option 'colour'"),
        ("device=cpu", "needs a model first"),
        ("/m,batch", "expected key=value"),
    ]:
        with pytest.raises(SpecError) as info:
            split_spec(bad, {})
        assert words in str(info.value), (bad, str(info.value))


def test_micro_batcher_groups_by_key_caps_size_and_isolates_a_failing_item() -> None:
    calls: list[list[tuple[str, int]]] = []

    def run(items: list[tuple[str, int]]) -> list[int]:
        calls.append(items)
        time.sleep(0.02)  # while this batch runs, later submissions queue up
        if any(v < 0 for _, v in items):
            raise ValueError("negative input")
        return [v * 10 for _, v in items]

    batcher: MicroBatcher[tuple[str, int], int] = MicroBatcher(run, max_batch=3, max_wait_s=0.01)

    async def main() -> list[Any]:
        items = [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5)]
        jobs = [batcher.submit(item, key=item[0]) for item in items]
        return await asyncio.gather(*jobs, return_exceptions=True)

    assert asyncio.run(main()) == [10, 20, 30, 40, 50]
    assert [len(c) for c in calls] == [3, 1, 1]  # 'a' x3 (cap), then the rest in arrival order
    assert {k for k, _ in calls[0]} == {"a"} and all(len({k for k, _ in c}) == 1 for c in calls)

    async def failing() -> list[Any]:
        return await asyncio.gather(*(batcher.submit(("a", v)) for v in (1, -1)), return_exceptions=True)

    # a second event loop on the same batcher: state is per loop, so nothing leaks from the first;
    # the batch raises, so each item runs again alone and only the bad one fails
    results = asyncio.run(failing())
    assert results[0] == 10 and isinstance(results[1], ValueError)
    assert [len(c) for c in calls[3:]] == [2, 1, 1] and batcher.stats.batch_failures == 1
    assert asyncio.run(batcher.submit(("a", 7))) == 70  # and it still works afterwards


# -- slow tier: tiny random checkpoints --------------------------------------------------------------


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    from evalkit.models.hf_text import smollm2_tokenizer

    return smollm2_tokenizer()


@pytest.fixture(scope="session")
def qwen2_audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from evalkit.testing.tiny_models import build_tiny_qwen2_audio

    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny") / "tiny-qwen2-audio")


@pytest.fixture(scope="session")
def text_lm_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    from evalkit.testing.tiny_models import build_tiny_qwen2_text

    return build_tiny_qwen2_text(tmp_path_factory.mktemp("tiny-qwen2-text"), tokenizer)


def clip(seconds: float, seed: int) -> AudioRef:
    """Noise at 22.05 kHz, so the adapter's resampling to 16 kHz is exercised too."""
    samples = np.random.default_rng(seed).uniform(-0.3, 0.3, int(22050 * seconds)).astype(np.float32)
    return AudioRef(data=wav_bytes(samples, 22050))


def audio_request(seconds: float, question: str, seed: int = 0, **params: Any) -> ChatRequest:
    content = [AudioPart(audio=clip(seconds, seed)), TextPart(text=question)]
    return ChatRequest(
        messages=[Message(role="user", content=content)],
        params=GenerationParams(**{"max_tokens": 8, "temperature": 0.0, **params}),
    )


class CountingGenerate:
    """Instrumentation: wraps the real ``model.generate`` to record, per call, each row's prompt
    (padding removed) and generated ids."""

    def __init__(self, model: Any):
        self.real = model.generate
        self.calls: list[list[tuple[list[int], list[int]]]] = []
        self.lock = threading.Lock()
        model.generate = self

    def __call__(self, **kwargs: Any) -> Any:
        out = self.real(**kwargs)
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        rows = [(ids[r][mask[r] == 1].tolist(), out[r, ids.shape[1] :].tolist()) for r in range(ids.shape[0])]
        with self.lock:
            self.calls.append(rows)
        return out


async def gather(adapter: Any, requests: list[ChatRequest]) -> list[Any]:
    return await asyncio.gather(*(adapter.generate(r) for r in requests))


@pytest.mark.slow
def test_qwen2_audio_answers_audio_plus_text_greedily(qwen2_audio_dir: Path) -> None:
    from evalkit.models.hf_audio import Qwen2AudioAdapter

    adapter = load_model(f"hf:{qwen2_audio_dir},device=cpu,dtype=auto,batch=4")
    assert isinstance(adapter, Qwen2AudioAdapter)
    assert adapter.capabilities.audio_in and adapter.capabilities.batching
    assert adapter.spec == f"hf:{qwen2_audio_dir}"  # float32 on CPU: nothing to add to the cache key
    assert adapter.max_concurrency == 8
    request = audio_request(1.0, "What do you hear?")
    first = asyncio.run(adapter.generate(request))
    second = asyncio.run(adapter.generate(request))
    assert first.ok and first.text and first.text.strip()
    assert first.text == second.text  # greedy: same request, same answer
    assert 0 < (first.usage.completion_tokens or 0) <= 8
    # 1 s of audio is 25 <|AUDIO|> tokens after the processor's expansion, plus the chat template
    assert (first.usage.prompt_tokens or 0) > 25 + 10
    assert first.trace["batch_size"] == 1
    info = adapter.describe()
    assert info["model_type"] == "qwen2_audio" and info["device"] == "cpu" and info["dtype"] == "float32"


@pytest.mark.slow
def test_concurrent_requests_share_one_padded_generate_and_match_single_runs(qwen2_audio_dir: Path) -> None:
    adapter = load_model(f"hf:{qwen2_audio_dir},device=cpu,batch=3")
    asyncio.run(adapter.check())
    # The batch flushes as soon as the third request is ready; the long bound only keeps a loaded
    # machine, slow to decode the three clips, from splitting it.
    adapter.batcher.max_wait_s = 5.0
    counter = CountingGenerate(adapter._model)
    # different audio lengths and question lengths: rows get different amounts of left padding
    requests = [
        audio_request(0.5, "Name the sound.", seed=1),
        audio_request(2.0, "Is anyone speaking in this recording, and if so, in what language?", seed=2),
        audio_request(1.2, "Count the beeps.", seed=3),
    ]
    batched = asyncio.run(gather(adapter, requests))
    assert [len(rows) for rows in counter.calls] == [3]
    # rows are in the order requests finished decoding; find each request's row by its prompt
    generated_in_batch = {tuple(prompt): new for prompt, new in counter.calls[0]}
    adapter.batcher.max_wait_s = 0.0  # alone, each request now runs at once
    singles = [asyncio.run(adapter.generate(r)) for r in requests]
    assert [len(rows) for rows in counter.calls] == [3, 1, 1, 1]
    for k, (together, alone) in enumerate(zip(batched, singles, strict=True)):
        assert together.trace["batch_size"] == 3 and alone.trace["batch_size"] == 1
        [(prompt, alone_ids)] = counter.calls[1 + k]
        # Padding must not change the answer: the same generated ids, then the same record.
        n = alone.usage.completion_tokens
        assert generated_in_batch[tuple(prompt)][:n] == alone_ids[:n]
        assert together.text == alone.text
        assert together.usage == alone.usage
    prompts = [o.usage.prompt_tokens for o in batched]
    assert len(set(prompts)) == 3  # the rows really were of different lengths


@pytest.mark.slow
def test_sampling_honours_the_seed(qwen2_audio_dir: Path) -> None:
    adapter = load_model(f"hf:{qwen2_audio_dir},device=cpu")
    request = audio_request(0.5, "Describe it.", temperature=1.0, seed=7, max_tokens=12)
    first = asyncio.run(adapter.generate(request))
    second = asyncio.run(adapter.generate(request))
    assert first.ok and first.text == second.text


@pytest.mark.slow
def test_text_checkpoint_goes_through_the_text_path(text_lm_dir: Path) -> None:
    adapter = load_model(f"hf:{text_lm_dir},device=cpu,batch=2")
    assert type(adapter) is HFTextAdapter
    assert not adapter.capabilities.audio_in and adapter.capabilities.batching
    requests = [
        ChatRequest(
            messages=[Message(role="user", content=[TextPart(text=question)])],
            params=GenerationParams(max_tokens=6),
        )
        for question in ("What is 7 plus 5?", "Say hello in three languages, please.")
    ]
    together = asyncio.run(gather(adapter, requests))
    alone = [asyncio.run(adapter.generate(r)) for r in requests]
    assert [o.trace["batch_size"] for o in together] == [2, 2]
    assert [o.text for o in together] == [o.text for o in alone]
    assert all(o.ok and 0 < (o.usage.completion_tokens or 0) <= 6 for o in together)


@pytest.mark.slow
def test_audio_task_on_a_text_checkpoint_fails_fast(text_lm_dir: Path, tmp_path: Path) -> None:
    from evalkit.runner import RunConfig, evaluate_async

    samples = tmp_path / "samples.jsonl"
    samples.write_text(
        '{"id": "s1", "task": "t", "conversation": [{"role": "user", "text": "1+1?"}],'
        ' "reference": {"answer": "2"}}\n'
    )
    config = RunConfig(
        model=f"hf:{text_lm_dir},device=cpu",
        tasks=f"jsonl:path={samples},judges=numeric",
        out_dir=str(tmp_path / "runs"),
        use_cache=False,
    )
    started = time.monotonic()
    with pytest.raises(EvalkitError, match="needs audio_in but model 'hf:.*' lacks it"):
        asyncio.run(evaluate_async(config, show_progress=False))
    assert time.monotonic() - started < 10  # no weights were loaded
    assert not (tmp_path / "runs").exists()

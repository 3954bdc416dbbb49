"""``finish_reason`` from the in-process transformers adapter: a row that ran out of
``max_tokens`` is ``length`` (and so truncated), a row that ended on EOS or a stop string is
``stop``. A tiny randomly initialised Qwen2 text LM (as in test_hf_audio.py) never says EOS early,
so its rows run to the budget; a stop string every reply contains ends them early."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from evalkit.models.base import load_model
from evalkit.records import ChatRequest, GenerationParams, Message, TextPart

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_text_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from evalkit.models.hf_text import smollm2_tokenizer
    from evalkit.testing.tiny_models import build_tiny_qwen2_text

    return build_tiny_qwen2_text(tmp_path_factory.mktemp("tiny-qwen2-finish"), smollm2_tokenizer())


def ask(adapter, max_tokens: int, stop: list[str]):
    request = ChatRequest(
        messages=[Message(role="user", content=[TextPart(text="Count to ten.")])],
        params=GenerationParams(max_tokens=max_tokens, stop=stop),
    )
    return asyncio.run(adapter.generate(request))


@pytest.mark.slow
def test_hf_rows_that_hit_the_budget_are_length_else_stop(tiny_text_lm: Path) -> None:
    adapter = load_model(f"hf:{tiny_text_lm},device=cpu,batch=1")
    cut = ask(adapter, 5, [])
    assert cut.usage.completion_tokens == 5
    assert (cut.finish_reason, cut.truncated) == ("length", True)
    longer = ask(adapter, 12, [])
    stop = longer.text.strip()[:1]  # a stop string the reply is known to contain
    stopped = ask(adapter, 12, [stop])
    assert (stopped.finish_reason, stopped.truncated) == ("stop", False)

"""What does batching buy the ``hf:`` adapter? Batch 1 against batch N, side by side.

The same R audio+text requests go through the real adapter (``load_model("hf:PATH,batch=B")``:
chat template, audio decoding, processor, micro-batcher, padded ``generate``) twice: once with
``batch=1`` (one sequence per ``generate``) and once with ``batch=N``. Requests are issued the way
the runner issues them, with at most ``adapter.max_concurrency`` in flight. Each measurement is
preceded by a warm-up request (weights loaded, kernels chosen) that is not timed.

Without ``--model`` a tiny random Qwen2-Audio (``evalkit.testing.tiny_models.build_tiny_qwen2_audio``) is
built in a temporary folder: its answers are noise and its per-token cost is almost all overhead,
so it measures the pipeline, not a model. Give ``--model /path/to/Qwen2-Audio-7B-Instruct`` on a GPU
for numbers that mean something. Greedy decoding; ``--max-tokens`` caps every answer, and since a
random model rarely emits EOS, every request then costs the same number of decode steps.

    python benchmarks/hf_gpu.py [--model PATH] [--device auto] [--dtype auto] [--batch 8]
                                [--requests 32] [--max-tokens 32] [--seconds 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def requests_for(n: int, seconds: float, max_tokens: int) -> list[Any]:
    """N distinct requests: noise clips of slightly different lengths (so rows are padded
    differently, as real clips are) and a question."""
    from evalkit.audio import wav_bytes
    from evalkit.records import AudioPart, AudioRef, ChatRequest, GenerationParams, Message, TextPart

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        length = int(16000 * seconds * (0.8 + 0.4 * rng.random()))
        clip = AudioRef(data=wav_bytes(rng.uniform(-0.3, 0.3, length).astype(np.float32), 16000))
        content = [AudioPart(audio=clip), TextPart(text=f"Question {i}: what do you hear?")]
        out.append(
            ChatRequest(
                messages=[Message(role="user", content=content)],
                params=GenerationParams(max_tokens=max_tokens, temperature=0.0),
            )
        )
    return out


async def serve(adapter: Any, requests: list[Any]) -> list[Any]:
    """As the runner does: a semaphore of the adapter's ``max_concurrency``."""
    slots = asyncio.Semaphore(adapter.max_concurrency or len(requests))

    async def one(request: Any) -> Any:
        async with slots:
            return await adapter.generate(request)

    return await asyncio.gather(*(one(r) for r in requests))


def measure(model: str, device: str, dtype: str, batch: int, requests: list[Any]) -> dict[str, Any]:
    from evalkit.models.base import load_model

    adapter = load_model(f"hf:{model},device={device},dtype={dtype},batch={batch}")
    started = time.perf_counter()
    asyncio.run(adapter.check())
    load_s = time.perf_counter() - started
    asyncio.run(adapter.generate(requests[0]))  # warm-up, not timed
    started = time.perf_counter()
    outputs = asyncio.run(serve(adapter, requests))
    seconds = time.perf_counter() - started
    failed = [o for o in outputs if not o.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} requests failed, first: {failed[0].error}")
    tokens = sum(o.usage.completion_tokens or 0 for o in outputs)
    info = adapter.describe()
    asyncio.run(adapter.aclose())
    return {
        "batch": batch,
        "device": info["device"],
        "dtype": info["dtype"],
        "requests": len(requests),
        "load_s": round(load_s, 2),
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(requests) / seconds, 3),
        "completion_tokens_per_s": round(tokens / seconds, 1),
        "mean_batch": round(statistics.mean(o.trace["batch_size"] for o in outputs), 2),
        "prompt_tokens_mean": round(statistics.mean(o.usage.prompt_tokens or 0 for o in outputs), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint folder or hub id (default: a tiny random Qwen2-Audio)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto, bfloat16, float16, float32")
    parser.add_argument("--batch", type=int, default=8, help="the batched side (default 8)")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="mean clip length")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    requests = requests_for(args.requests, args.seconds, args.max_tokens)
    with tempfile.TemporaryDirectory(prefix="evalkit-hf-bench-") as tmp:
        model = args.model
        if model is None:
            from evalkit.testing.tiny_models import build_tiny_qwen2_audio

            model = str(build_tiny_qwen2_audio(Path(tmp) / "tiny-qwen2-audio"))
        rows = [measure(model, args.device, args.dtype, b, requests) for b in (1, args.batch)]

    keys = ["device", "dtype", "requests", "load_s", "seconds", "requests_per_s"]
    keys += ["completion_tokens_per_s", "mean_batch", "prompt_tokens_mean"]
    print(f"model: {args.model or 'tiny random Qwen2-Audio'}   max_tokens={args.max_tokens}")
    print(f"{'':26}" + "".join(f"{'batch=' + str(r['batch']):>14}" for r in rows))
    for key in keys:
        print(f"{key:26}" + "".join(f"{r[key]!s:>14}" for r in rows))
    speedup = rows[1]["requests_per_s"] / rows[0]["requests_per_s"]
    print(f"{'speed-up':26}{'':>14}{speedup:>13.2f}x")
    if args.json is not None:
        import torch

        result = {
            "model": args.model or "tiny-random-qwen2-audio",
            "max_tokens": args.max_tokens,
            "rows": rows,
            "speedup": round(speedup, 3),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

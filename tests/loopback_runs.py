"""In-process runs against the loopback OpenAI-compatible server, for tests that check what the
runner does with judges (the loopback model answers "The answer is N." with the last number it
heard, so numeric judges pass every sample)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evalkit.runner import RunConfig, evaluate
from evalkit.store import RunStore
from evalkit.testing.openai_server import OpenAIServer


def numbers_file(path: Path, n: int, task: str) -> Path:
    """``n`` one-turn samples asking to repeat the numbers 0..n-1, each its own reference."""
    rows: list[dict[str, Any]] = [
        {
            "id": f"q{i}",
            "task": task,
            "conversation": [{"role": "user", "text": f"Please repeat the number {i}."}],
            "reference": {"answer": str(i)},
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_on_loopback(tmp_path: Path, data: Path, judges: str, **config: Any) -> RunStore:
    """``data`` judged by ``judges`` (``a+b``), the model being the loopback server; no cache."""
    with OpenAIServer() as server:
        run = RunConfig(
            model=f"openai:loopback@{server.base_url}",
            tasks=f"jsonl:path={data},judges={judges}",
            out_dir=str(tmp_path / "runs"),
            use_cache=False,
            **config,
        )
        return evaluate(run, argv=["test"], show_progress=False)

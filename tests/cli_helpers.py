"""Helpers for tests that drive the real ``evalkit run`` command in a subprocess and read the run
directory it writes (the files are the API, so tests read them as users' scripts would)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "evalkit.cli", "run", "--no-progress"]


def evalkit_run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the CLI to completion (the environment, with the session's EVALKIT_CACHE_DIR, is inherited)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    )


def only_run_dir(out: Path) -> Path:
    [run_dir] = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete lines only: a line being written when the process was killed has no newline yet."""
    lines = path.read_text(encoding="utf-8").split("\n")[:-1] if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))

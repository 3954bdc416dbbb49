"""Shared fixtures. Every test session gets its own evalkit cache (demo audio, response cache,
converted models) so tests never read a developer's cache or each other's leftovers; the slow
tier may point ``EVALKIT_TEST_MODEL_CACHE`` at a folder that keeps the converted SmolLM2 between
sessions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def evalkit_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evalkit-cache")
    keep = os.environ.get("EVALKIT_TEST_MODEL_CACHE")
    if keep:  # converted models only; responses and demo audio stay per session
        Path(keep).mkdir(parents=True, exist_ok=True)
        (root / "models").symlink_to(Path(keep).resolve(), target_is_directory=True)
    previous = os.environ.get("EVALKIT_CACHE_DIR")
    os.environ["EVALKIT_CACHE_DIR"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("EVALKIT_CACHE_DIR", None)
    else:
        os.environ["EVALKIT_CACHE_DIR"] = previous

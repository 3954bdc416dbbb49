"""Where evalkit keeps things between runs: ``$EVALKIT_CACHE_DIR`` or ``$XDG_CACHE_HOME/evalkit``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("EVALKIT_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "evalkit"


def response_cache_path() -> Path:
    """The default response cache file, shared by the runner and by model-calling judges."""
    return cache_dir() / "responses.sqlite"

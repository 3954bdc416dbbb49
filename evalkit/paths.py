"""Where evalkit keeps things between runs: ``$EVALKIT_CACHE_DIR`` or ``$XDG_CACHE_HOME/evalkit``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
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


def publish_folder(folder: Path, build: Callable[[Path], None]) -> None:
    """Create ``folder`` all at once: ``build`` fills a temporary sibling, which is renamed into
    place. A half-written folder is never seen, and when two processes race the first rename wins
    (the loser's identical copy is discarded)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(tmp)
        os.replace(tmp, folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

"""No local paths on a published site.

Run manifests name the builder's folders (the run directory, data folders, ``--allow-path``
roots, the cache, the command line), and copied reports can repeat them (a dataset id that is a
file path, an "audio not shown" note). A site is published, so every text file written into it is
rewritten with each such folder replaced by ``…``: the folders are gathered from the runs (their
directories and every absolute path string their manifests and summaries hold, with each one's
parent), plus the home and working directories. Data URIs (embedded audio) are left untouched, so
a folder name can never corrupt them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: what a local folder becomes on the site
HIDDEN = "…"
#: files of the site that are text and may carry paths (plotly.js and audio are not rewritten)
TEXT_SUFFIXES = (".html", ".json", ".js", ".md")


def _strings(value: Any) -> Iterable[str]:
    """Every string inside a JSON value (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


_ABSOLUTE = re.compile(r"(?<![\w.:/+-])/(?:[^\s\"'<>,;=|()\[\]{}]+)")


def local_folders(run_dirs: Iterable[Path], documents: Iterable[Any]) -> list[str]:
    """The folders to hide, longest first: each run directory and its parent, each absolute path
    named in ``documents`` (manifests, summaries) and its parent, home and the working directory."""
    found: set[str] = set()
    for run_dir in run_dirs:
        for path in (Path(run_dir).absolute(), Path(run_dir).resolve()):
            found.update({str(path), str(path.parent)})
    for text in (s for doc in documents for s in _strings(doc)):
        for match in _ABSOLUTE.finditer(text):
            path = match.group(0).rstrip("/.")
            if path.count("/") >= 2:  # "/v1" of a URL path or "/s" of a unit is no folder
                found.update({path, os.path.dirname(path)})
    found.update({str(Path.home()), str(Path.cwd())})
    return sorted((f for f in found if f.count("/") >= 2 or f == str(Path.home())), key=len, reverse=True)


def scrubber(folders: list[str]) -> re.Pattern[str]:
    """One pattern: a data URI (kept) or any of ``folders`` (hidden). Every folder starts with
    "/", so the alternatives sit behind one "/": the engine tries them only at a slash, not at
    every character of a multi-megabyte report."""
    alternatives = "|".join(re.escape(f[1:]) for f in folders) or r"(?!x)x"
    return re.compile(rf"data:[^\"'\s)]*|/(?:{alternatives})")


def scrub_text(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub(lambda m: m.group(0) if m.group(0).startswith("data:") else HIDDEN, text)


def scrub_site(out: Path, folders: list[str]) -> list[Path]:
    """Rewrite every text file of the site without the local folders; returns the files changed."""
    pattern = scrubber(folders)
    changed = []
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.suffix in TEXT_SUFFIXES and path.name != "plotly.min.js":
            text = path.read_text(encoding="utf-8")
            clean = scrub_text(text, pattern)
            if clean != text:
                path.write_text(clean, encoding="utf-8")
                changed.append(path)
    return changed

"""Files the site carries besides its pages: each run's report (with every local file it refers
to), plotly.js once, and the data as JSON and as JS.

Why copy reports: the site must work from ``file://`` and from any static host, where a link back
into the original run folder would not resolve. ``report.html`` embeds small audio as data URIs
and links larger files relative to the run folder, so the report is copied into
``site/runs/<run_id>/`` together with every relative ``src``/``href`` it names that exists inside
the run folder: the same relative links then resolve in the site.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from evalkit.store import MANIFEST, SUMMARY

PLOTLY_JS = "assets/plotly.min.js"


class _LocalRefs(HTMLParser):
    """Collect relative URLs from ``src``/``href`` attributes (data:, http(s):, #anchors skipped):
    attribute value -> the file path it names (percent-decoded, query and fragment dropped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name not in ("src", "href") or not value:
                continue
            parts = urlsplit(value)
            if parts.scheme or parts.netloc or not parts.path:
                continue
            self.refs[value] = unquote(parts.path)


def local_refs(html: str) -> dict[str, str]:
    parser = _LocalRefs()
    parser.feed(html)
    return parser.refs


def copy_run_files(run_dir: Path, dest: Path) -> dict[str, Any]:
    """Copy report.html (if any), manifest and summary, and every local file the report links.

    Files inside the run folder keep their relative place, so the report's links stay as they are.
    Files outside it (dataset audio the report links as ``../../data/x.wav``) are copied into
    ``linked/`` beside the copy and the report's links to them are rewritten: a link climbing out
    of ``runs/<run_id>/`` would not resolve on a static host. Returns what was copied and what the
    report names that does not exist."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, SUMMARY):
        shutil.copy2(run_dir / name, dest / name)
    report = run_dir / "report.html"
    if not report.is_file():
        return {"report": None, "copied": [], "missing": []}
    html = report.read_text(encoding="utf-8")
    root = run_dir.resolve()
    copied, missing = [], []
    for raw, path in sorted(local_refs(html).items()):
        source = (run_dir / path).resolve()
        if source == report.resolve():
            continue
        if not source.is_file():
            missing.append(path)
            continue
        if source.is_relative_to(root):
            target = dest / source.relative_to(root)
        else:
            digest = hashlib.sha1(str(source).encode()).hexdigest()[:10]
            rel = f"linked/{digest}-{source.name}"
            target = dest / rel
            for attr in ("src", "href"):
                html = html.replace(f'{attr}="{raw}"', f'{attr}="{quote(rel)}"')
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(path)
    (dest / "report.html").write_text(html, encoding="utf-8")
    return {"report": "report.html", "copied": copied, "missing": missing}


def write_plotly(out: Path) -> Path:
    """plotly.js, once per site (~4.6 MB), so pages work offline. Imported here, not at startup."""
    from plotly.offline import get_plotlyjs

    path = out / PLOTLY_JS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(get_plotlyjs(), encoding="utf-8")
    return path


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element or a JS file: ``</script>``, ``<!--`` and the JS line
    separators cannot end or break the script, whatever model or user text the data holds."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def write_data(out: Path, name: str, value: Any) -> tuple[Path, Path]:
    """``data/NAME.json`` for scripts and hosts, and ``data/NAME.js`` (``window.EVALKIT_DATA.NAME``)
    for pages opened from ``file://``, where browsers refuse ``fetch()`` of local JSON."""
    folder = out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{name}.json"
    json_path.write_text(
        json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    js_path = folder / f"{name}.js"
    js_path.write_text(
        "window.EVALKIT_DATA = window.EVALKIT_DATA || {};\n"
        f"window.EVALKIT_DATA[{json.dumps(name)}] = {script_json(value)};\n",
        encoding="utf-8",
    )
    return json_path, js_path

"""Files the site carries besides its pages: each run's report (with the audio it links inside
its run folder), plotly.js once, and the data as JSON and as JS.

Why copy reports: the site must work from ``file://`` and from any static host, where a link back
into the original run folder would not resolve. ``report.html`` embeds small audio as data URIs
and links larger files relative to the run folder, so the report is copied into
``site/runs/<run_id>/`` together with the relative ``src``/``href`` targets it names that are
audio inside the run folder: the same relative links then resolve in the site.

What a site may contain is deliberately narrow, because a site is published: only files inside
the run directory or, for input clips (which reports link where they lie rather than embed),
inside the data folders its manifest recorded, carried once per content into ``site/inputs/``
(symlinks resolved, ``evalkit.confine``); and of those only audio, written
decoded and re-encoded (never the raw bytes of whatever a link names). Every other link is
removed from the copied report (an ``<audio>`` becomes a note) and listed as dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from markupsafe import escape

from evalkit.audio import AudioError, reencoded_wav
from evalkit.confine import PathEscapeError, confine
from evalkit.run_files import Manifest, load_run_file
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


#: what replaces an ``<audio>`` whose file the site does not carry
DROPPED_AUDIO_NOTE = '<span class="warn audio-not-shown">audio not copied into the site</span>'


def _input_roots(run_dir: Path) -> list[Path]:
    """The data folders the run's manifest recorded (``path_roots`` of every task): input clips
    the report links there are the dataset's own audio, which the report showed."""
    manifest = load_run_file(run_dir / MANIFEST, Manifest, "rerun the evaluation or restore manifest.json")
    return [Path(r).resolve() for t in manifest.tasks for r in t.path_roots]


def _carry_input(source: Path, wav: bytes, inputs: Path, dest: Path) -> str:
    """An input clip's re-encoded WAV in the site's shared ``inputs/`` folder, named by its
    content digest (so a clip that several runs link is stored once); its link from ``dest``."""
    target = inputs / f"{hashlib.sha256(wav).hexdigest()[:20]}.wav"
    if not target.exists():
        inputs.mkdir(parents=True, exist_ok=True)
        target.write_bytes(wav)
    return quote(Path(os.path.relpath(target, dest)).as_posix())


def copy_run_files(run_dir: Path, dest: Path, inputs: Path | None = None) -> dict[str, Any]:
    """Copy report.html (if any), manifest and summary, and the audio the report links inside
    the run folder, re-encoded as WAV at the same relative place (a non-``.wav`` name gets
    ``.wav`` appended and its link rewritten). With ``inputs`` (the site's shared folder), input
    clips the report links inside the data folders the manifest recorded are carried too,
    re-encoded, once per content (reports link input clips rather than embed them). Returns what
    was copied, what was ``dropped`` (``{path: why}``: outside the run folder and those data
    folders, or not audio; its links removed from the copy) and what the report names that does
    not exist."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, SUMMARY):
        shutil.copy2(confine(run_dir / name, [run_dir], f"{run_dir} {name}"), dest / name)
    root = run_dir.resolve()
    data_roots = _input_roots(run_dir) if inputs is not None else []
    try:
        report = confine(run_dir / "report.html", [root], "report.html")
    except PathEscapeError:
        return {"report": None, "copied": [], "missing": [], "dropped": {"report.html": "outside the run"}}
    if not report.is_file():
        return {"report": None, "copied": [], "missing": [], "dropped": {}}
    html = report.read_text(encoding="utf-8")
    copied: list[str] = []
    missing: list[str] = []
    dropped: dict[str, str] = {}
    for raw, path in sorted(local_refs(html).items()):
        try:
            source = confine(path, [root, *data_roots], "link", base=root)
        except PathEscapeError:
            dropped[path] = "outside the run directory and its data folders"
            html = _without_link(html, raw)
            continue
        if source == report:
            continue
        if not source.is_file():
            missing.append(path)
            continue
        try:
            wav = reencoded_wav(source)
        except AudioError:
            dropped[path] = "not audio"
            html = _without_link(html, raw)
            continue
        if inputs is not None and not source.is_relative_to(root):
            html = _with_link(html, raw, _carry_input(source, wav, inputs, dest))
            copied.append(path)
            continue
        rel = source.relative_to(root).as_posix()
        if source.suffix.lower() != ".wav":
            rel += ".wav"
            html = _with_link(html, raw, quote(rel))
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(wav)
        copied.append(path)
    (dest / "report.html").write_text(html, encoding="utf-8")
    return {"report": "report.html", "copied": copied, "missing": missing, "dropped": dropped}


def _attr_values(raw: str) -> set[str]:
    """How an attribute value may be written in the page: as is, or HTML-escaped (jinja2)."""
    return {raw, str(escape(raw))}


def _without_link(html: str, raw: str) -> str:
    """The page with every ``src``/``href`` of ``raw`` gone: an ``<audio>`` becomes a note, any
    other element loses the attribute (a link to nothing rather than to a file not carried)."""
    for value in _attr_values(raw):
        quoted = re.escape(value)
        html = re.sub(rf'<audio\b[^>]*\ssrc="{quoted}"[^>]*>\s*</audio>', DROPPED_AUDIO_NOTE, html)
        html = re.sub(rf'\s(?:src|href)="{quoted}"', "", html)
    return html


def _with_link(html: str, raw: str, new: str) -> str:
    for value in _attr_values(raw):
        for attr in ("src", "href"):
            html = html.replace(f'{attr}="{value}"', f'{attr}="{new}"')
    return html


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

"""``evalkit study serve DIR``: the study page for several raters at once, votes stored in SQLite.

The page works without it (votes stay in each rater's browser and are exported as JSONL); served
by this, each saved trial is also POSTed to ``api/votes`` and stored as one row per criterion in
``votes.sqlite`` (table ``votes``: id, study, rater, trial, criterion, winner, at), which
``evalkit study analyze DIR/votes.sqlite --study DIR`` reads.

Only the page's own files are served (``index.html``, ``study.js``, ``study-data.js``,
``audio/*.wav``): never ``key.json`` nor the database. It listens on 127.0.0.1 unless told
otherwise (``--host 0.0.0.0`` to reach colleagues on your network: there is no login, so only do
that on a network you trust). Standard library only.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from evalkit.study.build import DATA_FILE, load_key

SERVED = re.compile(r"^(index\.html|study\.js|" + re.escape(DATA_FILE) + r"|audio/[0-9a-f]{20}\.wav)$")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".wav": "audio/wav"}
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS votes (id INTEGER PRIMARY KEY AUTOINCREMENT, study TEXT NOT NULL, "
    "rater TEXT NOT NULL, trial TEXT NOT NULL, criterion TEXT NOT NULL, winner TEXT NOT NULL, "
    "at TEXT NOT NULL)"
)
RATER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_BODY = 64 * 1024


class VoteStore:
    """The SQLite file, one writer at a time (the server's threads share it)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        with sqlite3.connect(path) as db:
            db.execute(SCHEMA)

    def add(self, study: str, rater: str, trial: str, votes: dict[str, str]) -> int:
        at = datetime.now(UTC).isoformat(timespec="seconds")
        rows = [(study, rater, trial, c, w, at) for c, w in votes.items()]
        with self.lock, sqlite3.connect(self.path) as db:
            db.executemany(
                "INSERT INTO votes (study, rater, trial, criterion, winner, at) VALUES (?,?,?,?,?,?)", rows
            )
        return len(rows)


def check_vote(body: Any, key: dict[str, Any]) -> str | None:
    """Why a posted vote is refused (None: it is fine)."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if body.get("study") != key["study_id"]:
        return "this server runs another study"
    if not isinstance(body.get("rater"), str) or not RATER.match(body["rater"]):
        return "rater must be 1-64 letters, digits, . _ -"
    if body.get("trial") not in key["trials"]:
        return "unknown trial"
    votes = body.get("votes")
    if not isinstance(votes, dict) or set(votes) != set(key["criteria"]):
        return f"votes must give every criterion: {', '.join(key['criteria'])}"
    if any(w not in ("a", "b", "tie") for w in votes.values()):
        return "each vote must be a, b or tie"
    return None


def make_server(
    study_dir: Path, host: str = "127.0.0.1", port: int = 8765, db: Path | None = None
) -> ThreadingHTTPServer:
    """The server (not yet serving): call ``serve_forever``; ``server_address`` has the port."""
    study_dir = Path(study_dir).resolve()
    key = load_key(study_dir)
    store = VoteStore(Path(db) if db else study_dir / "votes.sqlite")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            """Quiet: a study server runs for hours; errors still reach the rater's page."""

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._send(status, json.dumps(data).encode("utf-8"), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0].lstrip("/") or "index.html"
            if path == "api/ping":
                self._json(HTTPStatus.OK, {"study": key["study_id"]})
                return
            if not SERVED.match(path):
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            file = study_dir / path
            if not file.is_file():
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            self._send(HTTPStatus.OK, file.read_bytes(), TYPES[file.suffix])

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            if self.path.split("?", 1)[0] != "/api/votes":
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "body missing or too large"})
                return
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "not JSON"})
                return
            problem = check_vote(body, key)
            if problem:
                self._json(HTTPStatus.BAD_REQUEST, {"error": problem})
                return
            n = store.add(key["study_id"], body["rater"], body["trial"], body["votes"])
            self._json(HTTPStatus.OK, {"stored": n})

    return ThreadingHTTPServer((host, port), Handler)

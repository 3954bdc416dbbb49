"""``build_study(run_dirs, out)``: a static, blind, randomised A/B listening page over the items
several runs share (``evalkit study build``).

Blind by construction: the page only ever gets trial ids (``t001``...), sides ``a``/``b`` and
clips under random names (``audio/<hex>.wav``, re-encoded at one rate, mono, so neither file
metadata nor a model's sample rate survives; the user's clips always come from the first run). Which
model is which side lives in ``key.json`` beside the page, which the page never loads; analyze,
arena and export-preferences read it. Publish the folder without ``key.json``.

Randomised: every pair of runs is compared on every shared item (or ``max_trials`` of those, drawn
with the seed), each with its sides drawn at random and in a shuffled order (the page reshuffles
per rater, seeded by the rater id, so two raters do not share order effects).

Attention checks, recorded in the key:
- ``repeat``: ``repeats`` trials shown again with sides swapped (a rater who contradicts
  themselves on most of them is not listening);
- ``planted``: one clear-cut pair, a real reply against a broken copy of it (reversed, under loud
  noise; a text reply's words reversed): the real reply must win ``overall`` and the broken one
  may win no criterion.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import shutil
from datetime import UTC, datetime
from importlib.resources import files
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from evalkit import audio as audio_io
from evalkit.errors import EvalkitError
from evalkit.records import AudioRef
from evalkit.study.runs import Item, Said, StudyRun, Unit, load_study_runs, shared_items

#: criterion id -> (label, the question the rater answers)
CRITERIA: dict[str, tuple[str, str]] = {
    "naturalness": ("Naturalness", "Which side sounds more like a person speaking naturally?"),
    "emotional_fit": ("Emotional fit", "Which side's tone fits the conversation and the user better?"),
    "immersion": ("Immersion", "Which side feels more like a live conversation with one consistent partner?"),
    "overall": ("Overall", "Which side would you rather talk to?"),
}
#: the model name the key gives the broken side of the planted pair
PLANTED = "@planted"
KEY_FILE = "key.json"
DATA_FILE = "study-data.js"
MARKER = ".evalkit-study"
KEY_SCHEMA = 1
#: every clip is written at one rate, mono, 16-bit: a model's own sample rate or channel count
#: would otherwise tell the models apart
STUDY_RATE = 24000


class Clips:
    """Copies clips into ``audio/`` under random names, each source once."""

    def __init__(self, out: Path, salt: str):
        self.dir = out / "audio"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.salt = salt
        self.names: dict[str, str] = {}

    def name(self, key: str) -> str:
        return hashlib.sha256(f"{self.salt}:{key}".encode()).hexdigest()[:20] + ".wav"

    def add(self, path: str | None) -> str | None:
        """The page's relative URL of ``path``'s clip (re-encoded WAV), or None without audio."""
        if path is None:
            return None
        if path not in self.names:
            name = self.name(path)
            samples, rate = audio_io.load(AudioRef(path=path), sample_rate=STUDY_RATE)
            (self.dir / name).write_bytes(audio_io.wav_bytes(samples, rate))  # decoded: no chunk survives
            self.names[path] = f"audio/{name}"
        return self.names[path]

    def add_broken(self, path: str, rng: np.random.Generator) -> str:
        """A clear-cut bad version of a clip: reversed, under noise louder than the speech."""
        samples, rate = audio_io.load(AudioRef(path=path), sample_rate=STUDY_RATE)
        peak = float(np.max(np.abs(samples))) or 0.1
        broken = samples[::-1] * 0.5 + rng.normal(0.0, peak, size=samples.shape).astype(np.float32)
        broken = np.clip(broken, -1.0, 1.0)
        name = self.name(f"planted:{path}")
        (self.dir / name).write_bytes(audio_io.wav_bytes(broken, rate))
        return f"audio/{name}"


def _shown(said: Said, clips: Clips, show_text: bool) -> dict[str, Any]:
    """A turn as the page shows it: its clip, and its text when asked or when there is no clip."""
    url = clips.add(said.audio)
    text = said.text if (show_text or url is None) else None
    return {"audio": url, "text": text}


def _broken(said: Said, clips: Clips, rng: np.random.Generator) -> dict[str, Any]:
    if said.audio is not None:
        return {"audio": clips.add_broken(said.audio, rng), "text": None}
    words = (said.text or "").split()
    return {"audio": None, "text": " ".join(reversed(words)) or "..."}


def prepare_out(out: Path) -> None:
    """A new or empty folder, or a study built before (its marker); never someone's files."""
    if out.exists() and not out.is_dir():
        raise EvalkitError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise EvalkitError(
            f"{out}: folder is not empty and is not an evalkit study; choose a new --out folder"
        )
    if (out / "votes.sqlite").exists():
        raise EvalkitError(
            f"{out}: holds the votes `evalkit study serve` collected; build into a new --out folder"
        )
    if out.is_dir():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("built by `evalkit study build`; rebuilt in place\n", encoding="utf-8")


def plan_trials(
    items: list[str], labels: list[str], rng: random.Random, max_trials: int | None, repeats: int
) -> list[dict[str, Any]]:
    """The trials in page order, before the planted one: every (item, pair of runs), sides drawn
    at random, shuffled; then ``repeats`` of them again with sides swapped, each placed after its
    original. Each trial: ``item``, ``a``, ``b``, ``kind`` (``pair`` | ``repeat``), and ``group``
    for a repeated pair and its repeat."""
    pairs = [(item, x, y) for item in items for x, y in combinations(labels, 2)]
    if max_trials is not None and len(pairs) > max_trials:
        pairs = rng.sample(pairs, max_trials)
    rng.shuffle(pairs)
    trials = [
        {"item": item, "a": x, "b": y, "kind": "pair"}
        if rng.random() < 0.5
        else {"item": item, "a": y, "b": x, "kind": "pair"}
        for item, x, y in pairs
    ]
    chosen = rng.sample(range(len(trials)), min(repeats, len(trials)))
    for group, index in enumerate(chosen):
        trials[index]["group"] = group
    for group in range(len(chosen)):
        position = next(i for i, t in enumerate(trials) if t.get("group") == group)
        original = trials[position]
        repeat = {**original, "a": original["b"], "b": original["a"], "kind": "repeat"}
        trials.insert(rng.randint(position + 1, len(trials)), repeat)
    return trials


def build_study(
    run_dirs: list[Path],
    out: Path,
    unit: Unit = "conversation",
    seed: int = 0,
    max_trials: int | None = None,
    repeats: int = 3,
    show_text: bool = False,
    title: str = "Listening study",
) -> Path:
    """Write the study into ``out`` and return the page's path. Bad input raises ``EvalkitError``
    before ``out`` is touched."""
    runs = load_study_runs([Path(p) for p in run_dirs], unit)
    items = shared_items(runs)
    by_label: dict[str, StudyRun] = {r.label: r for r in runs}
    out = Path(out)
    prepare_out(out)
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    clips = Clips(out, secrets.token_hex(16))
    trials = plan_trials(items, [r.label for r in runs], rng, max_trials, repeats)
    planted_item = rng.choice(items)
    real = rng.choice(runs).label
    planted = {"item": planted_item, "kind": "planted", "real": real}
    planted.update({"a": real, "b": PLANTED} if rng.random() < 0.5 else {"a": PLANTED, "b": real})
    trials.insert(rng.randint(len(trials) // 3, len(trials)), planted)

    study_id = secrets.token_hex(6)
    page_trials, key_trials = [], {}
    for n, trial in enumerate(trials, start=1):
        trial_id = f"t{n:03d}"
        context = runs[0].items[trial["item"]]  # the user's side: the same clips on every trial
        page_trials.append(
            {
                "id": trial_id,
                "users": [_shown(u, clips, True) for u in context.users],
                "a": _side(trial, "a", by_label, clips, show_text, noise),
                "b": _side(trial, "b", by_label, clips, show_text, noise),
            }
        )
        key_trials[trial_id] = trial

    data = {
        "study_id": study_id,
        "title": title,
        "criteria": [{"id": c, "label": label, "question": q} for c, (label, q) in CRITERIA.items()],
        "trials": page_trials,
    }
    key = {
        "schema": KEY_SCHEMA,
        "study_id": study_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "unit": unit,
        "seed": seed,
        "criteria": list(CRITERIA),
        "runs": [{"label": r.label, "root": str(r.root)} for r in runs],
        "planted": PLANTED,
        "trials": key_trials,
    }
    (out / KEY_FILE).write_text(json.dumps(key, indent=1) + "\n", encoding="utf-8")
    (out / DATA_FILE).write_text(
        "window.EVALKIT_STUDY = " + json.dumps(data, separators=(",", ":")) + ";\n", encoding="utf-8"
    )
    static = files("evalkit.study").joinpath("static")
    (out / "study.js").write_text(static.joinpath("study.js").read_text(encoding="utf-8"), encoding="utf-8")
    page = static.joinpath("index.html").read_text(encoding="utf-8")
    page = page.replace("{{CSS}}", static.joinpath("study.css").read_text(encoding="utf-8"))
    (out / "index.html").write_text(page, encoding="utf-8")
    return out / "index.html"


def _side(
    trial: dict[str, Any],
    side: str,
    by_label: dict[str, StudyRun],
    clips: Clips,
    show_text: bool,
    noise: np.random.Generator,
) -> list[dict[str, Any]]:
    """One side's replies as the page shows them (the planted side broken from the real one)."""
    label = trial[side]
    if label == PLANTED:
        item: Item = by_label[trial["real"]].items[trial["item"]]
        return [_broken(r, clips, noise) for r in item.replies]
    return [_shown(r, clips, show_text) for r in by_label[label].items[trial["item"]].replies]


def load_key(path: Path) -> dict[str, Any]:
    """A study's key (``DIR/key.json``, or the study folder itself): a one-line error otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / KEY_FILE
    try:
        key = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalkitError(
            f"{path}: cannot read the study key ({exc}); pass the folder `evalkit study build` made"
        ) from None
    if (
        not isinstance(key, dict)
        or key.get("schema") != KEY_SCHEMA
        or not isinstance(key.get("trials"), dict)
    ):
        raise EvalkitError(
            f"{path}: not an evalkit study key (schema {KEY_SCHEMA}); "
            "pass the folder `evalkit study build` made"
        )
    return key

"""What several run directories share, as study items: one conversation (or one turn of it) that
every run answered, with the user's side (the same in every run) and each run's replies.

Why a check of the user's side: two runs of different task data can reuse a sample id; an item is
shared only when its user turns (text, transcript, audio digest) are identical in every run, so a
listener never compares replies to two different questions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from evalkit.errors import EvalkitError
from evalkit.records import ResponseRecord, SampleRecord
from evalkit.store import RunStore

#: what one study item is: a whole conversation, or one (user turn, reply) exchange
Unit = Literal["conversation", "turn"]


@dataclass(frozen=True)
class Said:
    """One turn as shown to a listener: its text (or transcript) and its audio file, if any."""

    text: str | None = None
    audio: str | None = None


@dataclass
class Item:
    """One item of one run: the user's turns and the run's replies (same length, turn order)."""

    item_id: str
    task: str
    sample_id: str
    users: list[Said]
    replies: list[Said]
    #: the user's side, hashed: an item is shared only where this is the same in every run
    fingerprint: str = ""


@dataclass
class StudyRun:
    """One run directory as a study sees it: its label (the model), its folder, its items."""

    label: str
    root: Path
    items: dict[str, Item] = field(default_factory=dict)


def item_id(task: str, sample_id: str, turn: int | None = None) -> str:
    """``task/sample`` for a conversation, ``task/sample/turnK`` (1-based) for one turn."""
    return f"{task}/{sample_id}" if turn is None else f"{task}/{sample_id}/turn{turn + 1}"


def _user_said(rec: SampleRecord, root: Path) -> list[Said]:
    out = []
    for turn in rec.sample.conversation:
        if turn.role != "user":
            continue
        audio = None
        if turn.audio is not None and turn.audio.path is not None:
            path = Path(turn.audio.path)
            audio = str(path if path.is_absolute() else root / path)
        out.append(Said(text=turn.transcript or turn.text, audio=audio))
    return out


def _reply_said(rec: ResponseRecord, root: Path) -> Said:
    audio = rec.output.audio
    path = None
    if audio is not None and audio.path is not None:
        path = str(Path(audio.path) if Path(audio.path).is_absolute() else root / audio.path)
    return Said(text=rec.output.text, audio=path)


def _fingerprint(users: list[Said], digests: dict[int, str]) -> str:
    blob = "\x1f".join(f"{u.text or ''}\x1e{digests.get(i, '')}" for i, u in enumerate(users))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _conversations(store: RunStore) -> Iterator[Item]:
    """Each sample whose every turn was answered without error, as one conversation item."""
    replies: dict[tuple[str, str], dict[int, ResponseRecord]] = {}
    for rec in store.iter_latest_responses():
        replies.setdefault((rec.task, rec.sample_id), {})[rec.turn] = rec
    for rec in store.iter_samples():
        users = _user_said(rec, store.root)
        answered = replies.get((rec.task, rec.sample.id), {})
        turns = [answered.get(k) for k in range(len(users))]
        if not users or any(r is None or not r.output.ok for r in turns):
            continue
        yield Item(
            item_id=item_id(rec.task, rec.sample.id),
            task=rec.task,
            sample_id=rec.sample.id,
            users=users,
            replies=[_reply_said(r, store.root) for r in turns if r is not None],
            fingerprint=_fingerprint(users, rec.audio_sha256),
        )


def _turns(item: Item) -> Iterator[Item]:
    """A conversation's exchanges as one-turn items (the user turn and the reply to it)."""
    for k, (user, reply) in enumerate(zip(item.users, item.replies, strict=True)):
        yield Item(
            item_id=item_id(item.task, item.sample_id, k),
            task=item.task,
            sample_id=item.sample_id,
            users=[user],
            replies=[reply],
            fingerprint=f"{item.fingerprint}:{k}",
        )


def run_label(store: RunStore) -> str:
    """The model a run evaluated, named as the leaderboard names it (so study ratings join its
    rows): the spec without the server URL."""
    from evalkit.leaderboard.runs import model_name

    return model_name(store.manifest())


def load_study_runs(run_dirs: list[Path], unit: Unit = "conversation") -> list[StudyRun]:
    """Each run with its answered items; labels made unique (two runs of one model get ``#run_id``)."""
    if len(run_dirs) < 2:
        raise EvalkitError("a study compares at least two runs: pass two or more run directories")
    runs = []
    for root in run_dirs:
        store = RunStore.open_existing(Path(root))
        items = list(_conversations(store))
        if unit == "turn":
            items = [t for conv in items for t in _turns(conv)]
        runs.append(
            StudyRun(label=run_label(store), root=store.root.resolve(), items={i.item_id: i for i in items})
        )
    labels = [r.label for r in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.label}#{run.root.name}"
    if len({r.label for r in runs}) < len(runs):
        raise EvalkitError("the same run directory is given twice; pass each run once")
    return runs


def shared_items(runs: list[StudyRun]) -> list[str]:
    """Ids of the items every run answered with the same user side, in the first run's order."""
    first = runs[0]
    shared = [
        key
        for key, item in first.items.items()
        if all(key in r.items and r.items[key].fingerprint == item.fingerprint for r in runs[1:])
    ]
    if not shared:
        raise EvalkitError(
            f"the runs share no answered item: {', '.join(str(r.root) for r in runs)} must have run "
            "the same samples (same task data) without errors"
        )
    return shared

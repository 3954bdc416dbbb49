"""``evalkit merge``: join the run directories of ``--shard 1/N`` ... ``--shard N/N`` into one run
directory that is indistinguishable from a single run of the same definition: the same
responses.jsonl and scores.jsonl lines in the same order (timing aside), the same summary.json
metrics and bootstrap CIs, its own report.html.

Why this is safe to do after the fact: every record carries the task-wide ``sample_index`` (a shard
skips other shards' samples but never renumbers its own), the order of a finished run is a pure
function of (task order, sample index, turn / judge order) (``RunStore.finalize_order``), and the
summary's bootstrap seeds depend only on the run seed and names. So the union of the shards,
finalized, is the single run. Everything that would break that is refused up front with one line
naming the run directory and what differs: another model, card, task set, dataset content, seed,
limit, token budget or shard count; a shard missing, given twice or unfinished; a record whose
sample belongs to another shard.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from evalkit.errors import EvalkitError
from evalkit.manifest import now_iso, package_versions, redact_command
from evalkit.records import ResponseRecord, SampleRecord, ScoreRecord
from evalkit.run_files import Manifest, parse_line
from evalkit.sharding import Shard, parse_shard
from evalkit.store import RESPONSES, SAMPLES, SCORES, RunStore, _slug

R = TypeVar("R", ResponseRecord, ScoreRecord, SampleRecord)

#: counters of a session (``manifest["last_session"]``) that add up across shards
SESSION_COUNTERS = ("seconds", "requests", "cache_hits", "errors", "retries", "samples")
#: dataset keys that say where the data sits on one machine, not what it is (the fingerprint does)
LOCATION_KEYS = frozenset({"path", "location", "hf_fingerprint"})


@dataclass
class ShardRun:
    """One shard's finished run directory."""

    store: RunStore
    #: manifest.json as written (the merged manifest is built from it)
    manifest: dict[str, Any]
    shard: Shard
    #: the same, typed (what merge reads of it)
    info: Manifest

    @property
    def root(self) -> Path:
        return self.store.root


def open_shard(path: Path) -> ShardRun:
    """Open a shard's run directory; refuse one that is no shard or did not complete."""
    from evalkit.finalize import check_writable

    store = RunStore.open_existing(path)
    info = store.manifest()
    check_writable(store, info)  # merging a newer shard would drop what this version cannot read
    shard = parse_shard(info.config.get("shard"))
    if shard is None:
        raise EvalkitError(
            f"{store.root}: not a shard (its manifest has no config.shard); run with --shard I/N"
        )
    if info.status != "completed":
        raise EvalkitError(
            f"{store.root}: shard {shard} is {info.status!r}, not completed; "
            f"finish it with `evalkit run --resume {store.root}`"
        )
    return ShardRun(store, store.read_manifest(), shard, info)


def _model_identity(model: dict[str, Any]) -> dict[str, Any]:
    """What names the model itself: the spec without its endpoint (shards on different machines
    reach their own replica of the same model), the adapter and the card's digest."""
    spec = str(model.get("spec", ""))
    head, sep, tail = spec.rpartition("@")
    if sep and tail.startswith(("http://", "https://")):
        spec = head
    card = model.get("card") or {}
    return {"spec": spec, "adapter": model.get("adapter"), "card_digest": card.get("digest")}


def _dataset_identity(dataset: dict[str, Any]) -> dict[str, Any]:
    """What the data is, not where it sits: with a content fingerprint, a local file path (the
    ``jsonl`` task's id) may differ between machines."""
    out = {k: v for k, v in dataset.items() if k not in LOCATION_KEYS}
    if out.get("fingerprint") and str(out.get("id", "")).startswith("/"):
        out.pop("id")
    return out


def run_definition(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fields every shard of one run must share, by the name a refusal reports them under."""
    config = manifest.get("config", {})
    shard = parse_shard(config.get("shard"))
    definition: dict[str, Any] = {
        "model": _model_identity(manifest.get("model", {})),
        "tasks": [t.get("name") for t in manifest.get("tasks", [])],
        "seed": config.get("seed"),
        "limit": config.get("limit"),
        "max_tokens": config.get("max_tokens"),
        "temperature": config.get("temperature"),
        "top_p": config.get("top_p"),
        # the effective generation settings per task and where each came from (card, task, flag)
        # (the seed is compared on its own above; here it would only repeat it per task)
        "generation": {
            task: {k: v for k, v in fields.items() if k != "seed"}
            for task, fields in (manifest.get("generation") or {}).items()
        },
        "shard count": shard.count if shard is not None else None,
    }
    for task in manifest.get("tasks", []):
        definition[f"task {task.get('name')!r}"] = {
            **{k: task.get(k) for k in ("class", "judges", "group_by", "primary_metric", "params")},
            "system_prompt": task.get("system_prompt"),
            "dataset": _dataset_identity(task.get("dataset", {})),
        }
    return definition


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _first_difference(a: Any, b: Any, where: str) -> tuple[str, Any, Any] | None:
    """The first place two definitions differ, as a dotted name: the refusal names the field
    (``task 'x' dataset.fingerprint``), not a whole dictionary."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys(), key=str):
            found = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
        return None
    return None if a == b else (where, a, b)


def check_shards(shards: list[ShardRun]) -> None:
    """Refuse anything that would make the merged run differ from a single run."""
    if not shards:
        raise EvalkitError("no shard run directories given; pass every `--shard I/N` run directory")
    first = shards[0]
    reference = run_definition(first.manifest)
    for other in shards[1:]:
        definition = run_definition(other.manifest)
        # in definition order (a set union's order changes with the hash seed: the refusal must not)
        for key in [*reference, *(k for k in definition if k not in reference)]:
            found = _first_difference(definition.get(key), reference.get(key), "")
            if found is not None:
                field, theirs, ours = found
                name = f"{key} {field}" if field else key
                raise EvalkitError(
                    f"{other.root}: {name} differs from {first.root} "
                    f"({_short(theirs)} vs {_short(ours)}); merge only the shards of one run definition"
                )
    count = first.shard.count
    seen: dict[int, Path] = {}
    for run in shards:
        if run.shard.index in seen:
            raise EvalkitError(
                f"{run.root}: shard {run.shard} is given twice (also {seen[run.shard.index]}); pass each once"
            )
        seen[run.shard.index] = run.root
    missing = [str(i) for i in range(1, count + 1) if i not in seen]
    if missing:
        raise EvalkitError(
            f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing (given: "
            f"{', '.join(str(r.root) for r in sorted(shards, key=lambda r: r.shard.index))}); "
            "pass all N shard run directories"
        )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Complete lines of a finalized stream, one at a time (a shard can be large)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.endswith("\n") and line.strip():
                yield number, line


def _owned(run: ShardRun, path: Path, number: int, task: str, sample_index: int) -> None:
    if not run.shard.owns(sample_index):
        raise EvalkitError(
            f"{path}:{number}: sample {sample_index} of task {task!r} is not in shard {run.shard} "
            "(index % N != I - 1); this folder was not made by that shard"
        )


def _owned_records(run: ShardRun, name: str, record_type: type[R]) -> Iterator[tuple[str, int, str, R]]:
    """Each line of a shard's record file with its parsed record, after checking that the record
    belongs to this shard: (path, line number, raw line, record)."""
    path = run.root / name
    for number, line in _lines(path):
        try:
            rec = parse_line(line.encode("utf-8"), record_type)
        except ValueError as exc:
            raise EvalkitError(f"{path}:{number}: not a valid {record_type.__name__} line ({exc})") from None
        _owned(run, path, number, rec.task, rec.sample_index)
        yield str(path), number, line, rec


def _copy_responses(run: ShardRun, merged: RunStore, out) -> None:
    """Stream one shard's responses into the merged file, copying each spoken reply into the
    merged ``audio/`` and pointing the record at the copy (relative, like a single run's)."""
    for path, number, _line, rec in _owned_records(run, RESPONSES, ResponseRecord):
        audio = rec.output.audio
        if audio is not None and audio.path is not None:
            source = Path(audio.path)
            source = source if source.is_absolute() else run.root / source
            rel = Path("audio") / _slug(rec.task) / f"{_slug(rec.sample_id)}_t{rec.turn}.wav"
            target = merged.root / rel
            if target.exists():
                raise EvalkitError(
                    f"{path}:{number}: audio of sample {rec.sample_id!r} turn {rec.turn} of task "
                    f"{rec.task!r} is also in another shard; merge only disjoint shards"
                )
            if not source.is_file():
                raise EvalkitError(
                    f"{path}:{number}: audio file {source} is missing; the shard's run folder is incomplete"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            rec = rec.model_copy(
                update={
                    "output": rec.output.model_copy(
                        update={"audio": audio.model_copy(update={"path": str(rel)})}
                    )
                }
            )
        out.write(rec.model_dump_json(exclude_none=True) + "\n")


def _copy_samples(run: ShardRun, merged: RunStore, out) -> None:
    """Stream one shard's samples.jsonl into the merged one, copying input audio the shard kept
    inside its folder (``audio/inputs/...``, relative) to the same place in the merged run."""
    for path, number, line, rec in _owned_records(run, SAMPLES, SampleRecord):
        for turn in rec.sample.conversation:
            rel = turn.audio.path if turn.audio is not None else None
            if rel is None or Path(rel).is_absolute():
                continue  # inside the data root: the path stays valid as it is
            source, target = run.root / rel, merged.root / rel
            if not source.is_file():
                raise EvalkitError(
                    f"{path}:{number}: input audio {source} is missing; the shard's run folder is incomplete"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        out.write(line)


def _copy_scores(run: ShardRun, out) -> None:
    for _path, _number, line, _rec in _owned_records(run, SCORES, ScoreRecord):
        out.write(line)


def _summed_session(shards: list[ShardRun]) -> dict[str, Any]:
    """The shards' last sessions added up (seconds too: shard time, not wall time, since shards
    may have run side by side)."""
    total: dict[str, Any] = {}
    for name in SESSION_COUNTERS:
        values = [run.info.last_session.get(name) for run in shards]
        if all(v is not None for v in values):
            total[name] = round(sum(values), 3) if name == "seconds" else sum(values)
    return total


def merged_manifest(shards: list[ShardRun], run_id: str, argv: list[str]) -> dict[str, Any]:
    """Shard 1's manifest made whole: no shard in the config, the sources listed, counters summed."""
    ordered = sorted(shards, key=lambda r: r.shard.index)
    base = ordered[0].manifest
    manifest = {k: v for k, v in base.items() if k not in ("resumed", "last_session", "cache", "run_id")}
    config = dict(base.get("config", {}))
    config["shard"] = None
    starts = [r.info.started for r in ordered if r.info.started]
    ends = [r.info.ended for r in ordered if r.info.ended]
    manifest.update(
        run_id=run_id,
        config=config,
        status="completed",
        started=min(starts) if starts else None,
        ended=max(ends) if ends else None,
        last_session=_summed_session(ordered),
        merged={
            "command": redact_command(argv),
            "at": now_iso(),
            "versions": package_versions(),
            "shards": [
                {
                    "shard": str(r.shard),
                    "run_dir": str(r.root.resolve()),
                    "run_id": r.info.run_id or r.root.name,
                    "model_spec": r.info.model.spec,
                    "started": r.info.started,
                    "ended": r.info.ended,
                    "resumed": r.info.resumed,
                    "last_session": r.manifest.get("last_session"),
                    "git_revision": r.info.git_revision,
                    "hardware": r.manifest.get("hardware"),
                }
                for r in ordered
            ],
        },
    )
    return manifest


def merge_shards(paths: list[Path], out: Path, argv: list[str] | None = None) -> RunStore:
    """Check the shards, write the merged run directory ``out`` (which must not exist or be empty)
    and finalize it (canonical order, summary.json, report.html). Returns its store."""
    from evalkit.finalize import finalize

    shards = [open_shard(Path(p)) for p in paths]
    check_shards(shards)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvalkitError(
            f"--out {out}: exists and is not an empty folder; name a new folder for the merged run"
        )
    resolved = {r.root.resolve() for r in shards}
    if out.resolve() in resolved:
        raise EvalkitError(f"--out {out}: is one of the shards; name a new folder for the merged run")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    merged = RunStore(out)
    try:
        _write_merged(sorted(shards, key=lambda r: r.shard.index), merged, argv or sys.argv)
        finalize(merged)
    except BaseException:
        # a half-merged folder would look like a run: remove what this call made, then report
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise
    return merged


def _write_merged(ordered: list[ShardRun], merged: RunStore, argv: list[str]) -> None:
    """Manifest, the shards' streams concatenated (finalize sorts them), audio and error logs."""
    merged.write_manifest(merged_manifest(ordered, merged.run_id, argv))
    with (
        open(merged.root / RESPONSES, "w", encoding="utf-8") as responses,
        open(merged.root / SCORES, "w", encoding="utf-8") as scores,
    ):
        for run in ordered:
            _copy_responses(run, merged, responses)
            _copy_scores(run, scores)
    if any((run.root / SAMPLES).is_file() for run in ordered):  # shards made before it have none
        with open(merged.root / SAMPLES, "w", encoding="utf-8") as samples:
            for run in ordered:
                _copy_samples(run, merged, samples)
    logs = [(r, r.root / "errors.log") for r in ordered if (r.root / "errors.log").is_file()]
    if logs:
        with open(merged.root / "errors.log", "w", encoding="utf-8") as fh:
            for run, log in logs:
                fh.write(f"=== shard {run.shard} ({run.root})\n")
                fh.write(log.read_text(encoding="utf-8"))

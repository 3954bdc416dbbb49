"""Where benchmark rows come from: a Hugging Face hub id (pinned ``revision``) through ``datasets``,
or a local folder / JSON / JSONL / parquet file in the benchmark's official layout.

Audio columns are read with ``Audio(decode=False)``: ``datasets`` would otherwise decode through
torchcodec, which has no CPU build here; evalkit decodes clips itself (soundfile + soxr). A cell
becomes an ``AudioRef`` (bytes or a path resolved against the data folder) with ``audio_ref``.

Offline is the default state of a machine running evaluations: a hub id that cannot be reached is a
one-line error telling the user to pass a local copy with ``--data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.records import AudioRef

LOCAL_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class DataSource:
    """A resolved dataset: its rows, the folder relative paths resolve against, provenance, and
    the folders its rows may name files in (``evalkit.confine``: a local copy's folder; for the
    hub, the caches ``datasets`` and ``huggingface_hub`` download into)."""

    rows: list[dict[str, Any]]
    base: Path | None
    info: dict[str, Any] = field(default_factory=dict)
    roots: tuple[Path, ...] = ()


def _datasets():
    try:
        import datasets
    except ImportError:
        raise EvalkitError("the benchmarks need `datasets`: pip install -e '.[bench]'") from None
    return datasets


def _undecoded(ds):
    """Switch every Audio column to raw bytes/paths (no torchcodec needed)."""
    datasets = _datasets()
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Audio):
            ds = ds.cast_column(name, datasets.Audio(decode=False))
    return ds


def _local_files(path: Path, split: str | None) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_SUFFIXES and p.is_file())
    if split:  # the official layouts name files or folders after the split
        chosen = [p for p in files if split in p.relative_to(path).as_posix()]
        files = chosen or files
    return files


def load_local(path: Path, split: str | None = None) -> DataSource:
    """Rows from a local file or folder (a ``save_to_disk`` folder, or JSON/JSONL/parquet/CSV files)."""
    path = path.expanduser()
    if not path.exists():
        raise EvalkitError(
            f"{path}: dataset path not found; fix --data (a folder or a JSON/JSONL/parquet file)"
        )
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        datasets = _datasets()
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split] if split in ds else ds[next(iter(ds))]
        rows = list(_undecoded(ds))
        return DataSource(rows, path, {"path": str(path.resolve()), "split": split}, (path.absolute(),))
    files = _local_files(path, split)
    if not files:
        raise EvalkitError(
            f"{path}: no .json/.jsonl/.parquet/.csv file found; point --data at the benchmark's files"
        )
    kinds = {LOCAL_SUFFIXES[f.suffix] for f in files}
    if len(kinds) > 1:
        raise EvalkitError(f"{path}: mixed file kinds {sorted(kinds)}; point --data at one of them")
    datasets = _datasets()  # seconds to import: only once the files are known to be there
    try:
        ds = datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train")
    except Exception as exc:  # pyarrow/json errors: name the file and stop
        raise EvalkitError(f"{path}: cannot read as a dataset ({type(exc).__name__}: {exc})") from None
    base = (path if path.is_dir() else path.parent).absolute()
    info = {"path": str(path.resolve()), "split": split}
    return DataSource(list(_undecoded(ds)), base, info, (base,))


def _hub_unreachable_reason() -> str | None:
    """Why the hub cannot be reached, or None. Checked up front because ``datasets`` otherwise
    spends ~25 s in its own retries before it reports a missing network. With HF_HUB_OFFLINE set,
    ``datasets`` reads its local cache and fails fast itself, so no check is made."""
    import os
    import socket
    from urllib.parse import urlparse

    if any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    ):
        return None
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        return f"{host} is unreachable ({exc.strerror or type(exc).__name__})"
    return None


def load_hub(hub_id: str, revision: str | None, split: str, name: str | None = None) -> DataSource:
    """Rows of ``hub_id`` at ``revision`` (a commit sha pins it); a clear error when offline."""
    datasets = _datasets()
    reason = _hub_unreachable_reason()
    if reason is not None:
        raise EvalkitError(
            f"cannot load {hub_id!r} from the Hugging Face hub: {reason}; "
            "offline, give --data PATH (a local copy in the official layout)"
        )
    try:
        ds = datasets.load_dataset(hub_id, name, revision=revision, split=split)
    except Exception as exc:  # ConnectionError, offline mode, missing repo: one actionable line
        raise EvalkitError(
            f"cannot load {hub_id!r} (split {split!r}) from the Hugging Face hub: {type(exc).__name__}; "
            "offline, give --data PATH (a local copy in the official layout)"
        ) from None
    info = {"id": hub_id, "revision": revision or "(default branch)", "split": split}
    fingerprint = getattr(ds, "_fingerprint", None)
    if fingerprint:
        info["hf_fingerprint"] = fingerprint
    return DataSource(list(_undecoded(ds)), None, info, _hub_roots())


def _hub_roots() -> tuple[Path, ...]:
    """Where hub rows' files live: the ``datasets`` cache and the hub download cache."""
    from datasets import config as datasets_config
    from huggingface_hub import constants

    return (Path(datasets_config.HF_DATASETS_CACHE), Path(constants.HF_HUB_CACHE))


def load_rows(
    hub_id: str, data: str | Path | None, revision: str | None, split: str, name: str | None = None
) -> DataSource:
    """``data`` (a local path) wins over the hub id; the hub is reached only when no path is given."""
    if data:
        source = load_local(Path(data), split)
        source.info = {"id": hub_id, **source.info, "revision": revision or "local"}
        return source
    return load_hub(hub_id, revision, split, name)


def audio_ref(cell: Any, base: Path | None, what: str) -> AudioRef:
    """A row's audio cell (``{"bytes", "path"}`` from datasets, or a path string) as an AudioRef.
    ``what`` names the row and field for the error message."""
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return AudioRef(data=cell["bytes"])
        cell = cell.get("path")
    if isinstance(cell, str) and cell:
        path = Path(cell)
        if not path.is_absolute() and base is not None:
            path = base / path
        return AudioRef(path=str(path))
    raise EvalkitError(f"{what}: no audio (neither bytes nor a path); fix the dataset's audio field")

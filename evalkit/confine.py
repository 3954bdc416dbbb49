"""Path confinement: the one check every file path named by data goes through before it is read.

A dataset row, a samples-file line or a run record (``responses.jsonl``) may name any path:
``../../etc/passwd``, ``/home/me/.ssh/id_rsa``, or a symlink inside the data folder pointing out.
Reading such a path would send its bytes to a model server, embed them in ``report.html`` or copy
them into a leaderboard site. So a path is resolved (``..`` folded, symlinks followed) against the
folder it is relative to and must then lie inside one of the *roots* its reader was given: a task's
data folder, a run directory, or a folder the user named with ``--allow-path DIR``. Anything else
raises ``PathEscapeError`` and is never opened.

Readers and their roots:

- the runner (``Task.confine_sample``): the task's ``path_roots()`` (a samples file's folder, a
  benchmark's ``--data`` folder, the hub caches, evalkit's own generated datasets) plus
  ``--allow-path``; an escape becomes an ``input_path`` error record of that sample;
- the manifest fingerprint (``tasks.base.fingerprint``): the same roots; an escaping file is hashed
  by its name, never by its bytes;
- ``report.html`` (``reports.html.AudioLinker``): the run directory plus the roots the manifest
  recorded for the record's task;
- the leaderboard (``leaderboard.assets.copy_run_files``): the run directory only.

The check resolves the path and returns the resolved path, which is what callers then open. That
narrows the window between check and read to the time in between; it does not close it against
someone who can rewrite the data folder during a run (nothing short of opening with
``O_NOFOLLOW`` per component would).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path

from evalkit.errors import EvalkitError

#: the ``ErrorInfo.kind`` of a sample whose file path escapes its roots
INPUT_PATH_KIND = "input_path"


class PathEscapeError(EvalkitError):
    """A path named by data resolves outside every root its reader may read from."""


class ResolvedRoots(tuple):
    """Roots ``resolved_roots`` made: ``confine`` takes them as they are instead of resolving
    each root again per path (a run confines every clip of every sample), and compares paths
    against ``prefixes``, their string forms ending in a separator, made once."""

    @functools.cached_property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(str(root).rstrip(os.sep) + os.sep for root in self)


def resolved_roots(roots: Iterable[str | Path | None]) -> ResolvedRoots:
    """Roots as absolute, symlink-resolved folders (``None`` entries dropped, order kept, no
    duplicates), so that a root given through a symlink still contains its own files."""
    if isinstance(roots, ResolvedRoots):
        return roots
    out: list[Path] = []
    for root in roots:
        if root is None or str(root) == "":
            continue
        real = Path(root).expanduser().resolve()
        if real not in out:
            out.append(real)
    return ResolvedRoots(out)


def confine(
    path: str | Path,
    roots: Iterable[str | Path | None],
    what: str,
    base: Path | None = None,
    fix: str | None = None,
) -> Path:
    """``path`` (relative ones against ``base``) resolved, if it lies inside one of ``roots``;
    otherwise ``PathEscapeError`` naming ``what`` (the sample and field), the path and ``fix``
    (by default: move the file, or widen with ``--allow-path``).

    Resolving follows every symlink, so a link inside a root that points out is outside; ``..``
    is folded only after links are followed, as the operating system does when opening."""
    return Path(confined(path, roots, what, base, fix))


def confined(
    path: str | Path,
    roots: Iterable[str | Path | None],
    what: str,
    base: Path | None = None,
    fix: str | None = None,
) -> str:
    """``confine`` as a string: the per-clip callers (the fingerprint, each sample's turns, the
    report's links) confine every clip of a run and want its path as text; building a ``Path``
    they would turn back into one cost a third of each call."""
    given = os.fspath(path)
    candidate = given if base is None or os.path.isabs(given) else os.path.join(base, given)
    allowed = resolved_roots(roots)
    try:
        real = resolved_path(candidate)
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte in the name
        raise PathEscapeError(
            f"{what}: path {str(path)!r} cannot be resolved ({exc}); it was not read; fix: name a real file"
        ) from None
    if any(real.startswith(prefix) or real + os.sep == prefix for prefix in allowed.prefixes):
        return real
    where = ", ".join(str(r) for r in allowed) or "(no folder)"
    fix = fix or (
        f"move the file inside the data folder, or pass --allow-path {Path(real).parent} to `evalkit run` "
        "to allow that folder"
    )
    raise PathEscapeError(
        f"{what}: path {str(path)!r} resolves to {real} (symlinks followed), outside the folders it "
        f"may be read from ({where}); it was not read; fix: {fix}"
    )


def resolved_path(candidate: str) -> str:
    """``Path(candidate).resolve()`` as a string, with the folder part resolved once per folder.

    Why: a run confines every clip three times (the fingerprint, the request, the report), and a
    full resolve stats every component of the path: 15 ``lstat`` calls for a clip five folders
    deep, ~70 us, a tenth of a millisecond per request (issue 18). The file's own name is still
    checked on every call (a symlinked file takes the full resolve), so only a folder turned into
    a symlink after this process first resolved it would go unseen: the same window the module
    docstring describes for any file rewritten during a run."""
    folder, name = os.path.split(candidate)
    if "\x00" in candidate or name in ("", ".", ".."):
        return str(Path(candidate).resolve())
    if not os.path.isabs(folder):  # the memo is keyed by absolute folders: the cwd may change
        folder = os.path.join(os.getcwd(), folder)
    joined = os.path.join(_resolved_folder(folder), name)
    return str(Path(joined).resolve()) if os.path.islink(joined) else joined


@functools.lru_cache(maxsize=4096)
def _resolved_folder(folder: str) -> str:
    return str(Path(folder).resolve())

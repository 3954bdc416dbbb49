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

from collections.abc import Iterable
from pathlib import Path

from evalkit.errors import EvalkitError

#: the ``ErrorInfo.kind`` of a sample whose file path escapes its roots
INPUT_PATH_KIND = "input_path"


class PathEscapeError(EvalkitError):
    """A path named by data resolves outside every root its reader may read from."""


class ResolvedRoots(tuple):
    """Roots ``resolved_roots`` made: ``confine`` takes them as they are instead of resolving
    each root again per path (a run confines every clip of every sample)."""


def resolved_roots(roots: Iterable[str | Path | None]) -> tuple[Path, ...]:
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
    given = Path(path)
    candidate = given if given.is_absolute() or base is None else Path(base) / given
    allowed = resolved_roots(roots)
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte in the name
        raise PathEscapeError(
            f"{what}: path {str(path)!r} cannot be resolved ({exc}); it was not read; fix: name a real file"
        ) from None
    if any(real.is_relative_to(root) for root in allowed):
        return real
    where = ", ".join(str(r) for r in allowed) or "(no folder)"
    fix = fix or (
        f"move the file inside the data folder, or pass --allow-path {real.parent} to `evalkit run` "
        "to allow that folder"
    )
    raise PathEscapeError(
        f"{what}: path {str(path)!r} resolves to {real} (symlinks followed), outside the folders it "
        f"may be read from ({where}); it was not read; fix: {fix}"
    )

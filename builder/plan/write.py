"""Write the plan's rendered Dockerfiles to a directory: `<out>/<node-id>/Dockerfile`, each replaced atomically.

Files are written only inside `out`: every node id must be one plain path component, a node directory that is a
symlink (or anything but a directory) is refused, and each file is written to a temporary file in its own
directory and renamed over the old one, so a reader sees the old or the new Dockerfile, never part of one. All
targets are checked before the first is written.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from builder.errors import StrataError
from builder.matrix.types import show
from builder.plan.graph import Plan

_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)


def write_dockerfiles(plan: Plan, out: Path) -> list[Path]:
    """Write <out>/<node-id>/Dockerfile for each node; files are replaced atomically, nothing outside `out`."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        root = out.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise StrataError(
            f"{out}: cannot use as output directory ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    if not root.is_dir():
        raise StrataError(f"{out}: not a directory")
    jobs: list[tuple[Path, str]] = []
    for node in plan.nodes:
        if not _NODE_ID.fullmatch(node.id):
            raise StrataError(
                f"node id {show(node.id)} is not a plain file name; nothing written under {out}"
            )
        directory = root / node.id
        if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
            raise StrataError(
                f"{out / node.id}: not a directory of its own (a symlink or a file); nothing written under {out}"
            )
        if (directory / "Dockerfile").is_dir():
            raise StrataError(f"{out / node.id / 'Dockerfile'}: is a directory; nothing written under {out}")
        jobs.append((directory, node.dockerfile))
    written = []
    for directory, text in jobs:
        target = directory / "Dockerfile"
        _write_atomically(target, text, root)
        written.append(out / directory.name / "Dockerfile")
    return written


def _write_atomically(target: Path, text: str, root: Path) -> None:
    directory = target.parent
    try:
        directory.mkdir(exist_ok=True)
        if directory.is_symlink() or directory.resolve(strict=True).parent != root:
            raise StrataError(f"{directory}: not a directory of its own inside {root}; not written")
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".Dockerfile.", suffix=".tmp")
    except OSError as exc:
        raise StrataError(f"{target}: cannot write ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StrataError(f"{target}: cannot write ({exc.strerror})") from None

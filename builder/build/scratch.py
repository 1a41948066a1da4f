"""What a killed run leaves behind: served wheelhouses, build contexts, verify scratch and temporary directories.

A run removes its own on the way out; after `kill -9` or a power cut they stay. Only `strata gc` lists them, while
it holds the run lock (builder/state_lock.py), so none of them belongs to a run in progress.
"""

from __future__ import annotations

from pathlib import Path

from builder.engine.gc import tree_size
from builder.plan.retention import CachedFile
from builder.settings import Settings


def scratch_dirs(settings: Settings) -> list[Path]:
    """The directories whose every entry is a run's scratch."""
    work = settings.work_dir
    return [work / "wheelhouse", work / "context", settings.cache_dir / "tmp", settings.tmp_dir]


def list_scratch(settings: Settings) -> list[CachedFile]:
    """Every leftover entry of the scratch directories, and verify's `build/strata-verify-*` directories."""
    found = [entry for d in scratch_dirs(settings) if d.is_dir() for entry in sorted(d.iterdir())]
    if settings.work_dir.is_dir():
        found += sorted(settings.work_dir.glob("strata-verify-*"))
    return [CachedFile("", (path,), tree_size(path)) for path in found]

"""Where Strata keeps host-side state: $STRATA_HOME, else .strata/ next to the matrix file."""

from __future__ import annotations

import os
from pathlib import Path


def strata_home(root: Path) -> Path:
    return Path(os.environ.get("STRATA_HOME") or root / ".strata").absolute()


def cache_dir(root: Path) -> Path:
    """Content-addressed caches shared by every cell: wheelhouse, root filesystems."""
    path = strata_home(root) / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_dir(root: Path) -> Path:
    return root / "build"

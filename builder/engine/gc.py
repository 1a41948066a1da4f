"""The engine's images as `strata gc` sees them, and their removal (builder/plan/retention.py decides which);
also the removal of cache entries the stores' owners listed (`remove_cached_files`).

Each image is listed with its references, labels, age, diff_ids, its layers' chain ids and sizes (what removing
it frees is the layers no other image has) and whether a container uses it. Removal untags reference by reference,
never forced: the engine itself refuses to remove an image a container uses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from builder.engine.client import ENGINE_ERRORS
from builder.plan.retention import CachedFile, EngineImage


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The layer store's ids of an image's layers, bottom first (OCI image spec: ChainID)."""
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            chains.append("sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


def layer_sizes(history_sizes: Sequence[int], layers: int, total: int) -> list[int]:
    """Each layer's size from the image's history sizes, oldest first (pure).

    History has one entry per step; steps that added no layer have size 0. When the steps with a size are exactly
    the layers, those are the sizes; otherwise the whole size is put on the top layer, the one most likely the
    image's own.
    """
    sized = [s for s in history_sizes if s > 0]
    if len(sized) == layers:
        return sized
    return [0] * max(0, layers - 1) + ([total] if layers else [])


def list_images(client: Any, sized: Callable[[EngineImage], bool] = lambda image: True) -> list[EngineImage]:
    """Every tagged image of the engine; layer sizes are looked up (one history call each) only where `sized`."""
    used = {str(c.get("ImageID", "")) for c in client.api.containers(all=True)}
    images: list[EngineImage] = []
    for summary in client.api.images():
        refs = tuple(t for t in summary.get("RepoTags") or () if t != "<none>:<none>")
        if not refs:
            continue
        image_id = str(summary["Id"])
        try:
            attrs = client.api.inspect_image(image_id)
        except ENGINE_ERRORS:
            continue  # removed while we looked
        diff_ids = tuple((attrs.get("RootFS") or {}).get("Layers") or ())
        chains = chain_ids(diff_ids)
        image = EngineImage(
            id=image_id,
            refs=refs,
            labels=dict(summary.get("Labels") or {}),
            created=float(summary.get("Created") or 0),
            layers=tuple((chain, 0) for chain in chains),
            diff_ids=diff_ids,
            in_use=image_id in used,
        )
        if sized(image):
            history = [int(h.get("Size") or 0) for h in reversed(client.api.history(image_id))]
            sizes = layer_sizes(history, len(chains), int(summary.get("Size") or 0))
            image = dataclasses.replace(image, layers=tuple(zip(chains, sizes, strict=True)))
        images.append(image)
    return images


def remove_images(client: Any, images: Iterable[EngineImage]) -> tuple[list[str], list[str]]:
    """Remove each image by untagging every reference (never forced); returns removed ids and one-line problems."""
    removed: list[str] = []
    problems: list[str] = []
    for image in images:
        try:
            for ref in image.refs:
                client.images.remove(ref, noprune=False)
        except ENGINE_ERRORS as exc:
            problems.append(f"{image.refs[0]}: not removed ({getattr(exc, 'explanation', None) or exc})")
            continue
        removed.append(image.id)
    return removed, problems


def remove_cached_files(entries: Iterable[CachedFile]) -> int:
    """Delete the files and directories of `entries`; returns the bytes their listing counted."""
    freed = 0
    for entry in entries:
        for path in entry.paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        freed += entry.size
    return freed


def tree_size(path: Path) -> int:
    """Bytes of the files under `path` (or of `path` itself), not following symbolic links."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for child in path.rglob("*"):
        try:
            if child.is_file() and not child.is_symlink():
                total += child.stat().st_size
        except OSError:
            continue  # went away while we counted
    return total

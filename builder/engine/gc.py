"""The engine's images as `strata gc` sees them, and their removal (builder/plan/retention.py decides which);
also the removal of cache entries the stores' owners listed (`remove_cached_files`).

Each image (untagged ones too) is listed with its references, labels, age, diff_ids, its layers' chain ids and
sizes (what removing it frees is the layers no other image has) and whether a container uses it. Removal untags reference by reference,
never forced: the engine itself refuses to remove an image a container uses. Stopped install containers a killed
run left (`list_install_containers`) go first, so the images they use are free to go.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from builder.engine.client import ENGINE_ERRORS
from builder.engine.install_container import INSTALL_LABEL
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


@dataclass(frozen=True)
class LayerFacts:
    """What the engine tells of one image's layers: chain ids bottom first, its size, its history's step sizes."""

    chains: tuple[str, ...]
    size: int
    history_sizes: tuple[int, ...] = ()  # oldest first; steps that added no layer have size 0


def layer_sizes(images: Sequence[LayerFacts]) -> dict[str, int]:
    """The bytes each layer (chain id) adds, from what every image of the engine tells (pure).

    An image's size is the sum of its layers: it fixes the running total at its top layer. Where an image's history
    has exactly one sized step per layer, it fixes the running total at every layer. Each layer then gets the
    growth since the nearest fixed total below it; layers between fixed totals get 0 and the next fixed one the
    whole step. Removing whole images (parents are images too) frees exactly the sum over their own layers.
    """
    running: dict[str, int] = {}
    for image in images:
        if image.chains:
            running[image.chains[-1]] = image.size
        sized = [s for s in image.history_sizes if s > 0]
        if len(sized) == len(image.chains):
            total = 0
            for chain, size in zip(image.chains, sized, strict=True):
                total += size
                running.setdefault(chain, total)
    sizes: dict[str, int] = {}
    for image in images:
        below = 0
        for chain in image.chains:
            if chain in running:
                sizes[chain] = max(0, running[chain] - below)
                below = running[chain]
            else:
                sizes.setdefault(chain, 0)
    return sizes


def list_images(client: Any) -> list[EngineImage]:
    """Every image of the engine, untagged ones too (they hold layers: what removing others frees depends on them)."""
    used = {str(c.get("ImageID", "")) for c in client.api.containers(all=True)}
    found: list[tuple[EngineImage, LayerFacts]] = []
    for summary in client.api.images():
        image_id = str(summary["Id"])
        try:
            diff_ids = tuple((client.api.inspect_image(image_id).get("RootFS") or {}).get("Layers") or ())
            history = tuple(int(h.get("Size") or 0) for h in reversed(client.api.history(image_id)))
        except ENGINE_ERRORS:
            continue  # removed while we looked
        image = EngineImage(
            id=image_id,
            refs=tuple(t for t in summary.get("RepoTags") or () if t != "<none>:<none>"),
            labels=dict(summary.get("Labels") or {}),
            created=float(summary.get("Created") or 0),
            diff_ids=diff_ids,
            in_use=image_id in used,
        )
        found.append((image, LayerFacts(tuple(chain_ids(diff_ids)), int(summary.get("Size") or 0), history)))
    sizes = layer_sizes([facts for _, facts in found])
    return [
        dataclasses.replace(image, layers=tuple((chain, sizes[chain]) for chain in facts.chains))
        for image, facts in found
    ]


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


def list_install_containers(client: Any) -> list[CachedFile]:
    """Stopped containers of install stages (builder/engine/install_container.py), with the bytes of their files.

    A finished build removes its own; these are a killed run's. Running or just created ones may belong to a live
    run (of another checkout) and are not listed.
    """
    found = []
    for summary in client.api.containers(all=True, size=True, filters={"label": INSTALL_LABEL}):
        if summary.get("State") in ("exited", "dead"):
            found.append(CachedFile(str(summary["Id"]), (), int(summary.get("SizeRw") or 0)))
    return found


def remove_containers(client: Any, entries: Iterable[CachedFile]) -> int:
    """Remove the containers of `entries` (gone already is fine); returns the bytes their listing counted."""
    freed = 0
    for entry in entries:
        try:
            client.api.remove_container(entry.key, force=False)
        except docker.errors.NotFound:
            pass
        except ENGINE_ERRORS:
            continue  # started again, or the engine refused: left for the next gc
        freed += entry.size
    return freed

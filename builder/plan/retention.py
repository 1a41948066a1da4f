"""What `strata gc` deletes, decided without touching anything: inventories of the engine and the caches in, a
deletion plan out (pure; the listing and deleting live next to what owns each store).

What is Strata's, and when it is garbage:

- engine images: every reference in the matrix's `<registry>/<namespace>/` and the `io.strata.content-hash` label.
  One stays when its content hash (label or content tag) is a node's of the matrix under any of its profiles
  (`--profile` picks what a build makes, not what the machine keeps), when a version tag carries one of the
  `keep_releases` most recent releases (`-r<release>`), or when a container (running or stopped) uses it. A version
  tag alone does not keep an image: within a release it names whatever the last build made, and an image whose
  content the plan moved away from is not the node's. An image that also has a reference of someone else is never
  Strata's to delete.
- raw build images (`strata-build/*`, `strata-verify/*`) that a failed run left behind: when they carry the
  content hash of a node of the matrix and are older than RAW_MIN_AGE (a run in progress still needs its own).
- BuildKit records: every record attributed to a Strata build (builder/engine/build_records.py) goes: no build
  reuses one, since each install step's wheelhouse URL names a new port per run.
- wheels that no lock under locks/ names; root filesystems no base lock names; downloaded .debs of package versions
  no base lock lists; compressed layers whose diff_id no image that stays in the engine has.
- scratch a killed run left (served wheelhouses, build contexts, temporary directories): all of it, since gc holds
  the run lock (builder/state_lock.py) and so no run is using them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.matrix.load import load_matrix
from builder.plan.graph import LABEL_HASH, Plan, build_plan
from builder.plan.lockfile import DebPackage, read_lock

RAW_REPOSITORIES = ("strata-build/", "strata-verify/")
RAW_MIN_AGE_SECONDS = 3600
_RELEASE = re.compile(r"-r(\d+)$")

IMAGES = "images"
BUILD_CACHE = "build cache"
COMPRESSED_LAYERS = "compressed layers"
WHEELS = "wheels"
ROOTFS = "root filesystems"
DEBS = "debs"
SCRATCH = "scratch"
CONTAINERS = (
    "install containers"  # stopped containers of install stages (a killed `strata build` leaves them)
)
CATEGORIES = (IMAGES, BUILD_CACHE, CONTAINERS, COMPRESSED_LAYERS, WHEELS, ROOTFS, DEBS, SCRATCH)


@dataclass(frozen=True)
class EngineImage:
    """One image of the engine as gc sees it.

    layers: (chain id, bytes) of each layer, bottom first: what removing images frees is the layers no remaining
    image has. diff_ids: what compressed-layer cache entries are keyed by.
    """

    id: str
    refs: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0
    layers: tuple[tuple[str, int], ...] = ()
    diff_ids: tuple[str, ...] = ()
    in_use: bool = False


@dataclass(frozen=True)
class CachedFile:
    """One entry of a store: `key` is what references it (a wheel's sha256, a rootfs sha256, a diff_id, a .deb file
    name, a BuildKit record id); `paths` are the files or directories that make it up (none for engine records)."""

    key: str
    paths: tuple[Path, ...]
    size: int


@dataclass(frozen=True)
class Needs:
    """What must stay: the matrix's image scope and nodes, and every input the locks name."""

    namespace_prefix: str  # "<registry>/<namespace>/"
    cache_refs: frozenset[str]  # the content-tagged reference of every node of every profile
    content_hashes: frozenset[str]
    wheels: frozenset[str] = frozenset()  # sha256 of every locked wheel
    rootfs: frozenset[str] = frozenset()  # sha256 of every locked root filesystem
    debs: frozenset[str] = frozenset()  # file names (apt's) of every locked Debian package
    keep_releases: int = 0
    now: float = 0.0


@dataclass(frozen=True)
class Inventory:
    """Everything gc may delete, as listed by each store's owner."""

    images: Sequence[EngineImage] = ()
    records: Sequence[CachedFile] = ()  # BuildKit records already attributed to Strata builds
    compressed_layers: Sequence[CachedFile] = ()
    wheels: Sequence[CachedFile] = ()
    rootfs: Sequence[CachedFile] = ()
    debs: Sequence[CachedFile] = ()
    scratch: Sequence[CachedFile] = ()
    containers: Sequence[CachedFile] = ()  # stopped install containers (key: container id, size: their files)


@dataclass(frozen=True)
class KeptImages:
    """Strata's images that stay, counted by the first reason that keeps each."""

    plan: int = 0
    releases: Mapping[int, int] = field(default_factory=dict)  # release -> images kept for it
    in_use: int = 0


@dataclass(frozen=True)
class GcPlan:
    images: tuple[EngineImage, ...]
    image_bytes: int
    files: Mapping[str, tuple[CachedFile, ...]]  # every category but images, in CATEGORIES order
    kept: KeptImages
    kept_releases: tuple[int, ...]

    def count(self, category: str) -> int:
        return len(self.images) if category == IMAGES else len(self.files.get(category, ()))

    def bytes(self, category: str) -> int:
        if category == IMAGES:
            return self.image_bytes
        return sum(f.size for f in self.files.get(category, ()))

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes(c) for c in CATEGORIES)


def plans_of_every_profile(matrix_file: Path, registry_override: str | None = None) -> list[Plan]:
    """One plan per profile the matrix defines: gc keeps what any of them builds."""
    first = load_matrix(matrix_file, registry_override=registry_override)
    others = [p for p in first.model.profiles if p != first.profile]
    return [build_plan(first)] + [build_plan(load_matrix(matrix_file, p, registry_override)) for p in others]


def needs_of(plans: Sequence[Plan], locks_dir: Path, *, keep_releases: int = 0, now: float = 0.0) -> Needs:
    """What the matrix (all its profiles, one plan each) and every lock under `locks_dir` keep."""
    if not plans:
        raise ValueError("needs_of: no plan")
    model = plans[0].matrix.model
    wheels: set[str] = set()
    rootfs: set[str] = set()
    debs: set[str] = set()
    for path in sorted(locks_dir.rglob("*.lock")) if locks_dir.is_dir() else []:
        lock = read_lock(path)
        if lock is None:
            continue
        wheels.update(w.sha256 for w in lock.wheels)
        if lock.rootfs is not None:
            rootfs.add(lock.rootfs.sha256)
        debs.update(deb_file_name(d) for d in lock.debs)
    return Needs(
        namespace_prefix=f"{model.registry.address}/{model.registry.namespace}/",
        cache_refs=frozenset(n.cache_ref for p in plans for n in p.nodes),
        content_hashes=frozenset(n.content_hash for p in plans for n in p.nodes),
        wheels=frozenset(wheels),
        rootfs=frozenset(rootfs),
        debs=frozenset(debs),
        keep_releases=keep_releases,
        now=now,
    )


def deb_file_name(deb: DebPackage) -> str:
    """The name apt gives the downloaded package: `bsdutils_1%3a2.38.1-5+deb12u3_amd64.deb`."""
    return f"{deb.name}_{deb.version.replace(':', '%3a')}_{deb.arch}.deb"


def release_of(ref: str) -> int | None:
    """The release a version reference carries (`...:2.13.1-cpu-py3.11-bookworm-r3` -> 3); None for others."""
    _, colon, tag = ref.rpartition(":")
    if not colon or "/" in tag or tag.startswith("h-"):
        return None  # no tag (the colon was a registry port's), or a content tag
    match = _RELEASE.search(tag)
    return int(match.group(1)) if match else None


def is_strata_image(image: EngineImage, needs: Needs) -> bool:
    """Every reference is in the matrix's namespace and the image is labelled by a Strata build."""
    return (
        bool(image.refs)
        and all(r.startswith(needs.namespace_prefix) for r in image.refs)
        and bool(image.labels.get(LABEL_HASH))
    )


def is_raw_leftover(image: EngineImage, needs: Needs) -> bool:
    """A raw build image of one of the matrix's nodes, old enough that no run in progress still needs it."""
    return (
        bool(image.refs)
        and all(r.startswith(RAW_REPOSITORIES) for r in image.refs)
        and image.labels.get(LABEL_HASH, "") in needs.content_hashes
        and needs.now - image.created >= RAW_MIN_AGE_SECONDS
    )


def plan_gc(inventory: Inventory, needs: Needs) -> GcPlan:
    """The deletion plan for `inventory` given what `needs` keeps.

    Example: an image tagged only `127.0.0.1:5000/strata/base:h-<old hash>` with no container goes; one tagged
    with a node's cache_ref stays.
    """
    strata = [i for i in inventory.images if is_strata_image(i, needs)]
    releases = sorted({r for i in strata for r in map(release_of, i.refs) if r is not None}, reverse=True)
    kept_releases = tuple(releases[: max(0, needs.keep_releases)])
    doomed: list[EngineImage] = []
    plan_kept = in_use = 0
    by_release: dict[int, int] = {}
    for image in strata:
        image_releases = {r for r in map(release_of, image.refs) if r is not None}
        if set(image.refs) & needs.cache_refs or image.labels.get(LABEL_HASH) in needs.content_hashes:
            plan_kept += 1
        elif image_releases & set(kept_releases):
            newest = max(image_releases & set(kept_releases))
            by_release[newest] = by_release.get(newest, 0) + 1
        elif image.in_use:
            in_use += 1
        else:
            doomed.append(image)
    doomed += [i for i in inventory.images if not i.in_use and is_raw_leftover(i, needs)]
    doomed_ids = {i.id for i in doomed}
    remaining = [i for i in inventory.images if i.id not in doomed_ids]
    kept_diff_ids = {d for i in remaining for d in i.diff_ids}
    files = {
        BUILD_CACHE: tuple(inventory.records),
        CONTAINERS: tuple(inventory.containers),
        COMPRESSED_LAYERS: _unreferenced(inventory.compressed_layers, kept_diff_ids),
        WHEELS: _unreferenced(inventory.wheels, needs.wheels),
        ROOTFS: _unreferenced(inventory.rootfs, needs.rootfs),
        DEBS: _unreferenced(inventory.debs, needs.debs),
        SCRATCH: tuple(inventory.scratch),
    }
    return GcPlan(
        images=tuple(doomed),
        image_bytes=freed_by_removing(doomed, remaining),
        files=files,
        kept=KeptImages(plan=plan_kept, releases=by_release, in_use=in_use),
        kept_releases=kept_releases,
    )


def freed_by_removing(removed: Iterable[EngineImage], remaining: Iterable[EngineImage]) -> int:
    """Bytes of the layers that only `removed` images have (a layer two removed images share counts once)."""
    still_used = {chain for image in remaining for chain, _ in image.layers}
    freed: dict[str, int] = {}
    for image in removed:
        for chain, size in image.layers:
            if chain not in still_used:
                freed[chain] = size
    return sum(freed.values())


def _unreferenced(entries: Iterable[CachedFile], referenced: Iterable[str]) -> tuple[CachedFile, ...]:
    keep = set(referenced)
    return tuple(e for e in entries if e.key not in keep)

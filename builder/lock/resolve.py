"""`strata lock`: pin every node's inputs (wheels with sha256, the base root filesystem and its Debian packages).

Layers resolve on top of their ancestors: a tools lock never repeats or contradicts a framework pin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import StrataError
from builder.plan.lockfile import DebPackage, Lock, PinnedRootfs, canonical_name
from builder.lock.pip_resolver import resolve_in_image
from builder.plan.graph import LayerNode, Plan

if TYPE_CHECKING:
    from builder.lock.rootfs import RootfsSpec


@dataclass(frozen=True)
class LockStatus:
    node: str
    path: str
    state: str  # "ok" | "stale" | "missing" | "written" | "unchanged"


def lock_states(plan: Plan) -> list[LockStatus]:
    """Which lock files are missing or stale for the plan (pure: compares input digests)."""
    out = []
    for n in plan.nodes:
        if n.lock_path is None:
            continue
        state = "missing" if n.lock is None else ("ok" if n.lock.inputs == n.lock_inputs else "stale")
        out.append(LockStatus(n.id, n.lock_path, state))
    return out


def ancestors(plan: Plan, node: LayerNode) -> list[LayerNode]:
    chain = []
    parent = node.parent
    while parent:
        p = plan.node(parent)
        chain.append(p)
        parent = p.parent
    return list(reversed(chain))


def rootfs_spec(node: LayerNode) -> RootfsSpec:
    from builder.lock.rootfs import DEBIAN_SECURITY_MIRROR, RootfsSpec

    r = node.rootfs or {}
    return RootfsSpec(
        suite=r["suite"],
        epoch=int(r["epoch"]),
        mirror=r["mirror"],
        variant=r["variant"],
        packages=tuple(r["packages"]),
        security_mirror=DEBIAN_SECURITY_MIRROR if r.get("security") else None,
        updates=bool(r.get("updates")),
    )


def base_image_for(plan: Plan, node: LayerNode, engine: Any) -> str:
    """The engine reference of the node's base (built first if missing): resolution runs in it."""
    from builder.build.orchestrate import BuildOptions, build_images

    base = ([a for a in ancestors(plan, node) if a.parent is None] or [node])[0]
    outcomes = build_images(plan.select([base.id]), engine, BuildOptions())
    failed = [o for o in outcomes if o.status not in ("built", "cached", "pulled")]
    if failed:
        raise StrataError(f"{node.id}: cannot resolve without its base image: {failed[0].message}")
    return base.cache_ref


def lock_node(
    plan: Plan, node: LayerNode, cache_dir: Path, new_locks: dict[str, Lock], engine: Any = None
) -> Lock:
    """Resolve one node (its ancestors' locks must be current, taken from `new_locks` first)."""
    profile = plan.matrix.profile
    if node.rootfs is not None:
        from builder.lock.rootfs import build_rootfs

        art = build_rootfs(rootfs_spec(node), cache_dir)
        return Lock(
            node=node.id,
            profile=profile,
            inputs=node.lock_inputs,
            rootfs=PinnedRootfs(art.sha256, art.size),
            debs=tuple(DebPackage(p.name, p.version, p.arch) for p in art.packages),
        )
    chain = [a for a in ancestors(plan, node) if a.requirements]
    requirements: list[str] = []
    constraints: dict[str, str] = {}
    for a in chain:
        requirements += list(a.requirements)
        lock = new_locks.get(a.id) or a.lock
        if lock is None:
            raise StrataError(f"{node.id}: parent {a.id} is not locked yet")
        constraints.update(lock.pins())
    requirements += list(node.requirements)
    if engine is None:
        raise StrataError(f"{node.id}: resolving needs the Docker engine (pip runs inside the base image)")
    wheels = resolve_in_image(
        engine, base_image_for(plan, node, engine), requirements, constraints, cache_dir, node.id
    )
    own = []
    for w in wheels:
        pinned = constraints.get(canonical_name(w.name))
        if pinned is None:
            own.append(w)
        elif pinned != w.version:
            raise StrataError(
                f"{node.id}: resolver picked {w.name} {w.version} but a parent layer pins {pinned}"
            )
    return Lock(node=node.id, profile=profile, inputs=node.lock_inputs, wheels=tuple(own))


def write_locks(
    plan: Plan, cache_dir: Path, refresh: bool = False, log: Callable[[str], None] = print
) -> list[LockStatus]:
    """Lock every stale or missing node in plan order; rewriting a fresh lock leaves the bytes unchanged."""
    from builder.plan.graph import build_plan

    results: list[LockStatus] = []
    new_locks: dict[str, Lock] = {}
    root = plan.matrix.root
    engine: Any = None
    for node in plan.nodes:
        if node.lock_path is None:
            continue
        # Parents may have just been re-locked: recompute this node's input digest against them.
        current = build_plan(plan.matrix).node(node.id)
        if current.lock is not None and current.lock.inputs == current.lock_inputs and not refresh:
            results.append(LockStatus(node.id, node.lock_path, "unchanged"))
            continue
        log(f"locking {node.id} ...")
        if engine is None and current.rootfs is None:
            from builder.engine.host import ensure_engine

            ensure_engine(auto_start=True).close()
            import docker

            engine = docker.from_env(timeout=3600)
        lock = lock_node(build_plan(plan.matrix), current, cache_dir, new_locks, engine)
        path = root / node.lock_path
        path.parent.mkdir(parents=True, exist_ok=True)
        text = lock.render()
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        new_locks[node.id] = lock
        results.append(LockStatus(node.id, node.lock_path, "written" if old != text else "unchanged"))
    return results

"""`strata lock`: pin every node's inputs (wheels with sha256, the base root filesystem and its Debian packages).

Layers resolve on top of their ancestors: a tools lock never repeats or contradicts a framework pin. Resolving
Python layers is delegated to a `WheelResolver` (in production pip inside the node's base image, see
`builder.lock.pip_resolver.InImageResolver`; in tests anything that answers the same question).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from builder.errors import StrataError
from builder.events import EventSink, LockFinished, LockStarted, LockState, ignore_events
from builder.lock.rootfs import DEBIAN_SECURITY_MIRROR, RootfsSpec, build_rootfs
from builder.plan.graph import LayerNode, Plan, build_plan
from builder.plan.lockfile import DebPackage, Lock, PinnedRootfs, PinnedWheel, canonical_name


@dataclass(frozen=True)
class LockStatus:
    node: str
    path: str
    state: LockState


class WheelResolver(Protocol):
    """Resolves a node's requirements (with its ancestors' pins as constraints) to the wheels to install."""

    def resolve(
        self, plan: Plan, node: LayerNode, requirements: Sequence[str], constraints: Mapping[str, str]
    ) -> list[PinnedWheel]: ...


def lock_states(plan: Plan) -> list[LockStatus]:
    """Which lock files are missing or stale for the plan (pure: compares input digests)."""
    out = []
    for n in plan.nodes:
        if n.lock_path is None:
            continue
        if n.lock is None:
            state = LockState.MISSING
        else:
            state = LockState.OK if n.lock.inputs == n.lock_inputs else LockState.STALE
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


def base_of(plan: Plan, node: LayerNode) -> LayerNode:
    """The root of the node's chain: the base node whose image resolution runs in."""
    return ([a for a in ancestors(plan, node) if a.parent is None] or [node])[0]


def rootfs_spec(node: LayerNode) -> RootfsSpec:
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


def lock_node(
    plan: Plan,
    node: LayerNode,
    cache_dir: Path,
    new_locks: Mapping[str, Lock],
    resolver: WheelResolver,
    environ: Mapping[str, str],
) -> Lock:
    """Resolve one node (its ancestors' locks must be current, taken from `new_locks` first).

    A base node is locked by building its root filesystem (mmdebstrap runs with `environ`); any other node by
    `resolver`, with every ancestor's requirements and pins. A resolver that picks another version of a
    package an ancestor pins is an error: a layer never changes what is below it.
    """
    profile = plan.matrix.profile
    if node.rootfs is not None:
        art = build_rootfs(rootfs_spec(node), cache_dir, environ=environ)
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
    wheels = resolver.resolve(plan, node, requirements, constraints)
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
    plan: Plan,
    cache_dir: Path,
    resolver: WheelResolver,
    environ: Mapping[str, str],
    refresh: bool = False,
    on_event: EventSink = ignore_events,
) -> list[LockStatus]:
    """Lock every stale or missing node in plan order; rewriting a fresh lock leaves the bytes unchanged.

    Reports LockStarted before resolving a node and LockFinished (written or unchanged) for every node.
    """
    results: list[LockStatus] = []
    new_locks: dict[str, Lock] = {}
    root = plan.matrix.root
    for node in plan.nodes:
        if node.lock_path is None:
            continue
        # Parents may have just been re-locked: recompute this node's input digest against them.
        current = build_plan(plan.matrix).node(node.id)
        if current.lock is not None and current.lock.inputs == current.lock_inputs and not refresh:
            results.append(LockStatus(node.id, node.lock_path, LockState.UNCHANGED))
            on_event(LockFinished(node.id, node.lock_path, LockState.UNCHANGED))
            continue
        on_event(LockStarted(node.id))
        lock = lock_node(build_plan(plan.matrix), current, cache_dir, new_locks, resolver, environ)
        path = root / node.lock_path
        path.parent.mkdir(parents=True, exist_ok=True)
        text = lock.render()
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        new_locks[node.id] = lock
        state = LockState.WRITTEN if old != text else LockState.UNCHANGED
        results.append(LockStatus(node.id, node.lock_path, state))
        on_event(LockFinished(node.id, node.lock_path, state))
    return results

"""`strata lock`: pin every node's inputs (wheels with sha256, the base root filesystem and its Debian packages).

Layers resolve on top of their ancestors: a tools lock never repeats or contradicts a framework pin. Resolving
Python layers is delegated to a `WheelResolver` (in production pip inside the node's base image, see
`builder.lock.pip_resolver.InImageResolver`; in tests anything that answers the same question).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.errors import StrataError
from builder.events import EventSink, LockFinished, LockStarted, LockState, ignore_events
from builder.lock.indexes import wheel_url_problem
from builder.lock.rootfs import DEBIAN_SECURITY_MIRROR, RootfsSpec, build_rootfs
from builder.plan.graph import LayerNode, Plan, build_plan
from builder.plan.lockfile import (
    FORMAT_VERSION,
    DebPackage,
    Lock,
    PinnedRootfs,
    PinnedWheel,
    canonical_name,
    read_lock,
)


@dataclass(frozen=True)
class LockStatus:
    node: str
    path: str
    state: LockState
    line: int = 0  # the line of the lock file the reason is about (0: the file as a whole)
    reason: str = ""  # why it is not ok, one line

    def describe(self) -> str:
        """e.g. 'locks/hermetic/tools-x.lock:7: tampered: numpy: https://evil.example is neither ...'."""
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.state}" + (f": {self.reason}" if self.reason else "")


class WheelResolver(Protocol):
    """Resolves a node's requirements (with its ancestors' pins as constraints) to the wheels to install."""

    def resolve(
        self, plan: Plan, node: LayerNode, requirements: Sequence[str], constraints: Mapping[str, str]
    ) -> list[PinnedWheel]: ...


def lock_states(
    plan: Plan, indexes: Sequence[str] = (), unreadable: Mapping[str, StrataError] | None = None
) -> list[LockStatus]:
    """The state of every lock of the plan (pure): ok, missing, stale (its inputs changed) or tampered.

    A lock is tampered when it failed to read (`unreadable`: its path relative to the matrix root -> the error;
    a malformed line or a digest that does not match), names another node or profile in its header, names a
    wheel on a host that is neither PyPI's nor one of `indexes` (settings.package_indexes), pins a name or
    version other than its wheel file's or a package twice; or when, its inputs being current, it pins again
    what a parent pins or leaves a requirement of its node unpinned or pinned outside its specifier. Each names
    the lock file itself and the line. A lock below a tampered or missing one is stale, and says which.
    """
    unreadable = unreadable or {}
    out: list[LockStatus] = []
    bad: set[str] = set()
    for n in plan.nodes:
        if n.lock_path is None:
            continue
        chain = [a for a in ancestors(plan, n) if a.lock_path]
        broken_parent = next((a for a in chain if a.id in bad), None)
        line, reason = 0, ""
        if n.lock_path in unreadable:
            error = unreadable[n.lock_path]
            state, line, reason = (
                LockState.TAMPERED,
                (error.location.line or 0) if error.location else 0,
                error.message,
            )
        elif n.lock is None:
            state, reason = LockState.MISSING, f"node {n.id} has no lock"
        elif problem := _tampered(plan, n, n.lock, indexes):
            state, (line, reason) = LockState.TAMPERED, problem
        elif n.lock.inputs != n.lock_inputs:
            state, line = LockState.STALE, 2
            reason = (
                f"the lock it resolves on, {broken_parent.lock_path}, is {'missing' if broken_parent.lock is None and broken_parent.lock_path not in unreadable else 'tampered'}"
                if broken_parent
                else "its inputs changed (requirements, Python, base or a parent's pins)"
            )
        elif problem := _contradicts_inputs(n, n.lock, chain):
            state, (line, reason) = LockState.TAMPERED, problem
        elif n.lock.format_version < FORMAT_VERSION:
            state, line = LockState.STALE, 1
            reason = f"lock format v{n.lock.format_version} has no digest; `strata lock` rewrites the header, keeping the pins"
        else:
            state = LockState.OK
        if state in (LockState.TAMPERED, LockState.MISSING):
            bad.add(n.id)
        out.append(LockStatus(n.id, n.lock_path, state, line, reason))
    return out


def _tampered(plan: Plan, node: LayerNode, lock: Lock, indexes: Sequence[str]) -> tuple[int, str] | None:
    """(line, why) for the first entry of `lock` that `strata lock` would never have written, whatever the inputs."""
    profile = plan.matrix.profile
    if lock.node != node.id or lock.profile != profile:
        return 1, (
            f"the header names node {lock.node} profile {lock.profile}, but this file is the lock of node "
            f"{node.id} profile {profile}"
        )
    seen: set[str] = set()
    for w in lock.wheels:
        if problem := wheel_url_problem(w.url, indexes):
            return w.line, f"{w.name}: {problem}"
        try:
            file_name, file_version, _, _ = parse_wheel_filename(w.filename)
            same = file_name == canonicalize_name(w.name) and file_version == Version(w.version)
        except (InvalidWheelFilename, InvalidVersion):
            return w.line, f"{w.name}=={w.version}: {w.filename} is not a valid wheel file name"
        if not same:
            return (
                w.line,
                f"pins {w.name}=={w.version} but its wheel is {file_name} {file_version} ({w.filename})",
            )
        name = canonical_name(w.name)
        if name in seen:
            return w.line, f"{w.name} is pinned twice"
        seen.add(name)
    return None


def _contradicts_inputs(node: LayerNode, lock: Lock, chain: list[LayerNode]) -> tuple[int, str] | None:
    """(line, why) when a lock whose inputs are current does not answer them: a requirement unpinned or pinned
    outside its specifier, or a package a parent (`chain`, the locked ancestors) already pins pinned again."""
    parent_pins: dict[str, tuple[str, str]] = {}  # canonical name -> (version, node id)
    for a in chain:
        for name, version in (a.lock.pins() if a.lock else {}).items():
            parent_pins[name] = (version, a.id)
    for w in lock.wheels:
        if (name := canonical_name(w.name)) in parent_pins:
            version, parent = parent_pins[name]
            return w.line, f"pins {w.name} again, which parent {parent} pins at {version}"
    pins = {**{k: v for k, (v, _) in parent_pins.items()}, **lock.pins()}
    for text in node.requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue  # not a plain requirement (an option line): pip's business, not the lock's
        if req.marker is not None:
            continue  # depends on the image's Python; the resolver decided
        name = canonical_name(req.name)
        if name not in pins:
            return (
                1,
                f"requirement {text!r} of node {node.id} is pinned by no lock of its chain (a deleted line?)",
            )
        if not req.specifier.contains(pins[name], prereleases=True):
            line = next((w.line for w in lock.wheels if canonical_name(w.name) == name), 1)
            return line, f"{req.name}=={pins[name]} does not satisfy the requirement {text!r}"
    return None


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
    lock_reader: Callable[[Path], Lock | None] = read_lock,
) -> list[LockStatus]:
    """Lock every stale or missing node in plan order; rewriting a fresh lock leaves the bytes unchanged.

    A current lock in an older format gets the new header without being resolved again (its pins are kept).
    `lock_reader` reads the existing locks (the CLI's reads a tampered lock as missing, so it is resolved again).
    Reports LockStarted before resolving a node and LockFinished (written or unchanged) for every node.
    """
    results: list[LockStatus] = []
    new_locks: dict[str, Lock] = {}
    root = plan.matrix.root
    for node in plan.nodes:
        if node.lock_path is None:
            continue
        # Parents may have just been re-locked: recompute this node's input digest against them.
        current = build_plan(plan.matrix, lock_reader=lock_reader).node(node.id)
        if current.lock is not None and current.lock.inputs == current.lock_inputs and not refresh:
            if current.lock.format_version < FORMAT_VERSION:
                # The pins are kept: only the header (format, body digest) is rewritten.
                new = replace(current.lock, format_version=FORMAT_VERSION)
                state = _write(root / node.lock_path, new.render())
            else:
                state = LockState.UNCHANGED
            results.append(LockStatus(node.id, node.lock_path, state))
            on_event(LockFinished(node.id, node.lock_path, state))
            continue
        on_event(LockStarted(node.id))
        lock = lock_node(
            build_plan(plan.matrix, lock_reader=lock_reader), current, cache_dir, new_locks, resolver, environ
        )
        new_locks[node.id] = lock
        state = _write(root / node.lock_path, lock.render())
        results.append(LockStatus(node.id, node.lock_path, state))
        on_event(LockFinished(node.id, node.lock_path, state))
    return results


def _write(path: Path, text: str) -> LockState:
    """Write `text` to `path` atomically unless it is there already: written or unchanged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if old == text:
        return LockState.UNCHANGED
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return LockState.WRITTEN

"""The build plan: a DAG of layer nodes (shared nodes once), each with a content hash and the tags it publishes.

Each cell becomes the nodes of the layer kinds it has (layers.py declares them; this module never names one).
Errors caused by a matrix value point at it (matrix.yaml:line:col).
Pure: reads matrix.yaml, templates, requirement and lock files; no Docker, no network.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from builder.errors import Location, MatrixError
from builder.matrix import compat
from builder.matrix.load import Cell, Matrix
from builder.matrix.schema import Alias
from builder.plan.budgets import Budget, node_budget
from builder.plan.layers import LAYER_KINDS, CellLayer, LayerKind
from builder.plan.lockfile import Lock, digest_inputs, read_lock
from builder.plan.render import TemplateRenderer
from builder.plan.tags import TagFacts, check_tag, content_tag, expand

# The label every node's image carries (layers/_macros.j2, label_block): build avoidance and the registry cache
# trust an image for a node only when it holds the node's content hash.
LABEL_HASH = "io.strata.content-hash"
# Bump when the way images are produced changes (templates' helpers, canonical form): every hash changes with it.
PLAN_FORMAT = 1
# Python layers are resolved by this pip, run inside the node's base image (see builder/pip_resolver.py).
RESOLVER = "pip 24.2 in the base image"


@dataclass(frozen=True)
class LayerNode:
    """One image build. `content_hash` covers everything that determines the image."""

    id: str
    layer: str
    parent: str | None
    cells: tuple[str, ...]
    dockerfile: str
    requirements: tuple[str, ...]  # pip requirement lines this layer asks for (empty for base nodes)
    lock_path: str | None  # relative to the matrix root
    lock: Lock | None
    lock_inputs: str  # digest of what the lock must be resolved from; a lock with other inputs is stale
    content_hash: str
    tags: tuple[str, ...]  # version references, immutable once pushed
    aliases: tuple[str, ...]  # floating references, moved only by `strata promote`
    cache_ref: str  # registry reference keyed by the content hash (build avoidance, push with cache)
    python: str
    os_name: str
    base_image: str | None  # external image this node starts FROM (upstream profile), pinned by digest
    rootfs: dict[str, Any] | None  # mmdebstrap recipe for hermetic base nodes
    facts: dict[str, str] = field(default_factory=dict)
    # Not part of the content hash: a budget decides whether an image is accepted, not what it holds.
    budget: Budget | None = None

    @property
    def local_ref(self) -> str:
        """The engine tag children build FROM: exact, so a stale image can never be picked up."""
        return self.cache_ref

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "layer": self.layer,
            "parent": self.parent,
            "cells": list(self.cells),
            "content_hash": self.content_hash,
            "tags": list(self.tags),
            "aliases": list(self.aliases),
            "cache_ref": self.cache_ref,
            "lock": self.lock_path,
            "locked": self.lock is not None and self.lock.inputs == self.lock_inputs,
        }


@dataclass(frozen=True)
class Plan:
    matrix: Matrix
    nodes: tuple[LayerNode, ...]  # parents before children
    finals: dict[str, str] = field(default_factory=dict)  # cell id -> id of the node that is the cell's image

    def node(self, node_id: str) -> LayerNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise MatrixError(f"no node '{node_id}' in the plan")

    def children(self, node_id: str) -> list[LayerNode]:
        return [n for n in self.nodes if n.parent == node_id]

    def final_node(self, cell_id: str) -> LayerNode:
        """The last node of a cell's chain: the image the cell id names."""
        return self.node(self.finals[cell_id])

    def cell_ids(self) -> list[str]:
        """Cells whose final image is in this plan (a selection that keeps only a shared base lists none)."""
        present = {n.id for n in self.nodes}
        return [c.id for c in self.matrix.cells if self.finals.get(c.id) in present]

    def select(self, patterns: list[str] | None) -> Plan:
        """Keep nodes matching any glob (on cell ids or node ids) plus their ancestors."""
        if not patterns:
            return self
        wanted: set[str] = set()
        for pat in patterns:
            hit = [
                n.id
                for n in self.nodes
                if fnmatch.fnmatchcase(n.id, pat) or any(fnmatch.fnmatchcase(c, pat) for c in n.cells)
            ]
            if not hit:
                raise MatrixError(
                    f"--only '{pat}' matches no cell or node (cells: {', '.join(self.cell_ids())})"
                )
            # A node is kept when its id matches or one of its cells does (a cell's whole chain).
            wanted.update(hit)
        closure = set(wanted)
        for node_id in wanted:
            parent = self.node(node_id).parent
            while parent:
                closure.add(parent)
                parent = self.node(parent).parent
        kept = tuple(n for n in self.nodes if n.id in closure)
        return Plan(matrix=self.matrix, nodes=kept, finals=self.finals)


def build_plan(
    matrix: Matrix,
    layers_dir: Path | None = None,
    locks_dir: Path | None = None,
    lock_reader: Callable[[Path], Lock | None] = read_lock,
) -> Plan:
    """Expand every cell into its chain of nodes, render Dockerfiles and hash them. Example: `build_plan(load_matrix())`.

    A lock file that is malformed or fails its digest is a LockError (`lock_reader` decides: `strata lock --check`
    passes one that records the error and reads the lock as missing, so it can report every lock).
    """
    root = matrix.root
    renderer = TemplateRenderer(layers_dir or root / "layers")
    locks_dir = locks_dir or root / "locks"
    specs: dict[str, _Spec] = {}
    order: list[str] = []
    finals: dict[str, str] = {}
    for cell in matrix.cells:
        parent: str | None = None
        for spec in _chain(matrix, cell):
            spec.parent = parent
            existing = specs.get(spec.id)
            if existing is None:
                specs[spec.id] = spec
                order.append(spec.id)
            elif existing.identity() != spec.identity():
                raise MatrixError(
                    f"two cells define node '{spec.id}' differently ({existing.cells[0]} and {cell.id})",
                    matrix.locate("frameworks", cell.framework_index),
                )
            specs[spec.id].cells.append(cell.id)
            parent = spec.id
        finals[cell.id] = parent or ""
    nodes: dict[str, LayerNode] = {}
    for node_id in order:
        spec = specs[node_id]
        parent_node = nodes[spec.parent] if spec.parent else None
        nodes[node_id] = _finish(matrix, renderer, locks_dir, spec, parent_node, lock_reader)
    _check_tag_collisions(matrix, list(nodes.values()))
    return Plan(matrix=matrix, nodes=tuple(nodes[i] for i in order), finals=finals)


# ---------------------------------------------------------------------------------------------- node specs


@dataclass
class _Spec:
    """One node as a cell asks for it; cells that ask for the same id must agree on its identity."""

    id: str
    layer: str
    facts: TagFacts
    context: dict[str, Any]
    requirements: tuple[str, ...] = ()
    requirement_files: tuple[str, ...] = ()
    base_image: str | None = None
    rootfs: dict[str, Any] | None = None
    labels: dict[str, str] = field(default_factory=dict)  # the layer kind's own labels (see layers.py)
    parent: str | None = None
    cells: list[str] = field(default_factory=list)
    python: str = ""
    os_name: str = ""

    def identity(self) -> str:
        return json.dumps(
            [
                self.layer,
                self.context,
                self.requirements,
                self.requirement_files,
                self.base_image,
                self.rootfs,
                self.parent,
            ],
            sort_keys=True,
            default=str,
        )


def _chain(matrix: Matrix, cell: Cell) -> list[_Spec]:
    """A cell's nodes bottom to top: every layer kind of the table that the cell has."""
    return [_spec(kind, at) for kind in LAYER_KINDS for at in kind.of(matrix, cell)]


def _spec(kind: LayerKind, at: CellLayer) -> _Spec:
    adds = kind.adds(at)
    facts = kind.facts(at)
    return _Spec(
        id=kind.node_id(at),
        layer=kind.name,
        facts=facts,
        context=kind.context(at, adds),
        requirements=adds.requirements,
        requirement_files=adds.requirement_files,
        base_image=adds.base_image,
        rootfs=adds.rootfs,
        labels=kind.own_labels(at, facts),
        python=at.cell.python,
        os_name=at.cell.os_name,
    )


# ---------------------------------------------------------------------------------------------- hashing


def _finish(
    matrix: Matrix,
    renderer: TemplateRenderer,
    locks_dir: Path,
    spec: _Spec,
    parent: LayerNode | None,
    lock_reader: Callable[[Path], Lock | None],
) -> LayerNode:
    m = matrix.model
    labels = _labels(matrix, spec, parent)
    context = {**spec.context, "node": {"id": spec.id, "layer": spec.layer}, "labels": labels}
    dockerfile = renderer.render(spec.layer, context, spec.id)
    lock_rel: str | None = None
    lock: Lock | None = None
    lock_inputs = ""
    if spec.rootfs is not None or spec.requirements:
        lock_rel = f"locks/{matrix.profile}/{spec.id}.lock"
        lock = lock_reader(locks_dir / matrix.profile / f"{spec.id}.lock")
        lock_inputs = digest_inputs(
            {
                "node": spec.id,
                "rootfs": spec.rootfs,
                "requirements": list(spec.requirements),
                "python": spec.python,
                "glibc": compat.OS_GLIBC.get(spec.os_name, ""),
                # Python layers resolve on top of their parent's pins: a changed parent lock makes this one stale.
                "parent_lock": parent.lock.pinned_text() if parent and parent.lock else None,
                "parent_inputs": parent.lock_inputs if parent else None,
                # How pins are resolved is an input too: changing the resolver makes every lock stale.
                "resolver": RESOLVER if spec.requirements else None,
            }
        )
    content_hash = digest_inputs(
        {
            "format": PLAN_FORMAT,
            "layer": spec.layer,
            "dockerfile": dockerfile,
            "lock": lock.pinned_text() if lock else None,
            "lock_inputs": lock_inputs,
            "base_image": spec.base_image,
            "parent": parent.content_hash if parent else None,
            "build": m.build.model_dump(),
            "epoch": m.source_date_epoch,
        }
    )
    repo = f"{m.registry.address}/{_expand_tag(matrix, 'repositories', spec)}"
    version_tag = _expand_tag(matrix, "version", spec)
    aliases = tuple(f"{repo}:{a.tag}" for _, a in _aliases_of(matrix, spec.layer, spec.cells))
    return LayerNode(
        id=spec.id,
        layer=spec.layer,
        parent=spec.parent,
        cells=tuple(spec.cells),
        dockerfile=dockerfile,
        requirements=spec.requirements,
        lock_path=lock_rel,
        lock=lock,
        lock_inputs=lock_inputs,
        content_hash=content_hash,
        tags=(f"{repo}:{version_tag}",),
        aliases=aliases,
        cache_ref=f"{repo}:{content_tag(content_hash)}",
        python=spec.python,
        os_name=spec.os_name,
        base_image=spec.base_image,
        rootfs=spec.rootfs,
        facts={k: v for k, v in spec.facts.fields().items() if v},
        budget=node_budget(matrix, spec.id),
    )


def _expand_tag(matrix: Matrix, table: str, spec: _Spec) -> str:
    """A node's repository (`table` "repositories") or version tag ("version") from its template in the matrix."""
    path = ("tags", table, spec.layer)
    template: str = getattr(matrix.model.tags, table)[spec.layer]
    try:
        out = expand(template, spec.facts, ".".join(path))
        return check_tag(out, f"node {spec.id}") if table == "version" else out
    except MatrixError as exc:
        raise _located(exc, matrix.locate(*path)) from None


def _aliases_of(matrix: Matrix, layer: str, cells: list[str] | tuple[str, ...]) -> list[tuple[int, Alias]]:
    """The aliases (with their index in the matrix) a node of `layer` shared by `cells` publishes."""
    return [(i, a) for i, a in enumerate(matrix.model.aliases) if a.layer == layer and a.cell in cells]


def _located(exc: MatrixError, where: Location) -> MatrixError:
    """The same error, pointing at the matrix value that caused it unless it already names a place."""
    return exc if exc.location is not None else MatrixError(exc.message, where)


def _labels(matrix: Matrix, spec: _Spec, parent: LayerNode | None) -> dict[str, str]:
    """The labels every node carries, then the layer kind's own (see layers.py), sorted by key."""
    m = matrix.model
    created = datetime.fromtimestamp(m.source_date_epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.vendor": "Strata",
        "org.opencontainers.image.title": spec.id,
        "org.opencontainers.image.description": f"Strata {spec.layer} layer {spec.id}",
        "io.strata.node": spec.id,
        "io.strata.layer": spec.layer,
        "io.strata.profile": matrix.profile,
        "io.strata.os": spec.os_name,
        "io.strata.python": spec.python,
    }
    if spec.base_image:
        labels["org.opencontainers.image.base.name"] = spec.base_image
    elif parent:
        # The parent by content hash: exact, and independent of registry address and release number.
        labels["io.strata.parent-content-hash"] = parent.content_hash
    labels.update(spec.labels)
    return dict(sorted(labels.items()))


def _check_tag_collisions(matrix: Matrix, nodes: list[LayerNode]) -> None:
    """No two nodes publish the same reference. A clash points at the alias that makes it, if one does (version
    tags follow one scheme, an alias is written by hand), else at the version template of the second node."""
    owner: dict[str, tuple[str, tuple[str | int, ...]]] = {}
    for n in nodes:
        sources: list[tuple[str | int, ...]] = [("tags", "version", n.layer)] * len(n.tags)
        sources += [("aliases", i, "tag") for i, _ in _aliases_of(matrix, n.layer, n.cells)]
        for ref, source in zip(n.tags + n.aliases, sources, strict=True):
            if ref in owner and owner[ref][0] != n.id:
                first, first_source = owner[ref]
                culprit = next((s for s in (source, first_source) if s[0] == "aliases"), source)
                raise MatrixError(
                    f"tag collision: '{ref}' would be published by both {first} and {n.id}",
                    matrix.locate(*culprit),
                )
            owner[ref] = (n.id, source)


def plan_digest(plan: Plan) -> str:
    return hashlib.sha256("".join(n.content_hash for n in plan.nodes).encode()).hexdigest()

"""Hand-made plan nodes and lock entries for the publish, lock, pin and catalog unit tests."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any

import pytest

from builder.plan.graph import LayerNode, Plan
from builder.plan.lockfile import Lock, PinnedWheel
from registry_sync.publish.images_lock import LockedImage

REGISTRY = "127.0.0.1:5000"


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def hand_node(
    node_id: str,
    layer: str,
    repository: str,
    version_tag: str,
    *,
    parent: str | None = None,
    cells: tuple[str, ...] = ("c1",),
    registry: str = REGISTRY,
    facts: dict[str, str] | None = None,
    wheels: tuple[tuple[str, str], ...] = (),
    aliases: tuple[str, ...] = (),
    content_hash: str | None = None,
) -> LayerNode:
    """A LayerNode as build_plan would make it, for an image we name ourselves."""
    content_hash = content_hash or hashlib.sha256(f"{node_id}-content".encode()).hexdigest()
    lock = None
    if wheels:
        pins = tuple(
            PinnedWheel(n, v, "0" * 64, f"https://files.example/{n}-{v}-py3-none-any.whl") for n, v in wheels
        )
        lock = Lock(node=node_id, profile="hermetic", inputs="1" * 64, wheels=pins)
    return LayerNode(
        id=node_id,
        layer=layer,
        parent=parent,
        cells=cells,
        dockerfile="FROM scratch\n",
        requirements=(),
        lock_path=f"locks/hermetic/{node_id}.lock" if lock else None,
        lock=lock,
        lock_inputs="1" * 64 if lock else "",
        content_hash=content_hash,
        tags=(f"{registry}/{repository}:{version_tag}",),
        aliases=tuple(f"{registry}/{repository}:{a}" for a in aliases),
        cache_ref=f"{registry}/{repository}:h-{content_hash}",
        python=(facts or {}).get("python", "3.11"),
        os_name=(facts or {}).get("os", "bookworm"),
        base_image=None,
        rootfs=None,
        facts=dict(facts or {}),
    )


def hand_plan(nodes: list[LayerNode], aliases: list[tuple[str, str, str]] = (), namespace: str = "t") -> Plan:  # type: ignore[assignment]
    """A Plan over hand-made nodes; the matrix carries only what publishing reads (registry, aliases, profile)."""
    from builder.matrix.schema import Alias

    model = SimpleNamespace(
        registry=SimpleNamespace(address=REGISTRY, namespace=namespace),
        aliases=[Alias(tag=t, cell=c, layer=layer) for t, c, layer in aliases],
        release=1,
    )
    cells = tuple(SimpleNamespace(id=c) for c in dict.fromkeys(c for n in nodes for c in n.cells))
    matrix: Any = SimpleNamespace(model=model, profile="hermetic", cells=cells)
    return Plan(matrix=matrix, nodes=tuple(nodes))


def locked(
    reference: str, node: str = "n1", *, digest: str | None = None, layer: str = "tools", **extra: Any
) -> LockedImage:
    values: dict[str, Any] = {
        "reference": reference,
        "digest": digest or digest_of(reference),
        "config_digest": digest_of("config " + reference),
        "node": node,
        "layer": layer,
        "parent": None,
        "cells": ("tf2.13.1-cpu",),
        "content_hash": hashlib.sha256(node.encode()).hexdigest(),
        "profile": "hermetic",
        "versions": {
            "tensorflow": "2.13.1",
            "flavor": "cpu",
            "python": "3.11",
            "cuda": None,
            "cudnn": None,
            "os": "bookworm",
        },
        "compressed_size": 612_345_678,
        "uncompressed_size": 1_812_345_678,
    }
    values.update(extra)
    return LockedImage(**values)


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers above as one fixture (test modules cannot import conftest under --import-mode=importlib)."""
    return SimpleNamespace(node=hand_node, plan=hand_plan, locked=locked, digest=digest_of, registry=REGISTRY)

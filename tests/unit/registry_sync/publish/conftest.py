"""The default plan's real nodes, and lock entries standing for their published images (evidence tests)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.matrix.load import load_matrix
from builder.plan.graph import LayerNode, Plan, build_plan
from registry_sync.publish.images_lock import LockedImage
from registry_sync.publish.sbom import image_chain

REPO = Path(__file__).resolve().parents[4]

Published = Callable[[str], tuple[LockedImage, tuple[LayerNode, ...]]]


@pytest.fixture(scope="session")
def default_plan() -> Plan:
    return build_plan(load_matrix(REPO / "matrix.yaml"))


def made_up_digest(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


@pytest.fixture(scope="session")
def published(default_plan: Plan) -> Published:
    """published(node_id) -> (its lock entry as if pushed, digests made up from its id; its chain, root first)."""
    nodes = {n.id: n for n in default_plan.nodes}

    def make(node_id: str) -> tuple[LockedImage, tuple[LayerNode, ...]]:
        node = nodes[node_id]
        entry = LockedImage(
            reference=node.tags[0],
            digest=made_up_digest(f"manifest {node_id}"),
            config_digest=made_up_digest(f"config {node_id}"),
            node=node.id,
            layer=node.layer,
            parent=node.parent,
            cells=node.cells,
            content_hash=node.content_hash,
            profile=default_plan.matrix.profile,
            versions={"os": node.os_name},
            compressed_size=1,
            uncompressed_size=2,
        )
        return entry, image_chain(node, nodes)

    return make

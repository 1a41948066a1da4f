"""strata push with several compression workers on a real engine and real registries: an image of several
layers of real files, read from the engine's storage as `strata push` reads it, gets the same manifest digest
(and the same layer blobs) with 1 worker and with 3, each push compressing every layer afresh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry_sync.publish.push_plan import NodeTarget, PushOptions, publish_plan
from registry_sync.publish.tag_policy import AuditLog, TagPolicy
from registry_sync.registry.client import RegistryClient
from registry_sync.registry.server import ServerSettings

pytestmark = pytest.mark.engine


def _options(registry: str, tmp_path: Path, name: str, workers: int) -> PushOptions:
    return PushOptions(
        registry=registry,
        policy=TagPolicy(),
        audit=AuditLog(tmp_path / f"audit-{name}.jsonl"),
        profile="hermetic",
        cache_dir=tmp_path / f"compressed-{name}",  # empty: every layer is compressed by this push
        work_dir=tmp_path,
        workers=workers,
    )


def test_many_workers_push_the_same_manifest_as_one(
    layered_plan, engine, plain_registry, plain_client, embedded_registry: ServerSettings, tmp_path
):
    plan = layered_plan
    [node] = plan.nodes
    layers = len(engine.images.get(node.cache_ref).attrs["RootFS"]["Layers"])
    [one] = publish_plan(plan, engine, plain_client, _options(plain_registry, tmp_path, "one", 1))

    other = embedded_registry.address
    with RegistryClient(other) as client:
        [many] = publish_plan(plan, engine, client, _options(other, tmp_path, "many", 3))
        target = NodeTarget.of(node, other)
        body = json.loads(client.get_manifest(target.repository, many.manifest_digest).body)  # type: ignore[union-attr]

    assert (one.status, many.status) == ("pushed", "pushed"), (one.message, many.message)
    assert many.manifest_digest == one.manifest_digest
    assert many.bytes_uploaded == one.bytes_uploaded > 200_000
    assert layers == 5
    assert len(body["layers"]) == layers
    cached = sorted(p.name for p in (tmp_path / "compressed-many").iterdir())
    assert sorted(p.name for p in (tmp_path / "compressed-one").iterdir()) == cached
    assert len([name for name in cached if name.endswith(".gz")]) == layers
    assert not [name for name in cached if name.startswith(".partial")]

"""Pure parts of strata push / promote: targets, lock entries from manifests, the lock artifact, alias rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.matrix.load import load_matrix
from builder.oci.digest import sha256_digest
from builder.oci.media_types import DOCKER_MANIFEST_V2, OCI_MANIFEST
from registry_sync.publish.promote import promote_cell_alias
from registry_sync.publish.push_plan import (
    CONTENT_HASH_ANNOTATION,
    UNCOMPRESSED_ANNOTATION,
    NodeTarget,
    PublishError,
    lock_artifact_manifest,
    locked_image,
    matrix_tag_policy,
)
from registry_sync.publish.tag_policy import AuditLog
from registry_sync.registry.client import Manifest

REPO = Path(__file__).resolve().parents[4]


def image_manifest(annotations: dict[str, str]) -> Manifest:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_V2,
            "config": {"mediaType": "x", "size": 1000, "digest": "sha256:" + "c" * 64},
            "layers": [{"mediaType": "y", "size": 20_000, "digest": "sha256:" + "1" * 64}] * 2,
            "annotations": annotations,
        }
    ).encode()
    return Manifest(DOCKER_MANIFEST_V2, body, sha256_digest(body))


def test_target_of_a_node_and_another_registry(kit):
    node = kit.node("tools", "tools", "strata/tensorflow", "2.13.1-cpu")
    target = NodeTarget.of(node)
    assert (target.registry, target.repository, target.version_tag) == (
        "127.0.0.1:5000",
        "strata/tensorflow",
        "2.13.1-cpu",
    )
    assert target.content_tag == f"h-{node.content_hash}"
    assert NodeTarget.of(node, "10.1.2.3:443").version_ref == "10.1.2.3:443/strata/tensorflow:2.13.1-cpu"


def test_lock_entry_from_the_pushed_manifest(kit):
    node = kit.node(
        "cuda11.8-bookworm",
        "cuda",
        "strata/cuda",
        "cuda11.8-cudnn8.6-bookworm",
        parent="base-bookworm",
        cells=("tf2.13.1-gpu", "tf2.10.1-gpu"),
        facts={"cuda": "11.8", "cudnn": "8.6", "os": "bookworm", "python": "3.11"},
    )
    manifest = image_manifest({UNCOMPRESSED_ANNOTATION: "123456", CONTENT_HASH_ANNOTATION: node.content_hash})
    entry = locked_image(node, NodeTarget.of(node), manifest, "hermetic")
    assert entry.reference == "127.0.0.1:5000/strata/cuda:cuda11.8-cudnn8.6-bookworm"
    assert entry.digest == manifest.digest and entry.config_digest == "sha256:" + "c" * 64
    assert entry.compressed_size == 41_000 and entry.uncompressed_size == 123456
    assert entry.versions == {
        "tensorflow": None,
        "flavor": None,
        "python": "3.11",
        "cuda": "11.8",
        "cudnn": "8.6",
        "os": "bookworm",
    }
    assert entry.cells == ("tf2.13.1-gpu", "tf2.10.1-gpu") and entry.parent == "base-bookworm"
    assert locked_image(node, NodeTarget.of(node), image_manifest({}), "hermetic").uncompressed_size is None


def test_lock_artifact_manifest_is_deterministic_oci():
    one = lock_artifact_manifest(b'{"schema": 1}\n', "ab" * 32)
    assert one == lock_artifact_manifest(b'{"schema": 1}\n', "ab" * 32)
    doc = json.loads(one)
    assert doc["mediaType"] == OCI_MANIFEST
    assert doc["layers"][0]["digest"] == sha256_digest(b'{"schema": 1}\n')
    assert doc["layers"][0]["annotations"] == {"org.opencontainers.image.title": "images.lock.json"}
    assert doc["annotations"] == {"io.strata.plan-digest": "ab" * 32}


def test_matrix_aliases_float_and_version_tags_do_not():
    policy = matrix_tag_policy(load_matrix(REPO / "matrix.yaml"))
    assert policy.is_alias("2.13-gpu") and policy.is_alias("latest-cpu") and policy.is_alias("latest")
    assert not policy.is_alias("2.13.1-gpu-cuda11.8-cudnn8.6-py3.11-bookworm")
    assert not policy.is_alias("h-" + "0" * 64)


def aliased_plan(kit):
    tools = kit.node("tools", "tools", "t/tf", "2.13.1-cpu", cells=("tf2.13.1-cpu",))
    return kit.plan(
        [tools], aliases=[("2.13-cpu", "tf2.13.1-cpu", "tools"), ("latest-gpu", "tf2.13.1-gpu", "tools")]
    )


@pytest.mark.parametrize(
    ("alias", "cell", "message"),
    [
        (
            "9.9-cpu",
            "tf2.13.1-cpu",
            r"alias 9.9-cpu is not declared in matrix.yaml aliases \(declared: 2.13-cpu, latest-gpu\)",
        ),
        (
            "latest-gpu",
            "tf2.13.1-cpu",
            "alias latest-gpu belongs to cell tf2.13.1-gpu in matrix.yaml, not tf2.13.1-cpu",
        ),
    ],
)
def test_promote_refuses_aliases_the_matrix_does_not_give_that_cell(kit, tmp_path, alias, cell, message):
    with pytest.raises(PublishError, match=message):
        promote_cell_alias(
            aliased_plan(kit),
            None,
            alias,
            cell,
            registry="127.0.0.1:5000",
            audit=AuditLog(tmp_path / "a.jsonl"),
            smoke_dir=tmp_path / "smoke",
            bench_ledger=tmp_path / "ledger.sqlite",
        )

"""Pushing canonical archives to a real registry: digests agree with skopeo, docker pulls and runs the image,
re-pushes and mounts upload nothing, version tags are immutable unless forced (and then audited)."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from registry_sync.publish.push import image_exists, push_archive
from registry_sync.publish.tag_policy import AuditLog, TagPolicyError
from registry_sync.registry.client import RegistryClient

pytestmark = pytest.mark.engine
DOCKER = "/usr/bin/docker"


def skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], capture_output=True, check=True, timeout=120).stdout


def test_push_then_skopeo_agrees_with_our_digests(plain_client, plain_registry, test_archives, tmp_path):
    result = push_archive(plain_client, test_archives.v1, "strata/skopeo", ["1.0.0"], cache_dir=tmp_path)
    ref = f"docker://{plain_registry}/strata/skopeo:1.0.0"

    raw = skopeo("inspect", "--tls-verify=false", "--raw", ref)
    info = json.loads(skopeo("inspect", "--tls-verify=false", ref))
    config = skopeo("inspect", "--tls-verify=false", "--config", "--raw", ref)

    assert "sha256:" + hashlib.sha256(raw).hexdigest() == result.manifest_digest
    assert info["Digest"] == result.manifest_digest
    assert info["Layers"] == list(result.layer_digests)
    assert "sha256:" + hashlib.sha256(config).hexdigest() == result.config_digest
    assert json.loads(raw)["annotations"]["io.strata.compression"].startswith("gzip;zlib=")


def test_docker_pulls_by_digest_and_runs_it(plain_client, plain_registry, test_archives, tmp_path):
    result = push_archive(plain_client, test_archives.v1, "strata/pull", ["1.0.0"], cache_dir=tmp_path)
    ref = f"{plain_registry}/strata/pull@{result.manifest_digest}"
    try:
        subprocess.run([DOCKER, "pull", ref], capture_output=True, check=True, timeout=300)
        image_id = subprocess.run(
            [DOCKER, "image", "inspect", "--format", "{{.Id}}", ref],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        output = subprocess.run(
            [DOCKER, "run", "--rm", ref], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    finally:
        subprocess.run([DOCKER, "rmi", ref], capture_output=True, check=False)
    assert image_id == result.config_digest
    assert output.strip() == "1"


def test_second_push_uploads_no_blob_bytes(plain_client, test_archives, tmp_path):
    first = push_archive(plain_client, test_archives.v1, "strata/noop", ["1.0.0"], cache_dir=tmp_path)
    second = push_archive(plain_client, test_archives.v1, "strata/noop", ["1.0.0"], cache_dir=tmp_path)

    assert first.bytes_uploaded > 3_000_000
    assert second.bytes_uploaded == 0
    assert second.blobs_uploaded == ()
    assert set(second.blobs_skipped) == {first.config_digest, *first.layer_digests}
    assert second.manifest_digest == first.manifest_digest


def test_changed_top_layer_uploads_only_that_layer_and_config(plain_client, test_archives, tmp_path):
    first = push_archive(plain_client, test_archives.v1, "strata/delta", ["1.0.0"], cache_dir=tmp_path)
    second = push_archive(plain_client, test_archives.v2, "strata/delta", ["2.0.0"], cache_dir=tmp_path)

    assert first.layer_digests[:-1] == second.layer_digests[:-1]
    assert set(second.blobs_uploaded) == {second.config_digest, second.layer_digests[-1]}
    assert second.bytes_uploaded < 10_000


def test_mount_across_repositories_uploads_nothing(plain_client, test_archives, tmp_path):
    source = push_archive(plain_client, test_archives.v1, "strata/mount-src", ["1.0.0"], cache_dir=tmp_path)
    mounted = push_archive(
        plain_client,
        test_archives.v1,
        "strata/mount-dst",
        ["1.0.0"],
        cache_dir=tmp_path,
        mount_from=["strata/mount-src"],
    )
    assert mounted.bytes_uploaded == 0
    assert set(mounted.blobs_mounted) == {source.config_digest, *source.layer_digests}
    assert image_exists(plain_client, "strata/mount-dst", "1.0.0") == source.manifest_digest


def test_image_exists_only_for_pushed_tags(plain_client, test_archives, tmp_path):
    assert image_exists(plain_client, "strata/exists", "1.0.0") is None
    result = push_archive(plain_client, test_archives.v1, "strata/exists", ["1.0.0"], cache_dir=tmp_path)
    assert image_exists(plain_client, "strata/exists", "1.0.0") == result.manifest_digest
    assert image_exists(plain_client, "strata/exists", "9.9.9") is None


def test_version_tag_is_immutable_and_force_is_audited(plain_client, test_archives, tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    v1 = push_archive(plain_client, test_archives.v1, "strata/immutable", ["1.0.0"], cache_dir=tmp_path)

    with pytest.raises(TagPolicyError) as refused:
        push_archive(plain_client, test_archives.v2, "strata/immutable", ["1.0.0"], cache_dir=tmp_path)
    message = str(refused.value)
    assert v1.manifest_digest in message
    assert "\n" not in message
    assert plain_client.manifest_digest("strata/immutable", "1.0.0") == v1.manifest_digest
    assert audit.records() == []

    v2 = push_archive(
        plain_client,
        test_archives.v2,
        "strata/immutable",
        ["1.0.0"],
        cache_dir=tmp_path,
        force=True,
        audit_log=audit,
    )
    assert v2.manifest_digest in message  # the refusal named the digest we were about to push
    assert plain_client.manifest_digest("strata/immutable", "1.0.0") == v2.manifest_digest
    [record] = audit.records()
    assert (record.tag, record.old, record.new, record.action) == (
        "1.0.0",
        v1.manifest_digest,
        v2.manifest_digest,
        "force-push",
    )
    assert record.user


def test_alias_moves_only_by_promotion(plain_client, test_archives, tmp_path):
    from registry_sync.publish.tag_policy import TagPolicy, promote_alias

    audit = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(TagPolicyError, match="floating alias"):
        push_archive(plain_client, test_archives.v1, "strata/alias", ["latest"], cache_dir=tmp_path)
    v1 = push_archive(plain_client, test_archives.v1, "strata/alias", ["1.0.0"], cache_dir=tmp_path)
    v2 = push_archive(plain_client, test_archives.v2, "strata/alias", ["2.0.0"], cache_dir=tmp_path)

    promote_alias(plain_client, "strata/alias", "latest", "1.0.0", policy=TagPolicy(), audit=audit)
    assert plain_client.manifest_digest("strata/alias", "latest") == v1.manifest_digest
    promote_alias(plain_client, "strata/alias", "latest", "2.0.0", policy=TagPolicy(), audit=audit)
    assert plain_client.manifest_digest("strata/alias", "latest") == v2.manifest_digest
    assert [(r.old, r.new) for r in audit.records()] == [
        (None, v1.manifest_digest),
        (v1.manifest_digest, v2.manifest_digest),
    ]
    with pytest.raises(TagPolicyError, match="version tag"):
        promote_alias(plain_client, "strata/alias", "1.0.0", "2.0.0", policy=TagPolicy(), audit=audit)


def test_same_archive_gives_same_digest_in_two_registries(
    plain_client, mirror_registry, test_archives, tmp_path
):
    here = push_archive(plain_client, test_archives.v1, "strata/repro", ["1.0.0"], cache_dir=tmp_path / "a")
    with RegistryClient(mirror_registry) as mirror:
        there = push_archive(mirror, test_archives.v1, "strata/repro", ["1.0.0"], cache_dir=tmp_path / "b")
    assert there.manifest_digest == here.manifest_digest
    assert there.layer_digests == here.layer_digests

"""strata sync between real registries: digests kept byte for byte, only missing blobs sent, mounts within one
registry, indexes with their children, immutable destination tags, credentials and TLS, the CLI."""

from __future__ import annotations

import json

import pytest

from builder.oci.digest import sha256_digest
from builder.oci.media_types import DOCKER_MANIFEST_V2, OCI_INDEX
from cli.main import main
from registry_sync.publish.push_plan import NodeTarget, PushOptions, publish_plan
from registry_sync.publish.sync import copy_image
from registry_sync.publish.tag_policy import AuditLog, TagPolicy, TagPolicyError
from registry_sync.registry.client import RegistryClient

pytestmark = pytest.mark.engine


@pytest.fixture
def pushed(make_chain, engine, plain_registry, plain_client, tmp_path):
    """A chain pushed to the plain registry: (chain, {layer: manifest digest})."""
    chain = make_chain(plain_registry)
    options = PushOptions(
        registry=plain_registry,
        policy=TagPolicy(),
        audit=AuditLog(tmp_path / "a.jsonl"),
        cache_dir=tmp_path / "l",
    )
    results = publish_plan(chain.plan, engine, plain_client, options)
    return chain, {n.layer: r.manifest_digest for n, r in zip(chain.nodes, results)}


@pytest.fixture
def mirror_client(mirror_registry):
    with RegistryClient(mirror_registry) as client:
        yield client


def test_copy_by_tag_keeps_digest_and_bytes_then_is_a_noop(pushed, plain_client, mirror_client):
    chain, digests = pushed
    tool = NodeTarget.of(chain.node("tools"))
    first = copy_image(
        plain_client, tool.repository, tool.version_tag, mirror_client, tool.repository, [tool.version_tag]
    )
    assert first.status == "copied" and first.manifest_digest == digests["tools"]
    assert (
        len(first.blobs_copied) == 4 and first.bytes_copied > 500_000
    )  # config + busybox + two small layers
    source = plain_client.get_manifest(tool.repository, tool.version_tag)
    copied = mirror_client.get_manifest(tool.repository, tool.version_tag)
    assert copied.body == source.body and copied.media_type == source.media_type

    second = copy_image(
        plain_client, tool.repository, tool.version_tag, mirror_client, tool.repository, [tool.version_tag]
    )
    assert second.status == "unchanged" and second.bytes_copied == 0 and second.blobs_copied == []


def test_copy_within_one_registry_mounts_every_blob(pushed, plain_client):
    chain, digests = pushed
    app = NodeTarget.of(chain.node("framework"))
    result = copy_image(
        plain_client, app.repository, digests["framework"], plain_client, f"{chain.namespace}/copy", ["x"]
    )
    assert result.bytes_copied == 0 and len(result.blobs_mounted) == 3
    assert plain_client.manifest_digest(f"{chain.namespace}/copy", "x") == digests["framework"]


def test_index_is_copied_with_its_children(pushed, plain_client, mirror_client):
    chain, digests = pushed
    tool = NodeTarget.of(chain.node("tools"))
    core = NodeTarget.of(chain.node("framework"))
    copy_image(plain_client, core.repository, digests["framework"], plain_client, tool.repository, [])
    children = []
    for layer, arch in (("tools", "amd64"), ("framework", "arm64")):
        body = plain_client.get_manifest(tool.repository, digests[layer]).body
        children.append(
            {
                "mediaType": DOCKER_MANIFEST_V2,
                "digest": digests[layer],
                "size": len(body),
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    plain_client.put_manifest(tool.repository, "multi", index, OCI_INDEX)

    result = copy_image(
        plain_client, tool.repository, "multi", mirror_client, f"{chain.namespace}/mirror", ["multi"]
    )

    assert result.manifest_digest == sha256_digest(index) and result.manifests_copied == 3
    assert mirror_client.get_manifest(f"{chain.namespace}/mirror", "multi").body == index
    for child in children:
        assert mirror_client.manifest_digest(f"{chain.namespace}/mirror", child["digest"]) == child["digest"]


def test_destination_tags_are_immutable_unless_forced(pushed, plain_client, mirror_client, tmp_path):
    chain, digests = pushed
    tool = NodeTarget.of(chain.node("tools"))
    core = NodeTarget.of(chain.node("framework"))
    dst = f"{chain.namespace}/pinned"
    copy_image(plain_client, tool.repository, digests["tools"], mirror_client, dst, ["v1"])
    with pytest.raises(
        TagPolicyError,
        match=f"already points at {digests['tools']}; refusing to move it to {digests['framework']}",
    ):
        copy_image(plain_client, core.repository, digests["framework"], mirror_client, dst, ["v1"])
    audit = AuditLog(tmp_path / "audit.jsonl")
    moved = copy_image(
        plain_client,
        core.repository,
        digests["framework"],
        mirror_client,
        dst,
        ["v1"],
        force=True,
        audit=audit,
    )
    assert moved.tags_changed == ["v1"]
    assert [(r.action, r.old, r.new) for r in audit.records()] == [
        ("force-sync", digests["tools"], digests["framework"])
    ]


def test_cli_sync_by_glob_to_a_registry_with_password_and_tls(
    pushed, plain_registry, secure_registry, registry_secrets, tmp_path, monkeypatch, capsys
):
    chain, digests = pushed
    tool = NodeTarget.of(chain.node("tools"))
    monkeypatch.setenv("STRATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STRATA_REGISTRY_USER", "strata")
    monkeypatch.setenv("STRATA_REGISTRY_PASSWORD", registry_secrets.password_file.read_text().strip())
    monkeypatch.setenv("STRATA_REGISTRY_AUTH_HOSTS", secure_registry)  # the password is for it, no other
    ca = ["--data-dir", str(tmp_path / "reg"), "--dst-ca-file", str(registry_secrets.ca_cert)]
    src = f"{plain_registry}/{tool.repository}"
    dst = f"{secure_registry}/{tool.repository}"

    assert main(["sync", src, dst, "--only", "9.9.*", *ca]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [out[0]] and out[0].startswith(
        f"copied {src}:9.9.9-cpu -> {dst}@{digests['tools']} (4 blobs copied"
    )

    # And back out of the password-protected registry, by digest, into a new repository there.
    again = f"{secure_registry}/{chain.namespace}/again:t"
    assert (
        main(
            ["sync", f"{dst}@{digests['tools']}", again, *ca, "--src-ca-file", str(registry_secrets.ca_cert)]
        )
        == 0
    )
    assert "0 blobs copied, 0.0 MB; 4 mounted" in capsys.readouterr().out

    assert main(["sync", f"{src}:nope", dst, *ca]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"strata: {plain_registry}/{tool.repository}:nope does not exist"

"""strata push on a real registry and engine, with tiny images standing in for plan nodes: first push, no-op
push, tag-only push, immutable version tags (--force audited), unbuilt nodes, images.lock.json and its artifact,
and the embedded registry's own client when it runs with TLS and htpasswd."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import replace

import pytest

from builder.events import Event, PushFinished, PushStatus
from builder.plan.graph import Plan
from builder.settings import resolve_settings
from registry_sync.publish.images_lock import read_images_lock
from registry_sync.publish.push import push_archive
from registry_sync.publish.push_plan import (
    CONTENT_HASH_ANNOTATION,
    UNCOMPRESSED_ANNOTATION,
    NodeTarget,
    PushOptions,
    fetch_lock_artifact,
    finish_lock,
    publish_plan,
)
from registry_sync.publish.tag_policy import AuditLog, TagPolicy
from registry_sync.registry.client import RegistryAuthError, RegistryClient
from registry_sync.registry.connect import open_registry
from registry_sync.registry.server import DEFAULT_HOST, ServerSettings, start_registry, stop_registry

pytestmark = pytest.mark.engine


@pytest.fixture
def options(tmp_path, plain_registry):
    def make(
        registry: str = plain_registry, force: bool = False, layer_read: str = "", cache: str = "layers"
    ) -> PushOptions:
        return PushOptions(
            registry=registry,
            policy=TagPolicy(),
            audit=AuditLog(tmp_path / "audit.jsonl"),
            profile="hermetic",
            force=force,
            cache_dir=tmp_path / cache,
            work_dir=tmp_path,
            layer_read=layer_read,
        )

    return make


def test_first_push_then_noop_push(make_chain, engine, plain_registry, plain_client, options, tmp_path):
    chain = make_chain(plain_registry)
    first = publish_plan(chain.plan, engine, plain_client, options())
    assert [r.status for r in first] == ["pushed", "pushed", "pushed"]
    base, app, tool = first
    assert base.bytes_uploaded > 500_000  # busybox
    # Children upload only their own layer and config; the layers below are mounted from the parent's repository.
    assert app.bytes_uploaded < 60_000 and tool.bytes_uploaded < 60_000
    for node, result in zip(chain.nodes, first):
        target = NodeTarget.of(node)
        assert plain_client.manifest_digest(target.repository, target.version_tag) == result.manifest_digest
        assert plain_client.manifest_digest(target.repository, target.content_tag) == result.manifest_digest
        manifest = json.loads(plain_client.get_manifest(target.repository, result.manifest_digest).body)
        assert manifest["config"]["digest"] == engine.images.get(node.cache_ref).id
        assert manifest["annotations"][CONTENT_HASH_ANNOTATION] == node.content_hash
        assert manifest["annotations"]["io.strata.compression"].startswith("gzip;")
        assert int(manifest["annotations"][UNCOMPRESSED_ANNOTATION]) > result.locked.compressed_size / 10
        assert sorted(plain_client.list_tags(target.repository)) == sorted(
            [target.version_tag, target.content_tag]
        )

    lock_path = tmp_path / "images.lock.json"
    outcome = finish_lock(lock_path, chain.plan, first, plain_client, options())
    lock_bytes = lock_path.read_bytes()

    started = time.monotonic()
    second = publish_plan(chain.plan, engine, plain_client, options())
    noop_seconds = time.monotonic() - started
    assert [(r.status, r.bytes_uploaded) for r in second] == [("skipped", 0)] * 3
    assert [r.manifest_digest for r in second] == [r.manifest_digest for r in first]
    assert noop_seconds < 5
    again = finish_lock(lock_path, chain.plan, second, plain_client, options())
    assert again.written is False and lock_path.read_bytes() == lock_bytes
    assert again.artifact == outcome.artifact

    lock = read_images_lock(lock_path)
    entry = lock.images[chain.node("tools").tags[0]]
    assert entry.digest == tool.manifest_digest and entry.node == "tool" and entry.parent == "app"
    assert entry.versions["tensorflow"] == "9.9.9" and entry.cells == ("c-cpu",)
    assert fetch_lock_artifact(plain_client, chain.namespace, outcome.plan_digest, tmp_path) == lock_bytes


def test_layers_read_from_storage_push_the_same_manifests_as_docker_save_archives(
    make_chain, engine, plain_registry, mirror_registry, options, tmp_path
):
    """The same images pushed from the engine's storage and, as before this path existed, from `docker save`
    archives (into another registry, each with an empty compressed-layer cache): the same manifest digests."""
    chain = make_chain(plain_registry)
    with RegistryClient(plain_registry) as here:
        from_storage = publish_plan(chain.plan, engine, here, options(cache="storage"))
    with RegistryClient(mirror_registry) as there:
        from_archives = publish_plan(
            chain.plan, engine, there, options(registry=mirror_registry, layer_read="save", cache="saved")
        )
    assert [r.status for r in from_storage + from_archives] == ["pushed"] * 6
    assert [r.manifest_digest for r in from_storage] == [r.manifest_digest for r in from_archives]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("strata-save-")) == []
    # The old path in full: the saved archive pushed by push_archive gives the manifest of the same bytes.
    tool = chain.node("tools")
    archive = tmp_path / "tool.tar"
    with open(archive, "wb") as out:
        out.writelines(engine.images.get(tool.cache_ref).save(named=False))
    with RegistryClient(mirror_registry) as there:
        manifest = json.loads(
            there.get_manifest(NodeTarget.of(tool).repository, from_archives[2].manifest_digest).body
        )
        again = push_archive(
            there,
            archive,
            NodeTarget.of(tool).repository,
            ["again"],
            annotations={k: v for k, v in manifest["annotations"].items() if k != "io.strata.compression"},
            cache_dir=tmp_path / "again",
        )
    assert again.manifest_digest == from_storage[2].manifest_digest


def test_content_tag_present_version_tag_missing_is_only_tagged(
    make_chain, engine, plain_registry, plain_client, options, tmp_path
):
    chain = make_chain(plain_registry)
    base = chain.node("base")
    target = NodeTarget.of(base)
    archive = tmp_path / "base.tar"
    with open(archive, "wb") as out:
        out.writelines(engine.images.get(base.cache_ref).save(named=False))
    cached_only = push_archive(
        plain_client, archive, target.repository, [target.content_tag], cache_dir=tmp_path / "l"
    )
    assert plain_client.manifest_digest(target.repository, target.version_tag) is None

    only_base = Plan(matrix=chain.plan.matrix, nodes=(base,))
    result = publish_plan(only_base, engine, plain_client, options())[0]
    assert (result.status, result.bytes_uploaded) == ("tagged", 0)
    # The existing manifest (without our annotations) is kept: pushing again would change its digest.
    assert plain_client.manifest_digest(target.repository, target.version_tag) == cached_only.manifest_digest


def test_version_tags_are_immutable_unless_forced_and_audited(
    make_chain, engine, plain_registry, plain_client, options
):
    first = make_chain(plain_registry)
    publish_plan(first.plan, engine, plain_client, options())
    # Same version tags, different content: what a changed lock without a version bump would give.
    second = make_chain(plain_registry, variant="2", namespace=first.namespace)
    refused = publish_plan(second.plan, engine, plain_client, options())
    assert [r.status for r in refused] == ["failed"] * 3
    old = plain_client.manifest_digest(f"{first.namespace}/base", "bookworm-1")
    assert "already points at " + old in refused[0].message and "--force" in refused[0].message
    assert "\n" not in refused[0].message

    forced_options = options(force=True)
    forced = publish_plan(second.plan, engine, plain_client, forced_options)
    assert [r.status for r in forced] == ["pushed"] * 3
    records = forced_options.audit.records()
    assert [(r.action, r.tag) for r in records] == [
        ("force-push", "bookworm-1"),
        ("force-push", "9.9.9-cpu"),
        ("force-push", "9.9.9-cpu"),
    ]
    assert records[0].old == old and records[0].new == forced[0].manifest_digest


def test_unbuilt_node_fails_with_build_hint_and_others_still_push(
    make_chain, engine, plain_registry, plain_client, options
):
    chain = make_chain(plain_registry)
    tool = chain.node("tools")
    engine.images.remove(tool.tags[0])
    engine.images.remove(tool.cache_ref)
    results = publish_plan(chain.plan, engine, plain_client, options())
    assert [r.status for r in results] == ["pushed", "pushed", "failed"]
    assert results[2].message == "node tool is not built: run strata build"


@pytest.fixture
def secure_embedded(tmp_path):
    with socket.socket() as probe:
        probe.bind((DEFAULT_HOST, 0))
        port = probe.getsockname()[1]
    settings = ServerSettings(
        data_dir=tmp_path / "registry", port=port, tls=True, htpasswd=True, trust_in_engine=False
    )
    start_registry(settings)
    yield settings
    stop_registry(settings.data_dir)


def test_push_to_embedded_registry_with_tls_and_htpasswd(make_chain, engine, secure_embedded, options):
    chain = make_chain(secure_embedded.address)
    client = open_registry(secure_embedded.address, resolve_settings(os.environ), secure_embedded.data_dir)
    assert client.base_url.startswith("https://") and client.credentials is not None
    with client:
        results = publish_plan(chain.plan, engine, client, options(registry=secure_embedded.address))
    assert [r.status for r in results] == ["pushed"] * 3
    with (
        RegistryClient(
            "https://" + secure_embedded.address, ca_file=secure_embedded.data_dir / "tls" / "ca.crt"
        ) as anonymous,
        pytest.raises(RegistryAuthError, match="requires credentials"),
    ):
        anonymous.ping()


def test_cli_push_to_a_registry_that_is_down_is_one_line(repo, unused_address, tmp_path, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv("STRATA_HOME", str(tmp_path / "home"))
    args = [
        "push",
        "-f",
        str(repo / "matrix.yaml"),
        "--only",
        "tf2.13.1-cpu",
        "--registry",
        unused_address,
    ]
    assert main([*args, "--lock", str(tmp_path / "lock.json"), "--data-dir", str(tmp_path / "reg")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"strata: registry {unused_address} unreachable (connection refused) while pinging; "
        "start it with `strata registry up`\n"
    )
    assert not (tmp_path / "lock.json").exists()


def test_push_reports_each_node_as_typed_events(make_chain, engine, plain_registry, plain_client, options):
    chain = make_chain(plain_registry)
    seen: list[Event] = []
    first = publish_plan(chain.plan, engine, plain_client, replace(options(), on_event=seen.append))
    kinds = [(type(e).__name__, e.subject) for e in seen]
    assert kinds == [
        (kind, node.id) for node in chain.nodes for kind in ("PushReading", "PushUploading", "PushFinished")
    ]
    finished = [e for e in seen if isinstance(e, PushFinished)]
    assert [(e.status, e.manifest_digest, e.bytes_uploaded) for e in finished] == [
        (PushStatus.PUSHED, r.manifest_digest, r.bytes_uploaded) for r in first
    ]
    assert finished[0].reference == NodeTarget.of(chain.nodes[0]).version_ref
    seen.clear()
    publish_plan(chain.plan, engine, plain_client, replace(options(), on_event=seen.append))
    assert [(type(e), e.subject, getattr(e, "status", None)) for e in seen] == [
        (PushFinished, node.id, PushStatus.SKIPPED) for node in chain.nodes
    ]

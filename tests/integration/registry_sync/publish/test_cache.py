"""The registry as the build's cache: a node's image found by content tag, checked and pulled by the engine,
tagged like a build; a missing tag, a down registry or a wrong image never fail, the node is built instead
(with one warning line when something is wrong)."""

from __future__ import annotations

import time

import docker.errors
import pytest

from builder.build.orchestrate import BuildOptions, gather_from_stores
from builder.engine.store import EngineStore
from registry_sync.publish.cache import CACHE_NAME, CACHE_RETRY
from registry_sync.publish.push import push_archive
from registry_sync.publish.push_plan import NodeTarget, PushOptions, publish_plan
from registry_sync.publish.store import RegistryStore
from registry_sync.publish.tag_policy import AuditLog, TagPolicy
from registry_sync.registry.client import RegistryClient

pytestmark = pytest.mark.engine


def push_chain(chain, engine, client, tmp_path):
    options = PushOptions(
        registry=chain.registry,
        policy=TagPolicy(),
        audit=AuditLog(tmp_path / "audit.jsonl"),
        cache_dir=tmp_path / "l",
    )
    return publish_plan(chain.plan, engine, client, options)


def forget(engine, node):
    """Remove the node's image from the engine, as on a fresh build machine."""
    image_id = engine.images.get(node.cache_ref).id
    engine.images.remove(image_id, force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(node.cache_ref)


def ask_stores(engine, client, nodes, warnings):
    """What `strata build` does before building: the engine first, then the registry cache."""
    cache = RegistryStore(client, name=CACHE_NAME)
    options = BuildOptions(caches=[lambda: cache], warn=warnings.append)
    return gather_from_stores(nodes, EngineStore(engine), options)


def test_pulls_checks_and_tags_like_a_build(make_chain, engine, plain_registry, tmp_path):
    chain = make_chain(plain_registry)
    with RegistryClient(plain_registry) as pusher:
        results = push_chain(chain, engine, pusher, tmp_path)
    tool = chain.node("tools")
    config_digest = engine.images.get(tool.cache_ref).id
    forget(engine, tool)
    warnings: list[str] = []

    outcomes, todo = ask_stores(engine, RegistryClient(plain_registry), [tool], warnings)

    assert warnings == [] and todo == []
    assert (outcomes[tool.id].status, outcomes[tool.id].image_id) == ("pulled", config_digest)
    image = engine.images.get(tool.cache_ref)
    assert image.id == config_digest and set(image.tags) >= {tool.cache_ref, tool.tags[0]}
    assert image.labels["io.strata.content-hash"] == tool.content_hash
    assert (
        f"{plain_registry}/{NodeTarget.of(tool).repository}@{results[2].manifest_digest}"
        in image.attrs["RepoDigests"]
    )
    # The next build finds it in the engine.
    assert EngineStore(engine).find(tool.cache_ref) == config_digest


def test_missing_content_tag_is_a_quiet_miss(make_chain, engine, plain_registry):
    chain = make_chain(plain_registry)
    tool = chain.node("tools")
    forget(engine, tool)
    warnings: list[str] = []
    outcomes, todo = ask_stores(engine, RegistryClient(plain_registry), [tool], warnings)
    assert (outcomes, todo, warnings) == ({}, [tool], [])


def test_unreachable_registry_is_one_warning_and_fast(make_chain, engine, unused_address):
    chain = make_chain(unused_address)
    tool = chain.node("tools")
    forget(engine, tool)
    warnings: list[str] = []
    started = time.monotonic()
    outcomes, todo = ask_stores(engine, RegistryClient(unused_address, retry=CACHE_RETRY), [tool], warnings)
    assert time.monotonic() - started < 10
    assert (outcomes, todo) == ({}, [tool])
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "unreachable (connection refused)" in warnings[0] and "building instead" in warnings[0]


def test_image_with_another_content_hash_is_refused_and_not_left_behind(
    make_chain, engine, plain_registry, plain_client, tmp_path
):
    chain = make_chain(plain_registry)
    other = make_chain(plain_registry)
    # Put other's image under chain's content tag: its label names another content hash.
    node, impostor = chain.node("tools"), other.node("tools")
    archive = tmp_path / "impostor.tar"
    with open(archive, "wb") as out:
        out.writelines(engine.images.get(impostor.cache_ref).save(named=False))
    target = NodeTarget.of(node)
    pushed = push_archive(
        plain_client, archive, target.repository, [target.content_tag], cache_dir=tmp_path / "l"
    )
    forget(engine, node)
    warnings: list[str] = []

    outcomes, todo = ask_stores(engine, RegistryClient(plain_registry), [node], warnings)

    assert (outcomes, todo) == ({}, [node])
    assert (
        len(warnings) == 1 and "is not this node's image" in warnings[0] and node.content_hash in warnings[0]
    )
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(f"{plain_registry}/{target.repository}@{pushed.manifest_digest}")
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(node.cache_ref)


def test_a_registry_image_read_through_the_store_is_the_pushed_one(
    make_chain, engine, plain_registry, plain_client, tmp_path
):
    chain = make_chain(plain_registry)
    push_chain(chain, engine, plain_client, tmp_path)
    tool = chain.node("tools")
    registry = RegistryStore(plain_client)

    found = registry.find(NodeTarget.of(tool).content_ref)
    assert found is not None
    image = registry.get(found)
    local = EngineStore(engine).get(tool.cache_ref)

    assert image.config_bytes == local.config_bytes and image.origin is not None
    assert image.origin.reference == found
    # Its top layer, downloaded and inflated, is the engine's layer byte for byte.
    with (
        image.open_layer_tar(len(image.layers) - 1) as remote,
        local.open_layer_tar(len(local.layers) - 1) as mine,
    ):
        assert remote.read() == mine.read()


def test_open_cache_registry_checks_once_and_can_be_turned_off(
    plain_registry, unused_address, tmp_path, monkeypatch
):
    from types import SimpleNamespace

    from builder.settings import resolve_settings
    from registry_sync.publish.cache import open_cache_registry

    def matrix(address):
        return SimpleNamespace(model=SimpleNamespace(registry=SimpleNamespace(address=address)))

    warnings: list[str] = []
    settings = resolve_settings({"STRATA_HOME": str(tmp_path)})
    client = open_cache_registry(matrix(plain_registry), settings, warn=warnings.append)
    assert client is not None and client.host == plain_registry and warnings == []
    client.close()
    assert open_cache_registry(matrix(unused_address), settings, warn=warnings.append) is None
    assert len(warnings) == 1 and warnings[0].startswith("registry cache off for this build: registry ")
    off = resolve_settings({"STRATA_HOME": str(tmp_path), "STRATA_REGISTRY_CACHE": "off"})
    assert open_cache_registry(matrix(plain_registry), off, warn=warnings.append) is None
    assert len(warnings) == 1

"""Build with a registry cache: fetch a node's image by its content tag instead of building it.

`pull_cached` is called by `strata build` for a node the engine does not have. When the registry holds the node's
content tag `h-<content hash>`, the engine pulls that manifest by digest (loopback registries are allowed over
plain HTTP by Docker's defaults; other registries need TLS the engine trusts), the image is checked (its
`io.strata.content-hash` label is the node's hash, its id is the manifest's config digest), and it is tagged like a
fresh build (`node.cache_ref` and the version tags). Any registry or engine trouble is one warning line and a
`None`: a build never fails because its cache is down.

    cache = open_registry_cache(plan.matrix, settings)   # None when the registry is down or the cache is off
    image = cache.pull(engine, node) if cache else None    # `strata build` gets it as BuildOptions.open_remote_cache
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker.errors

from builder.errors import StrataError
from builder.matrix.load import Matrix
from builder.plan.graph import LABEL_HASH, LayerNode
from builder.settings import Settings
from registry_sync.publish.push import image_exists
from registry_sync.registry.client import RegistryClient, RetryPolicy
from registry_sync.registry.connect import open_registry
from registry_sync.registry.reference import ImageRef

# A cache lookup must cost little when the registry is down: one retry, a few seconds at most.
CACHE_RETRY = RetryPolicy(attempts=2, first_delay=0.2, max_delay=1.0, max_total_seconds=5.0)


def _stderr(message: str) -> None:
    print(f"strata: warning: {message}", file=sys.stderr)


@dataclass
class RegistryCache:
    """The registry as a build cache (`builder.build.orchestrate.RemoteCache`): pulls nodes by content hash."""

    client: RegistryClient
    warn: Callable[[str], None] = _stderr

    def pull(self, engine: Any, node: LayerNode) -> Any | None:
        return pull_cached(engine, self.client, node, self.warn)

    def close(self) -> None:
        self.client.close()


def open_registry_cache(
    matrix: Matrix, settings: Settings, warn: Callable[[str], None] = _stderr
) -> RegistryCache | None:
    """The registry cache for `strata build`, or None; see `open_cache_registry`."""
    client = open_cache_registry(matrix, settings, warn)
    return RegistryCache(client, warn) if client is not None else None


def open_cache_registry(
    matrix: Matrix, settings: Settings, warn: Callable[[str], None] = _stderr
) -> RegistryClient | None:
    """A client for the matrix's registry with short retries, checked once; None (and one `warn` line) when the
    registry does not answer, None without a word when the cache is off (STRATA_REGISTRY_CACHE=off). The caller
    closes it."""
    if not settings.registry_cache:
        return None
    client = None
    try:
        address = matrix.model.registry.address
        client = open_registry(address, settings, retry=CACHE_RETRY, home=address)
        client.ping()
    except StrataError as exc:
        if client is not None:
            client.close()
        warn(f"registry cache off for this build: {exc}")
        return None
    return client


def pull_cached(
    engine: Any, registry: RegistryClient, node: LayerNode, warn: Callable[[str], None] = _stderr
) -> Any | None:
    """The node's image pulled from `registry` by its content tag and tagged like a build, or None.

    None without a word when the registry does not have the content tag; None with one `warn` line when the
    registry or the engine fails, or the pulled image is not what the tag promises (then it is removed again).
    Example: `pull_cached(docker.from_env(), RegistryClient("127.0.0.1:5000"), plan.node("base-bookworm"))`.
    """
    content = ImageRef.require(node.cache_ref, f"node {node.id}")
    assert content.tag is not None
    repository = content.repository
    try:
        digest = image_exists(registry, repository, content.tag)
        if digest is None:
            return None
        manifest = registry.get_manifest(repository, digest)
        config_digest = str(json.loads(manifest.body)["config"]["digest"]) if manifest else ""
    except StrataError as exc:
        warn(f"registry cache for {node.id} unavailable, building instead: {exc}")
        return None
    except (ValueError, KeyError, TypeError):
        warn(
            f"registry cache for {node.id}: {registry.host}/{repository}:{content.tag} is not an image manifest"
        )
        return None
    pull_ref = f"{registry.host}/{repository}@{digest}"
    try:
        image = _engine_pull(engine, f"{registry.host}/{repository}", digest, registry)
    except _PullFailed as exc:
        warn(f"registry cache for {node.id}: docker pull {pull_ref} failed, building instead: {exc}")
        return None
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    problem = ""
    if labels.get(LABEL_HASH) != node.content_hash:
        problem = f"its {LABEL_HASH} label is {labels.get(LABEL_HASH)!r}, not {node.content_hash}"
    elif image.id != config_digest:
        problem = f"its id is {image.id}, but the registry's config digest is {config_digest}"
    if problem:
        warn(
            f"registry cache for {node.id}: {pull_ref} is not this node's image ({problem}); building instead"
        )
        _forget(engine, pull_ref)
        return None
    for ref in (node.cache_ref, *node.tags):
        parsed = ImageRef.require(ref, f"node {node.id}")
        image.tag(parsed.name, parsed.tag)
    return engine.images.get(node.cache_ref)


class _PullFailed(Exception):
    pass


def _engine_pull(engine: Any, repository: str, digest: str, registry: RegistryClient) -> Any:
    auth = None
    if registry.credentials is not None:
        auth = {"username": registry.credentials.username, "password": registry.credentials.password}
    try:
        errors = [
            str(event.get("error") or event.get("errorDetail"))
            for event in engine.api.pull(repository, tag=digest, stream=True, decode=True, auth_config=auth)
            if event.get("error") or event.get("errorDetail")
        ]
        if errors:
            raise _PullFailed(errors[-1].splitlines()[0])
        return engine.images.get(f"{repository}@{digest}")
    except docker.errors.DockerException as exc:
        text = getattr(exc, "explanation", None) or str(exc)
        raise _PullFailed(str(text).splitlines()[0]) from None


def _forget(engine: Any, ref: str) -> None:
    try:
        engine.images.remove(ref, noprune=False)
    except docker.errors.DockerException:
        pass

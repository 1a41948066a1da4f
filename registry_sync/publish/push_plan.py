"""`strata push` and `strata promote`: publish the plan's canonical images, record them, move aliases.

Push, per node in plan order (parents first):

1. The registry has the node's content tag `h-<content hash>` with all its blobs, and its config digest is the
   engine image's id (or the engine no longer has the image): nothing is uploaded; the version tag is added when
   it is missing (`tagged`) and otherwise left alone (`skipped`).
2. Otherwise the engine image (tagged `node.cache_ref` by `strata build`) is the registry store's put of the
   engine store's get: its layers read straight from the engine's storage (`docker save` only where that storage
   cannot be read), compressed once (a layer the compressed-layer cache holds is not read at all) and pushed
   with `push_image` under [version tag, content tag], mounting blobs from the parent node's repository.
   Manifest annotations: `io.strata.compression` (added by push_image),
   `io.strata.content-hash`, `io.strata.node` and `io.strata.uncompressed-size` (sum of the layer tars, so
   the lock can state both sizes on a no-op run without the image).

Version tags and content tags are immutable: a different digest is refused with both digests unless `force`,
which is audited. Aliases are never pushed here; `promote_cell_alias` moves them.

When every node succeeded, `images.lock.json` is merged (entries of tags still in the matrix are kept, this run's
replace theirs; the matrix's release and every alias the registry has on one of its entries recorded), written, and pushed as an OCI artifact `<namespace>/images-lock:<plan digest>`: one layer of
media type `application/vnd.strata.images-lock.v1+json` holding exactly the file's bytes (title annotation
`images.lock.json`, so `oras pull` writes it under that name). The tag is the plan digest of the nodes the lock
describes (`lockfile.lock_plan_digest`, equal to `builder.plan.graph.plan_digest` of the pushed plan); it is metadata,
so it moves when the lock of the same plan changes (a cell added, a forced re-push), and each move is audited.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.engine.store import EngineStore
from builder.errors import StrataError
from builder.events import (
    EventSink,
    PushFinished,
    PushMismatch,
    PushReading,
    PushStatus,
    PushUploading,
    ignore_events,
)
from builder.matrix.load import Matrix
from builder.oci.digest import sha256_digest
from builder.oci.media_types import LOCK_ARTIFACT_MEDIA_TYPE, LOCK_CONFIG_MEDIA_TYPE, OCI_MANIFEST
from builder.plan.graph import LayerNode, Plan
from registry_sync.publish.images_lock import (
    ImagesLock,
    LockedAlias,
    LockedImage,
    lock_plan_digest,
    read_images_lock,
    write_images_lock,
)
from registry_sync.publish.push import DEFAULT_CHUNK_SIZE
from registry_sync.publish.store import RegistryStore
from registry_sync.publish.tag_policy import DEFAULT_ALIAS_PATTERNS, AuditLog, TagAction, TagPolicy, plan_tags
from registry_sync.registry.client import Manifest, RegistryClient, RegistryUnreachable
from registry_sync.registry.reference import ImageRef

CONTENT_HASH_ANNOTATION = "io.strata.content-hash"
NODE_ANNOTATION = "io.strata.node"
UNCOMPRESSED_ANNOTATION = "io.strata.uncompressed-size"
LOCK_REPOSITORY = "images-lock"
LOCK_CONFIG = b"{}"


class PublishError(StrataError):
    """A push or promotion failed; the message names the node, tag or digest."""


def matrix_tag_policy(matrix: Matrix) -> TagPolicy:
    """The default alias patterns plus every alias matrix.yaml declares; every other tag is immutable."""
    tags = tuple(dict.fromkeys(a.tag for a in matrix.model.aliases))
    return TagPolicy(alias_patterns=DEFAULT_ALIAS_PATTERNS + tags)


@dataclass(frozen=True)
class NodeTarget:
    """Where a node is published: registry host, repository, version tag and content tag."""

    registry: str
    repository: str
    version_tag: str
    content_tag: str

    @classmethod
    def of(cls, node: LayerNode, registry: str | None = None) -> NodeTarget:
        """`registry` replaces the matrix's registry address (push to another registry, same repositories)."""
        version = ImageRef.require(node.tags[0], f"node {node.id}")
        content = ImageRef.require(node.cache_ref, f"node {node.id}")
        assert version.tag is not None and content.tag is not None and version.registry is not None
        return cls(registry or version.registry, version.repository, version.tag, content.tag)

    @property
    def version_ref(self) -> str:
        return f"{self.registry}/{self.repository}:{self.version_tag}"

    @property
    def content_ref(self) -> str:
        return f"{self.registry}/{self.repository}:{self.content_tag}"


# ---------------------------------------------------------------------------------------------- push


@dataclass
class NodeResult:
    """The outcome for one node: pushed, tagged (version tag added, nothing uploaded), skipped or failed."""

    node: str
    status: PushStatus
    target: NodeTarget
    manifest_digest: str = ""
    bytes_uploaded: int = 0
    seconds: float = 0.0
    message: str = ""
    forced: tuple[str, ...] = ()
    locked: LockedImage | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "status": self.status,
            "reference": self.target.version_ref,
            "manifest_digest": self.manifest_digest,
            "bytes_uploaded": self.bytes_uploaded,
            "seconds": round(self.seconds, 2),
            "message": self.message,
            "forced": list(self.forced),
        }

    def finished(self) -> PushFinished:
        """The event that reports this result."""
        return PushFinished(
            self.node,
            self.status,
            self.seconds,
            self.target.version_ref,
            self.bytes_uploaded,
            self.manifest_digest,
            self.message,
        )


@dataclass
class PushOptions:
    registry: str
    policy: TagPolicy
    audit: AuditLog
    cache_dir: Path  # compressed-layer cache (settings.compressed_layers_dir)
    profile: str = ""  # recorded in the lock entries (where the node's package locks live)
    force: bool = False
    work_dir: Path | None = None  # where `docker save` archives go when the engine's storage cannot be read
    layer_read: str = ""  # settings.layer_read: "save" reads every image through `docker save`
    chunk_size: int = DEFAULT_CHUNK_SIZE
    on_event: EventSink = ignore_events


def publish_plan(plan: Plan, engine: Any, client: RegistryClient, options: PushOptions) -> list[NodeResult]:
    """Publish every node of `plan` (see the module docstring); one result per node, in plan order.

    An unreachable registry stops the run (RegistryUnreachable); any other failure is recorded and the next
    node is tried. Example: publish_plan(plan.select(["*-cpu"]), docker.from_env(), client, options).
    """
    registry = RegistryStore(
        client,
        cache_dir=options.cache_dir,
        policy=options.policy,
        audit_log=options.audit,
        force=options.force,
        chunk_size=options.chunk_size,
    )
    results: list[NodeResult] = []
    with EngineStore(engine, options.layer_read, options.work_dir) as engine_store:
        for node in plan.nodes:
            target = NodeTarget.of(node, options.registry)
            parent = plan.node(node.parent) if node.parent else None
            start = time.monotonic()
            try:
                result = publish_node(node, parent, engine_store, registry, options)
            except RegistryUnreachable:
                raise
            except StrataError as exc:
                result = NodeResult(node.id, PushStatus.FAILED, target, message=str(exc))
            result.seconds = time.monotonic() - start
            options.on_event(result.finished())
            results.append(result)
    return results


def publish_node(
    node: LayerNode,
    parent: LayerNode | None,
    engine: EngineStore,
    registry: RegistryStore,
    options: PushOptions,
) -> NodeResult:
    """Publish one node: the no-op or tag-only path when the registry has its content tag, else the registry's
    put of the engine's image."""
    client = registry.client
    target = NodeTarget.of(node, options.registry)
    image_id = engine.find(node.cache_ref)
    existing = registry.find(target.content_ref)
    if existing is not None:
        manifest = _manifest(client, target.repository, existing.rpartition("@")[2])
        config_digest = manifest_config_digest(manifest)
        if image_id is None or image_id == config_digest:
            forced = _ensure_version_tag(client, target, manifest, options)
            status = PushStatus.TAGGED if forced is not None else PushStatus.SKIPPED
            locked = locked_image(node, target, manifest, options.profile)
            return NodeResult(
                node.id, status, target, manifest.digest, 0, forced=tuple(forced or ()), locked=locked
            )
        options.on_event(PushMismatch(node.id, config_digest, image_id))
    if image_id is None:
        raise PublishError(f"node {node.id} is not built: run strata build")
    annotations = {CONTENT_HASH_ANNOTATION: node.content_hash, NODE_ANNOTATION: node.id}
    mount_from = [NodeTarget.of(parent, options.registry).repository] if parent else []
    options.on_event(PushReading(node.id))
    image = engine.get(image_id)
    layers = registry.compressed_layers(image)
    # The sum of the layer tars, so the lock can state both sizes on a no-op run without the image.
    annotations[UNCOMPRESSED_ANNOTATION] = str(sum(layer.uncompressed_size for layer in layers))
    options.on_event(PushUploading(node.id, f"{target.registry}/{target.repository}"))
    pushed = registry.push(
        image,
        target.repository,
        [target.version_tag, target.content_tag],
        annotations=annotations,
        mount_from=mount_from,
        layers=layers,
    )
    manifest = _manifest(client, target.repository, pushed.manifest_digest)
    uploaded = pushed.blobs_uploaded or pushed.blobs_mounted or pushed.bytes_uploaded
    status = PushStatus.PUSHED if uploaded else PushStatus.TAGGED
    return NodeResult(
        node.id,
        status,
        target,
        pushed.manifest_digest,
        pushed.bytes_uploaded,
        forced=pushed.forced_tags,
        locked=locked_image(node, target, manifest, options.profile),
    )


def _manifest(client: RegistryClient, repository: str, digest: str) -> Manifest:
    manifest = client.get_manifest(repository, digest)
    if manifest is None:
        raise PublishError(f"registry {client.host} lost {repository}@{digest} while pushing")
    return manifest


def manifest_config_digest(manifest: Manifest) -> str:
    try:
        return str(json.loads(manifest.body)["config"]["digest"])
    except (ValueError, KeyError, TypeError):
        raise PublishError(f"manifest {manifest.digest} has no config (not an image manifest)") from None


def _ensure_version_tag(
    client: RegistryClient, target: NodeTarget, manifest: Manifest, options: PushOptions
) -> list[str] | None:
    """Point the version tag at `manifest` when it does not yet; None when it already did, else the tags set."""
    decisions = plan_tags(
        client, target.repository, [target.version_tag], manifest.digest, options.policy, force=options.force
    )
    changed: list[str] = []
    for decision in decisions:
        if decision.action is TagAction.UNCHANGED:
            continue
        client.put_manifest(target.repository, decision.tag, manifest.body, manifest.media_type)
        if decision.action is TagAction.FORCED_MOVE:
            options.audit.append(
                "force-push", client.host, target.repository, decision.tag, decision.old, manifest.digest
            )
        changed.append(decision.tag)
    return changed or None


def locked_image(node: LayerNode, target: NodeTarget, manifest: Manifest, profile: str) -> LockedImage:
    """The images.lock.json entry for `node` as published in `manifest`."""
    body = json.loads(manifest.body)
    layers = body.get("layers") or []
    annotations = body.get("annotations") or {}
    raw = annotations.get(UNCOMPRESSED_ANNOTATION)
    facts = node.facts
    return LockedImage(
        reference=target.version_ref,
        digest=manifest.digest,
        config_digest=str(body["config"]["digest"]),
        node=node.id,
        layer=node.layer,
        parent=node.parent,
        cells=node.cells,
        content_hash=node.content_hash,
        profile=profile,
        versions={
            "tensorflow": facts.get("tf") or None,
            "flavor": facts.get("flavor") or None,
            "python": node.python or facts.get("python") or None,
            "cuda": facts.get("cuda") or None,
            "cudnn": facts.get("cudnn") or None,
            "os": node.os_name or facts.get("os") or None,
        },
        compressed_size=int(body["config"]["size"]) + sum(int(layer["size"]) for layer in layers),
        uncompressed_size=int(raw) if raw and str(raw).isdigit() else None,
    )


# ---------------------------------------------------------------------------------------------- lock


@dataclass(frozen=True)
class LockOutcome:
    path: Path
    written: bool
    plan_digest: str
    artifact: str  # registry/repository:tag@digest of the pushed lock artifact, or "" when not pushed


def update_lock(
    path: Path,
    full_plan: Plan,
    results: Sequence[NodeResult],
    registry: str,
    client: RegistryClient | None = None,
) -> tuple[ImagesLock, bool]:
    """Merge this run's entries into the lock at `path` (dropping tags no longer in the plan) and write it; with
    `client`, the lock also records the matrix's release and each alias as the registry has it now."""
    keep = {NodeTarget.of(n, registry).version_ref for n in full_plan.nodes}
    entries = [r.locked for r in results if r.locked is not None]
    lock = read_images_lock(path, missing_ok=True).merged(entries, keep)
    if client is not None:
        aliases = published_aliases(client, full_plan, lock, registry)
        lock = lock.with_aliases(aliases, full_plan.matrix.model.release)
    return lock, write_images_lock(path, lock)


def published_aliases(
    client: RegistryClient, plan: Plan, lock: ImagesLock, registry: str
) -> list[LockedAlias]:
    """Each alias matrix.yaml declares, where the registry has it and it names an entry of `lock` (an alias still
    on an image of an older release is left out: the lock cannot vouch for that image)."""
    found: list[LockedAlias] = []
    for alias in plan.matrix.model.aliases:
        nodes = [n for n in plan.nodes if alias.cell in n.cells and n.layer == alias.layer]
        if not nodes:
            continue
        target = NodeTarget.of(nodes[-1], registry)
        digest = client.manifest_digest(target.repository, alias.tag)
        named = [e for e in lock.entries() if e.digest == digest and e.ref.repository == target.repository]
        if digest is not None and named:
            entry = next((e for e in named if e.reference == target.version_ref), named[0])
            found.append(
                LockedAlias(f"{target.registry}/{target.repository}:{alias.tag}", entry.reference, digest)
            )
    return found


def push_lock_artifact(
    client: RegistryClient, namespace: str, lock_bytes: bytes, tag: str, audit: AuditLog
) -> str:
    """Push `lock_bytes` as the OCI artifact `<namespace>/images-lock:<tag>`; returns the manifest digest.

    The tag moves (audited) when the same plan gets a different lock. Example:
    push_lock_artifact(client, "strata", Path("images.lock.json").read_bytes(), plan_digest, audit).
    """
    repository = f"{namespace}/{LOCK_REPOSITORY}"
    for blob in (LOCK_CONFIG, lock_bytes):
        digest = sha256_digest(blob)
        if client.blob_size(repository, digest) is None:
            client.upload_bytes(repository, digest, blob)
    manifest = lock_artifact_manifest(lock_bytes, tag)
    digest = sha256_digest(manifest)
    old = client.manifest_digest(repository, tag)
    if old != digest:
        client.put_manifest(repository, tag, manifest, OCI_MANIFEST)
        if old is not None:
            audit.append("lock-artifact", client.host, repository, tag, old, digest)
    return digest


def lock_artifact_manifest(lock_bytes: bytes, plan_digest: str) -> bytes:
    """The OCI manifest of the lock artifact (same inputs, same bytes)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": LOCK_CONFIG_MEDIA_TYPE,
            "digest": sha256_digest(LOCK_CONFIG),
            "size": len(LOCK_CONFIG),
        },
        "layers": [
            {
                "mediaType": LOCK_ARTIFACT_MEDIA_TYPE,
                "digest": sha256_digest(lock_bytes),
                "size": len(lock_bytes),
                "annotations": {"org.opencontainers.image.title": "images.lock.json"},
            }
        ],
        "annotations": {"io.strata.plan-digest": plan_digest},
    }
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()


def fetch_lock_artifact(client: RegistryClient, namespace: str, tag: str, scratch: Path) -> bytes:
    """The images.lock.json bytes stored as `<namespace>/images-lock:<tag>`."""
    repository = f"{namespace}/{LOCK_REPOSITORY}"
    manifest = client.get_manifest(repository, tag)
    if manifest is None:
        raise PublishError(f"{client.host}/{repository}:{tag} does not exist")
    layer = json.loads(manifest.body)["layers"][0]
    target = scratch / "images.lock.json"
    client.download_blob(repository, str(layer["digest"]), target)
    return target.read_bytes()


def finish_lock(
    lock_path: Path,
    full_plan: Plan,
    results: Sequence[NodeResult],
    client: RegistryClient,
    options: PushOptions,
    *,
    push_artifact: bool = True,
) -> LockOutcome:
    """Write images.lock.json for a successful push and push it as the lock artifact."""
    lock, written = update_lock(lock_path, full_plan, results, options.registry, client)
    digest = lock_plan_digest(lock, [n.id for n in full_plan.nodes])
    artifact = ""
    if push_artifact and lock.images:
        namespace = full_plan.matrix.model.registry.namespace
        manifest_digest = push_lock_artifact(client, namespace, lock.render().encode(), digest, options.audit)
        artifact = f"{client.host}/{namespace}/{LOCK_REPOSITORY}:{digest}@{manifest_digest}"
    return LockOutcome(lock_path, written, digest, artifact)

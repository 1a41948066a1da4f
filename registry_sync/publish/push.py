"""Push an image (`builder.oci.image.Image`: from the engine's storage, or an archive) to a registry, uploading
only what is missing. Layers are compressed once (`compress.py`, cached by diff_id): a cached layer is not even
read, and an uncached one is checked against its diff_id while it is compressed.

Order matters for readers that race a push: blobs first (skipped when present, mounted when another repository
has them, uploaded otherwise), then the manifest by digest, and only then the tags, so no tag ever points at a
manifest or blob the registry does not have.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from builder.errors import StrataError
from builder.oci.archive import read_image
from builder.oci.digest import sha256_digest
from builder.oci.image import Image
from builder.oci.media_types import DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST_V2
from registry_sync.publish.compress import (
    COMPRESSION,
    COMPRESSION_ANNOTATION,
    CompressedLayer,
    CompressedLayerCache,
)
from registry_sync.publish.tag_policy import AuditLog, TagAction, TagPolicy, plan_tags
from registry_sync.registry.client import (
    DEFAULT_CHUNK_SIZE,
    RegistryClient,
    RegistryError,
    UploadSession,
)

ProgressCallback = Callable[[str, int], None]


@dataclass(frozen=True)
class PushResult:
    """What a push did: digests, compressed layer sizes, bytes uploaded and which blobs were skipped or mounted."""

    registry: str
    repository: str
    manifest_digest: str
    config_digest: str
    layer_digests: tuple[str, ...]
    layer_sizes: tuple[int, ...]
    tags: tuple[str, ...]
    bytes_uploaded: int
    blobs_uploaded: tuple[str, ...] = ()
    blobs_skipped: tuple[str, ...] = ()
    blobs_mounted: tuple[str, ...] = ()
    forced_tags: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        """Pullable reference by digest, e.g. '127.0.0.1:5000/strata/tf@sha256:...'."""
        return f"{self.registry}/{self.repository}@{self.manifest_digest}"


@dataclass
class _BlobTally:
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0


def compress_layers(image: Image, cache: CompressedLayerCache, workers: int = 1) -> list[CompressedLayer]:
    """The compressed form of every layer: from the cache (the layer is not read), else by compressing its tar
    as the image's storage streams it, checked against its diff_id on the way.

    Up to `workers` layers are compressed at once, on threads (zlib and sha256 release the GIL), each layer
    still one deterministic gzip stream: the bytes and digests are those of `workers=1`. With more than one
    worker, a layer's reading and hashing also run beside its compression (`gzip_stream(read_ahead=True)`).
    A failing layer stops the others; the first failure is raised as one StrataError line and the cache keeps
    only complete entries. Example: `compress_layers(image, CompressedLayerCache(dir), workers=2)[0].digest`.
    """
    found = {layer.diff_id: cache.get(layer.diff_id) for layer in image.layers}
    # One job per missing diff_id (an image may repeat a layer), largest known size first: it bounds the time.
    first_index = {layer.diff_id: i for i, layer in reversed(list(enumerate(image.layers)))}
    missing = sorted(
        (i for diff_id, i in first_index.items() if found[diff_id] is None),
        key=lambda i: -(image.layers[i].size or 0),
    )
    if workers <= 1 or not missing:
        for index in missing:
            found[image.layers[index].diff_id] = _compress_layer(image, index, cache, None, False)
    else:
        found.update(_compress_concurrently(image, missing, cache, workers))
    return [_present(found[layer.diff_id]) for layer in image.layers]


def _present(layer: CompressedLayer | None) -> CompressedLayer:
    assert layer is not None  # every missing diff_id was compressed, or compress_layers raised
    return layer


def _compress_concurrently(
    image: Image, indexes: Sequence[int], cache: CompressedLayerCache, workers: int
) -> dict[str, CompressedLayer | None]:
    stop = threading.Event()
    done: dict[str, CompressedLayer | None] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=min(workers, len(indexes)), thread_name_prefix="strata-gzip") as pool:
        jobs = {pool.submit(_compress_layer, image, i, cache, stop, True): i for i in indexes}
        try:
            for job in as_completed(jobs):
                failure = job.exception()
                if failure is not None:
                    break
                done[image.layers[jobs[job]].diff_id] = job.result()
        finally:
            # On a failure (or an interrupt here) running layers stop at their next chunk and remove their
            # partial files, queued ones never start, and the pool's exit waits for them all.
            stop.set()
            for job in jobs:
                job.cancel()
    if failure is not None:
        raise failure  # the first one, already one line naming the image and the layer
    return done


class _Stopped(Exception):
    """Raised inside a layer's read when another layer failed: that layer stops and caches nothing."""


class _StoppableReader:
    """`source`, whose next read raises _Stopped once `stop` is set."""

    def __init__(self, source: IO[bytes], stop: threading.Event) -> None:
        self._source, self._stop = source, stop

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise _Stopped()
        return self._source.read(size)


def _compress_layer(
    image: Image, index: int, cache: CompressedLayerCache, stop: threading.Event | None, read_ahead: bool
) -> CompressedLayer:
    layer = image.layers[index]
    with image.open_layer_tar(index) as stream:
        source = cast(IO[bytes], _StoppableReader(stream, stop)) if stop is not None else stream
        try:
            return cache.add(source, expected_diff_id=layer.diff_id, read_ahead=read_ahead)
        except ValueError as exc:
            raise StrataError(f"{image.label}: layer {index}: {exc}") from None
        except OSError as exc:  # reading the layer or writing the cache (a full disk)
            raise StrataError(f"{image.label}: layer {index}: {exc}") from None


def build_manifest(
    config_digest: str, config_size: int, layers: Sequence[CompressedLayer], annotations: Mapping[str, str]
) -> bytes:
    """Docker schema2 manifest bytes; the same inputs always give the same bytes (and so the same digest).

    Annotations are not part of Docker schema2; registries keep them (the bytes are stored verbatim) and
    `docker pull` ignores them, so the compression used stays recorded next to the layers it produced.
    """
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_V2,
        "config": {"mediaType": DOCKER_CONFIG, "size": config_size, "digest": config_digest},
        "layers": [
            {"mediaType": DOCKER_LAYER_GZIP, "size": layer.size, "digest": layer.digest} for layer in layers
        ],
    }
    if annotations:
        manifest["annotations"] = dict(sorted(annotations.items()))
    return json.dumps(manifest, separators=(",", ":"), ensure_ascii=True).encode()


def image_exists(client: RegistryClient, repository: str, tag: str) -> str | None:
    """Manifest digest behind `repository:tag` when it exists, with its config and layers present; else None.

    Used for "push with cache": look up a content-hash tag before building.
    """
    manifest = client.get_manifest(repository, tag)
    if manifest is None:
        return None
    try:
        body = json.loads(manifest.body)
        blobs = [body["config"]["digest"]] + [layer["digest"] for layer in body.get("layers", [])]
    except (ValueError, KeyError, TypeError):
        return None  # an index or something we did not write: treat as absent, the caller rebuilds
    if any(client.blob_size(repository, digest) is None for digest in blobs):
        return None
    return manifest.digest


def push_archive(
    client: RegistryClient,
    archive: Path,
    repository: str,
    tags: list[str],
    *,
    policy: TagPolicy | None = None,
    annotations: Mapping[str, str] | None = None,
    force: bool = False,
    audit_log: AuditLog | None = None,
    mount_from: Sequence[str] = (),
    cache_dir: Path,
    on_progress: ProgressCallback | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int = 1,
) -> PushResult:
    """Push the image stored in `archive` (docker save, OCI archive or layout) like `push_image`, compressing
    up to `workers` layers at once (`compress_layers`).

    Example: push_archive(client, Path("tf.tar"), "strata/tensorflow", ["2.15.0-gpu"]).manifest_digest.
    """
    _check_audit(force, audit_log)
    image = read_image(archive)
    return push_image(
        client,
        image,
        repository,
        tags,
        policy=policy,
        annotations=annotations,
        force=force,
        audit_log=audit_log,
        mount_from=mount_from,
        layers=compress_layers(image, CompressedLayerCache(cache_dir), workers),
        on_progress=on_progress,
        chunk_size=chunk_size,
    )


def push_image(
    client: RegistryClient,
    image: Image,
    repository: str,
    tags: Sequence[str],
    *,
    layers: Sequence[CompressedLayer],
    policy: TagPolicy | None = None,
    annotations: Mapping[str, str] | None = None,
    force: bool = False,
    audit_log: AuditLog | None = None,
    mount_from: Sequence[str] = (),
    on_progress: ProgressCallback | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> PushResult:
    """Push `image`, whose layers compressed are `layers` (`compress_layers`), to `repository` under `tags`;
    see the module docstring for the order.

    Tags are checked against `policy` before any upload: moving an existing version tag raises TagPolicyError
    naming both digests, unless `force`, in which case the move is appended to `audit_log`.
    `mount_from` lists repositories of the same registry that may hold some blobs (mounted, not uploaded).
    """
    policy = policy or TagPolicy()
    _check_audit(force, audit_log)
    if len(layers) != len(image.layers):
        raise StrataError(
            f"{image.label}: {len(image.layers)} layers, but {len(layers)} compressed ones to push"
        )
    tags = list(tags)
    all_annotations = {COMPRESSION_ANNOTATION: COMPRESSION, **(annotations or {})}
    manifest = build_manifest(image.config_digest, len(image.config_bytes), layers, all_annotations)
    manifest_digest = sha256_digest(manifest)
    decisions = plan_tags(client, repository, tags, manifest_digest, policy, force=force)

    all_blobs = (image.config_digest, *(layer.digest for layer in layers))
    if tags and all(d.action is TagAction.UNCHANGED for d in decisions):
        # Every tag already names this manifest, which the registry accepted only with all its blobs present.
        return PushResult(
            client.host,
            repository,
            manifest_digest,
            image.config_digest,
            all_blobs[1:],
            tuple(layer.size for layer in layers),
            tuple(tags),
            0,
            blobs_skipped=all_blobs,
        )
    tally = _BlobTally()
    config_missing = _ensure_blob(client, repository, image.config_digest, mount_from, tally)
    if config_missing is not None:
        client.upload_bytes(repository, image.config_digest, image.config_bytes, session=config_missing)
        tally.uploaded.append(image.config_digest)
        tally.bytes_uploaded += len(image.config_bytes)
    for layer in layers:
        session = _ensure_blob(client, repository, layer.digest, mount_from, tally)
        if session is not None:
            tally.bytes_uploaded += client.upload_file(
                repository,
                layer.digest,
                layer.path,
                session=session,
                on_progress=on_progress,
                chunk_size=chunk_size,
            )
            tally.uploaded.append(layer.digest)
    for digest in all_blobs:
        if digest in tally.uploaded and client.blob_size(repository, digest) is None:
            raise RegistryError(
                f"registry {client.host} does not show blob {digest} in {repository} after upload"
            )

    client.put_manifest(repository, manifest_digest, manifest, DOCKER_MANIFEST_V2)
    forced = []
    for decision in decisions:
        if decision.action is TagAction.UNCHANGED:
            continue
        client.put_manifest(repository, decision.tag, manifest, DOCKER_MANIFEST_V2)
        if decision.action is TagAction.FORCED_MOVE and audit_log is not None:
            audit_log.append(
                "force-push", client.host, repository, decision.tag, decision.old, manifest_digest
            )
            forced.append(decision.tag)
    return PushResult(
        registry=client.host,
        repository=repository,
        manifest_digest=manifest_digest,
        config_digest=image.config_digest,
        layer_digests=tuple(layer.digest for layer in layers),
        layer_sizes=tuple(layer.size for layer in layers),
        tags=tuple(tags),
        bytes_uploaded=tally.bytes_uploaded,
        blobs_uploaded=tuple(tally.uploaded),
        blobs_skipped=tuple(tally.skipped),
        blobs_mounted=tuple(tally.mounted),
        forced_tags=tuple(forced),
    )


def _check_audit(force: bool, audit_log: AuditLog | None) -> None:
    if force and audit_log is None:
        raise StrataError("a forced push needs an audit log to record the moved tags")


def _ensure_blob(
    client: RegistryClient, repository: str, digest: str, mount_from: Sequence[str], tally: _BlobTally
) -> UploadSession | None:
    """Make `digest` present without uploading if possible; return an upload session when it must be uploaded."""
    if client.blob_size(repository, digest) is not None:
        tally.skipped.append(digest)
        return None
    session: UploadSession | None = None
    for source in mount_from:
        if source == repository:
            continue
        # When the mount fails the registry opens an upload instead; the last one opened is used.
        session = client.mount_blob(repository, digest, source)
        if session is None:
            tally.mounted.append(digest)
            return None
    return session or client.start_upload(repository)

"""A registry as an image store (`builder.oci.store.ImageStore`), through Strata's own client.

- `find(content_ref)`: the manifest the content tag names, when the registry has it with its config and every
  layer blob (`image_exists`); answered as `host/repository@sha256:...`.
- `get(ref)`: the image behind a tag or digest, as an `Image` with its registry origin: its config is fetched,
  its layers stay where they are until read (each is downloaded when opened). An engine puts such an image by
  pulling it itself, by digest (`builder.engine.store.EngineStore.put`).
- `put(image, tags)` / `push(...)`: every layer compressed once (cached by diff_id, so a cached layer is not
  read), only missing blobs uploaded, tags decided by the tag policy (`push.push_image`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder.errors import StrataError
from builder.oci.archive import ArchiveLayers
from builder.oci.image import Image, LayerDescriptor, LayerReader, RegistryOrigin, make_image
from builder.oci.store import Stored
from registry_sync.publish.compress import CompressedLayer, CompressedLayerCache
from registry_sync.publish.push import (
    DEFAULT_CHUNK_SIZE,
    ProgressCallback,
    PushResult,
    compress_layers,
    image_exists,
    push_image,
)
from registry_sync.publish.tag_policy import AuditLog, TagPolicy
from registry_sync.registry.client import RegistryClient
from registry_sync.registry.reference import ImageRef


@dataclass(frozen=True)
class RegistryLayers:
    """An image's layer blobs in a registry repository; a layer is downloaded (to a temporary file) when opened."""

    client: RegistryClient
    repository: str
    blobs: tuple[LayerDescriptor, ...]

    @contextlib.contextmanager
    def _downloaded(self, index: int) -> Iterator[ArchiveLayers]:
        digest = str(self.blobs[index].digest)
        with tempfile.TemporaryDirectory(prefix="strata-blob-") as work:
            self.client.download_blob(self.repository, digest, Path(work) / "blob")
            yield ArchiveLayers(f"{self.client.host}/{self.repository}@{digest}", Path(work), ("blob",))

    @contextlib.contextmanager
    def open_layer(self, index: int) -> Iterator[LayerReader]:
        with self._downloaded(index) as blob, blob.open_layer(0) as layer:
            yield layer

    @contextlib.contextmanager
    def open_layer_tar(self, index: int) -> Iterator[IO[bytes]]:
        with self._downloaded(index) as blob, blob.open_layer_tar(0) as tar:
            yield tar

    def stored_layer_size(self, index: int) -> tuple[int, bool]:
        blob = self.blobs[index]
        media_type = blob.media_type or ""
        return int(blob.size or 0), "gzip" in media_type or "zstd" in media_type


class RegistryStore:
    """One registry (the client's) as a store. `cache_dir` (settings.compressed_layers_dir) is needed to push;
    `policy`, `audit_log` and `force` decide tags as `push_image` does; `workers` layers are compressed at once
    (settings.push_workers). `name` says which in messages."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        name: str = "registry",
        cache_dir: Path | None = None,
        policy: TagPolicy | None = None,
        audit_log: AuditLog | None = None,
        force: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        on_progress: ProgressCallback | None = None,
        workers: int = 1,
    ) -> None:
        self.client = client
        self.name = name
        self.cache_dir = cache_dir
        self.policy = policy
        self.audit_log = audit_log
        self.force = force
        self.chunk_size = chunk_size
        self.on_progress = on_progress
        self.workers = workers

    def find(self, content_ref: str) -> str | None:
        """`host/repository@digest` of the complete image tagged `content_ref` here, else None."""
        ref = ImageRef.require(content_ref, "content tag")
        digest = image_exists(self.client, ref.repository, ref.tag or "latest")
        return f"{self.client.host}/{ref.repository}@{digest}" if digest is not None else None

    def get(self, ref: str) -> Image:
        """The image `ref` (`[host/]repository:tag` or `@digest`) with its config; layers are read on demand."""
        parsed = ImageRef.require(ref, "image")
        reference = parsed.digest or parsed.tag or "latest"
        manifest = self.client.get_manifest(parsed.repository, reference)
        if manifest is None:
            raise StrataError(f"{self.client.host}/{parsed.repository}: no manifest {reference}")
        try:
            body = json.loads(manifest.body)
            config_digest = str(body["config"]["digest"])
            blobs = tuple(
                LayerDescriptor("", str(layer["digest"]), int(layer["size"]), layer.get("mediaType"))
                for layer in body.get("layers") or []
            )
        except (ValueError, KeyError, TypeError):
            raise StrataError(
                f"{self.client.host}/{parsed.repository}:{reference} is not an image manifest"
            ) from None
        with tempfile.TemporaryDirectory(prefix="strata-config-") as work:
            self.client.download_blob(parsed.repository, config_digest, Path(work) / "config")
            config_bytes = (Path(work) / "config").read_bytes()
        credentials = self.client.credentials
        origin = RegistryOrigin(
            f"{self.client.host}/{parsed.repository}",
            manifest.digest,
            credentials.username if credentials else None,
            credentials.password if credentials else None,
        )
        storage = RegistryLayers(self.client, parsed.repository, blobs)
        return make_image(ref, config_bytes, storage, blobs, origin=origin)

    def compressed_layers(self, image: Image) -> list[CompressedLayer]:
        """Every layer of `image` compressed as pushes compress it (from the cache when it holds them)."""
        if self.cache_dir is None:
            raise StrataError(
                f"registry {self.client.host}: pushing needs a compressed-layer cache directory"
            )
        return compress_layers(image, CompressedLayerCache(self.cache_dir), self.workers)

    def push(
        self,
        image: Image,
        repository: str,
        tags: Sequence[str],
        *,
        annotations: Mapping[str, str] | None = None,
        mount_from: Sequence[str] = (),
        layers: Sequence[CompressedLayer] | None = None,
    ) -> PushResult:
        """Push `image` to `repository` under `tags` (`push_image`); `layers` when already compressed."""
        return push_image(
            self.client,
            image,
            repository,
            tags,
            layers=layers if layers is not None else self.compressed_layers(image),
            policy=self.policy,
            annotations=annotations,
            force=self.force,
            audit_log=self.audit_log,
            mount_from=mount_from,
            on_progress=self.on_progress,
            chunk_size=self.chunk_size,
        )

    def put(self, image: Image, tags: Sequence[str]) -> Stored:
        """Push `image` under `tags`, each `[host/]repository:tag` of one repository of this registry."""
        refs = [ImageRef.require(tag, "tag") for tag in tags]
        repositories = {ref.repository for ref in refs}
        if len(repositories) != 1 or any(ref.tag is None for ref in refs):
            raise StrataError(f"push {image.label}: give tags of one repository, as repository:tag ({tags})")
        result = self.push(image, repositories.pop(), [str(ref.tag) for ref in refs])
        return Stored(result.reference, len(image.config_bytes) + sum(result.layer_sizes))

    def close(self) -> None:
        self.client.close()

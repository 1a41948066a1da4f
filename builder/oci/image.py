"""One image value: what canonicalizing, diffing, listing packages, loading and pushing read an image as.

An `Image` is its config bytes, one `LayerDescriptor` per layer, and the `LayerStorage` that opens those layers
where the image happens to live: files (a docker-save archive, an OCI archive or layout: `builder.oci.archive`),
a local engine's overlay2 storage (`builder.engine.layer_store`) or a registry
(`registry_sync.publish.store`). Code that takes an Image never asks where it came from. The shape follows
go-containerregistry's `v1.Image`: accessors only, and a change (`with_label`) makes a new image.

Every Image is consistent: its config lists exactly one diff_id per stored layer.
"""

from __future__ import annotations

import dataclasses
import json
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO, Any, Protocol

from builder.errors import StrataError
from builder.oci.digest import sha256_digest


class LayerReader(Protocol):
    """One layer's members, in any order (canonicalizing sorts them), and the data of the regular ones."""

    def getmembers(self) -> list[tarfile.TarInfo]: ...

    def extractfile(self, member: tarfile.TarInfo) -> IO[bytes] | None: ...

    def __iter__(self) -> Iterator[tarfile.TarInfo]: ...


class LayerStorage(Protocol):
    """Where an image's layers are kept, and the three ways of reading layer `index` from there."""

    def open_layer(self, index: int) -> AbstractContextManager[LayerReader]:
        """The layer's members with random access (what canonicalizing and diffing walk)."""
        ...

    def open_layer_tar(self, index: int) -> AbstractContextManager[IO[bytes]]:
        """The layer's uncompressed tar, byte for byte: it hashes to the layer's diff_id (what a push compresses)."""
        ...

    def stored_layer_size(self, index: int) -> tuple[int, bool]:
        """The layer's size in bytes as stored here, and whether it is stored compressed (gzip or zstd)."""
        ...


@dataclass(frozen=True)
class LayerDescriptor:
    """One layer: its diff_id (digest of the uncompressed tar) and, where the storage says, its stored blob."""

    diff_id: str
    digest: str | None = None
    size: int | None = None
    media_type: str | None = None


@dataclass(frozen=True)
class RegistryOrigin:
    """A registry repository the image can be fetched from by manifest digest (an engine may pull it itself)."""

    repository: str  # host[:port]/repository
    digest: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def reference(self) -> str:
        """`host/repository@sha256:...`."""
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class Image:
    """An image: config bytes, layer descriptors, and the storage its layers are read from.

    Example: `read_image(Path("out/tf2.13.1-cpu")).config_digest` is the image ID the engine gives it.
    """

    label: str
    config_bytes: bytes
    layers: tuple[LayerDescriptor, ...]
    storage: LayerStorage = field(repr=False, compare=False)
    repo_tags: tuple[str, ...] = ()
    origin: RegistryOrigin | None = None

    @cached_property
    def config(self) -> dict[str, Any]:
        """The image config as parsed JSON."""
        parsed: dict[str, Any] = json.loads(self.config_bytes)
        return parsed

    @cached_property
    def config_digest(self) -> str:
        """Digest of the config bytes; Docker shows it as the image ID."""
        return sha256_digest(self.config_bytes)

    @property
    def diff_ids(self) -> tuple[str, ...]:
        """Digests of the uncompressed layers, as the config lists them."""
        return tuple(layer.diff_id for layer in self.layers)

    @property
    def labels(self) -> dict[str, str]:
        """The image's labels (`config.Labels`)."""
        return dict((self.config.get("config") or {}).get("Labels") or {})

    def open_layer(self, index: int) -> AbstractContextManager[LayerReader]:
        """Layer `index`'s members, with random access."""
        return self.storage.open_layer(index)

    def open_layer_tar(self, index: int) -> AbstractContextManager[IO[bytes]]:
        """Layer `index` as its uncompressed tar bytes (they hash to its diff_id)."""
        return self.storage.open_layer_tar(index)

    def stored_layer_size(self, index: int) -> tuple[int, bool]:
        """Layer `index`'s size as stored, and whether it is stored compressed."""
        return self.storage.stored_layer_size(index)


def make_image(
    label: str,
    config_bytes: bytes,
    storage: LayerStorage,
    stored: Sequence[LayerDescriptor] | int,
    *,
    repo_tags: Sequence[str] = (),
    origin: RegistryOrigin | None = None,
) -> Image:
    """The Image whose config is `config_bytes` and whose layers `storage` holds.

    `stored` describes the stored layers (their `diff_id` left empty: the config's are filled in) or only counts
    them. A config that is not a JSON object, or lists another number of layers, is an error naming `label`.
    """
    try:
        config = json.loads(config_bytes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StrataError(f"{label}: the image config is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise StrataError(f"{label}: the image config is not a JSON object")
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    blobs = [LayerDescriptor("")] * stored if isinstance(stored, int) else list(stored)
    if len(blobs) != len(diff_ids):
        raise StrataError(f"{label}: config lists {len(diff_ids)} layers but the archive has {len(blobs)}")
    layers = tuple(dataclasses.replace(blob, diff_id=str(d)) for blob, d in zip(blobs, diff_ids))
    return Image(label, config_bytes, layers, storage, tuple(repo_tags), origin)


def with_label(image: Image, label: str) -> Image:
    """The same image, named `label` in messages."""
    return dataclasses.replace(image, label=label)

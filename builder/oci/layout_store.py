"""OCI image layout directories: how Strata writes them, and a layout as an image store.

The writers (`prepare_layout`, `write_blob`, `write_manifest`, `write_index`) give the same bytes for the same
image on every run; `builder.oci.canonical` writes canonical layouts with them. Next to `index.json` every
layout holds a `docker load` `manifest.json`, since Docker 20.10 cannot load an OCI layout; `pack_layout` turns
the directory into the one tar `docker load` (and skopeo's `oci-archive:`) reads.

`LayoutStore` is the layout as a store (`builder.oci.store.ImageStore`): `find` by content tag, `get` by tag or
manifest digest, `put` an image under tags (layers stored uncompressed, so each blob's digest is its diff_id).
"""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from builder.errors import StrataError
from builder.oci.archive import blob_path, read_image
from builder.oci.digest import StreamDigest, sha256_digest
from builder.oci.image import Image
from builder.oci.media_types import OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST
from builder.oci.store import Stored

REF_NAME = "org.opencontainers.image.ref.name"
_COPY_CHUNK = 1 << 20


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no spaces: one byte sequence per value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def prepare_layout(layout: Path) -> None:
    """Make `layout` an empty layout directory; an existing layout is replaced, anything else is refused."""
    if layout.exists():
        if not layout.is_dir() or (any(layout.iterdir()) and not (layout / "oci-layout").is_file()):
            raise StrataError(f"{layout}: exists and is not an OCI layout; choose an empty or new directory")
        shutil.rmtree(layout)
    (layout / "blobs" / "sha256").mkdir(parents=True)


def write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    """Store `data` as a blob of `layout`; returns its digest and size."""
    digest = sha256_digest(data)
    target = layout / blob_path(digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return digest, len(data)


@dataclass(frozen=True)
class BlobRef:
    """A blob a manifest points at: media type, digest, size."""

    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def write_manifest(layout: Path, config: BlobRef, layers: Sequence[BlobRef]) -> BlobRef:
    """Store the OCI manifest of `config` and `layers` in `layout`; returns its descriptor."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    digest, size = write_blob(layout, canonical_json(manifest))
    return BlobRef(OCI_MANIFEST, digest, size)


@dataclass(frozen=True)
class IndexEntry:
    """One image of a layout: its manifest, its config and layer blobs (for `docker load`), and its tag."""

    manifest: BlobRef
    config_digest: str
    layer_digests: tuple[str, ...]
    tag: str | None = None

    def descriptor(self) -> dict[str, Any]:
        entry = self.manifest.to_json()
        if self.tag:
            entry["annotations"] = {REF_NAME: self.tag}
        return entry


def docker_load_manifest(config_digest: str, layer_paths: Sequence[str], tag: str | None) -> dict[str, Any]:
    """One entry of a `docker load` manifest.json: config path, RepoTags, layer paths."""
    return {
        "Config": blob_path(config_digest),
        "RepoTags": [tag] if tag else None,
        "Layers": list(layer_paths),
    }


def write_index(layout: Path, entries: Sequence[IndexEntry]) -> None:
    """Write `index.json`, `oci-layout` and the `docker load` `manifest.json` listing `entries`."""
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [e.descriptor() for e in entries]}
    (layout / "index.json").write_bytes(canonical_json(index))
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    loads = [
        docker_load_manifest(e.config_digest, [blob_path(d) for d in e.layer_digests], e.tag) for e in entries
    ]
    (layout / "manifest.json").write_bytes(canonical_json(loads))


def pack_layout(layout: Path, out: IO[bytes]) -> None:
    """Write the OCI layout directory `layout` as one tar to `out`, byte-for-byte the same on every run.

    Docker 20.10's `docker load` reads the `manifest.json` inside; skopeo reads it as `oci-archive:`.
    Blobs a partial layout leaves out (layers the engine already has) are simply not in the tar.
    """
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for file in sorted(p for p in layout.rglob("*")):
            relative = file.relative_to(layout).as_posix()
            info = tarfile.TarInfo(relative)
            info.mtime = 0
            info.mode = 0o755 if file.is_dir() else 0o644
            if file.is_dir():
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
                continue
            info.size = file.stat().st_size
            with open(file, "rb") as data:
                archive.addfile(info, data)


class LayoutStore:
    """An OCI layout directory as an image store. Example: `LayoutStore(Path("out")).put(image, ["s/t:1"])`."""

    name = "layout"

    def __init__(self, layout: Path) -> None:
        self.layout = layout

    def _entries(self) -> list[IndexEntry]:
        """The images the layout lists now (none when it does not exist yet)."""
        if not (self.layout / "index.json").is_file():
            return []
        index = json.loads((self.layout / "index.json").read_bytes())
        entries = []
        for descriptor in index.get("manifests") or []:
            manifest = json.loads((self.layout / blob_path(descriptor["digest"])).read_bytes())
            entries.append(
                IndexEntry(
                    BlobRef(descriptor["mediaType"], descriptor["digest"], int(descriptor["size"])),
                    manifest["config"]["digest"],
                    tuple(layer["digest"] for layer in manifest["layers"]),
                    (descriptor.get("annotations") or {}).get(REF_NAME),
                )
            )
        return entries

    def find(self, content_ref: str) -> str | None:
        """The manifest digest tagged `content_ref` here, when the layout holds all its blobs."""
        for entry in self._entries():
            if entry.tag == content_ref:
                blobs = (entry.manifest.digest, entry.config_digest, *entry.layer_digests)
                if all((self.layout / blob_path(d)).is_file() for d in blobs):
                    return entry.manifest.digest
        return None

    def get(self, ref: str) -> Image:
        """The image tagged `ref` (or with manifest digest `ref`), read through the OCI index."""
        if not ref.startswith("sha256:"):
            digests = [e.manifest.digest for e in self._entries() if e.tag == ref]
            if not digests:
                raise StrataError(f"{self.layout}: no image tagged {ref!r}")
            ref = digests[0]
        return read_image(self.layout, tag=ref)

    def put(self, image: Image, tags: Sequence[str]) -> Stored:
        """Store `image` under `tags` (replacing what those tags named); each layer's tar is checked against its
        diff_id while it is copied."""
        entries = self._entries()
        if not entries:
            prepare_layout(self.layout)
        layers = [self._put_layer(image, index) for index in range(len(image.layers))]
        config_digest, config_size = write_blob(self.layout, image.config_bytes)
        manifest = write_manifest(self.layout, BlobRef(OCI_CONFIG, config_digest, config_size), layers)
        names: list[str | None] = list(tags) or [None]
        added = [
            IndexEntry(manifest, config_digest, tuple(layer.digest for layer in layers), tag) for tag in names
        ]
        kept = [e for e in entries if e.tag is None or e.tag not in set(tags)]
        write_index(self.layout, kept + added)
        return Stored(manifest.digest, sum(layer.size for layer in layers))

    def _put_layer(self, image: Image, index: int) -> BlobRef:
        diff_id = image.layers[index].diff_id
        target = self.layout / blob_path(diff_id)
        if target.is_file():
            return BlobRef(OCI_LAYER_TAR, diff_id, target.stat().st_size)
        partial = target.with_name(f".{target.name}.partial")
        hasher = StreamDigest()
        with image.open_layer_tar(index) as source, open(partial, "wb") as out:
            while chunk := source.read(_COPY_CHUNK):
                hasher.update(chunk)
                out.write(chunk)
        if hasher.digest != diff_id:
            partial.unlink()
            raise StrataError(
                f"{image.label}: layer {index} hashes to {hasher.digest}, its diff_id is {diff_id}"
            )
        partial.replace(target)
        return BlobRef(OCI_LAYER_TAR, diff_id, hasher.size)

    def close(self) -> None:
        """Nothing to release: a layout is files."""

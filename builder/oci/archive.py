"""Read container images from files: a `docker save` archive, an OCI archive, or an OCI layout directory.

Pure file I/O, no Docker engine: the engine side (`builder.engine.store`) only turns a reference into one of
these files when it cannot read the engine's storage. `read_image` gives the one `Image` value
(`builder.oci.image`) whose layers `ArchiveLayers` opens from the file: as members with random access (gzip is
inflated once into a temporary file, since canonicalizing visits members in another order than they were
written in) or as the uncompressed tar stream a push compresses.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from builder.errors import StrataError
from builder.oci.digest import sha256_digest
from builder.oci.image import Image, LayerDescriptor, make_image
from builder.oci.media_types import INDEX_MEDIA_TYPES

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def blob_path(digest: str) -> str:
    """Path of a blob inside an OCI layout: `sha256:ab..` -> `blobs/sha256/ab..`."""
    algorithm, _, hexpart = digest.partition(":")
    return f"blobs/{algorithm}/{hexpart}"


@dataclass(frozen=True)
class ArchiveLayers:
    """Layer blobs kept in a file: `refs[i]` is the path inside `root` (a directory or a tar archive) of layer i,
    possibly compressed."""

    label: str
    root: Path
    refs: tuple[str, ...]

    def _open_stored(self, index: int, stack: contextlib.ExitStack) -> tuple[IO[bytes], int]:
        """Layer `index`'s blob as stored (maybe compressed), and its size in bytes."""
        ref = self.refs[index]
        if self.root.is_dir():
            try:
                return stack.enter_context(open(self.root / ref, "rb")), (self.root / ref).stat().st_size
            except OSError:
                raise StrataError(f"{self.label}: missing {ref}") from None
        outer = stack.enter_context(tarfile.open(self.root, "r:"))
        member = _archive_member(outer, ref, self.label)
        extracted = outer.extractfile(member)
        if extracted is None:
            raise StrataError(f"{self.label}: layer {ref} is not a regular file in the archive")
        return stack.enter_context(extracted), member.size

    def stored_layer_size(self, index: int) -> tuple[int, bool]:
        """Size in bytes of layer `index` as stored here, and whether it is stored compressed (gzip or zstd)."""
        with contextlib.ExitStack() as stack:
            raw, size = self._open_stored(index, stack)
            magic = raw.read(4)
        return size, magic.startswith((GZIP_MAGIC, ZSTD_MAGIC))

    @contextlib.contextmanager
    def open_layer_tar(self, index: int) -> Iterator[IO[bytes]]:
        """Layer `index` as its uncompressed tar, read front to back (gzip is inflated as it is read)."""
        with contextlib.ExitStack() as stack:
            raw, _ = self._open_stored(index, stack)
            magic = raw.read(4)
            raw.seek(0)
            if magic.startswith(ZSTD_MAGIC):
                raise StrataError(
                    f"{self.label}: layer {self.refs[index]} is zstd-compressed, which Strata does not read"
                )
            if magic.startswith(GZIP_MAGIC):
                inflated = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
                yield cast(IO[bytes], inflated)  # a GzipFile reads like any binary file
            else:
                yield raw

    @contextlib.contextmanager
    def open_layer(self, index: int) -> Iterator[tarfile.TarFile]:
        """Open layer `index` as an uncompressed tar that allows random access to its members."""
        ref = self.refs[index]
        with contextlib.ExitStack() as stack:
            raw, _ = self._open_stored(index, stack)
            magic = raw.read(4)
            raw.seek(0)
            if magic.startswith(ZSTD_MAGIC):
                raise StrataError(f"{self.label}: layer {ref} is zstd-compressed, which Strata does not read")
            if magic.startswith(GZIP_MAGIC):
                # gzip has no random access: inflate once into a temporary file.
                spool = stack.enter_context(tempfile.TemporaryFile(prefix="strata-layer-"))
                with gzip.GzipFile(fileobj=raw, mode="rb") as inflated:
                    shutil.copyfileobj(inflated, spool, 1 << 20)
                spool.seek(0)
                raw = spool
            try:
                layer = stack.enter_context(tarfile.open(fileobj=raw, mode="r:"))
            except tarfile.TarError as exc:
                raise StrataError(f"{self.label}: layer {ref} is not a tar archive ({exc})") from None
            yield layer


def _archive_member(outer: tarfile.TarFile, name: str, label: str) -> tarfile.TarInfo:
    try:
        return outer.getmember(name)
    except KeyError:
        raise StrataError(f"{label}: archive has no member {name!r}") from None


def _read_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StrataError(f"{where}: not valid JSON ({exc})") from None


class _Reader:
    """Reads named files from a directory or a tar archive, whichever `root` is."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tar: tarfile.TarFile | None = None
        self._names: set[str] = set()
        if not root.is_dir():
            try:
                self._tar = tarfile.open(root, "r:")  # noqa: SIM115 -- closed by close()
            except (tarfile.TarError, OSError) as exc:
                raise StrataError(f"{root}: not an image archive or OCI layout ({exc})") from None
            self._names = {m.name.removeprefix("./") for m in self._tar.getmembers()}

    def exists(self, name: str) -> bool:
        if self._tar is None:
            return (self.root / name).is_file()
        return name in self._names

    def read(self, name: str) -> bytes:
        if self._tar is None:
            try:
                return (self.root / name).read_bytes()
            except OSError:
                raise StrataError(f"{self.root}: missing {name}") from None
        for candidate in (name, "./" + name):
            if candidate in self._tar.getnames():
                extracted = self._tar.extractfile(candidate)
                if extracted is not None:
                    return extracted.read()
        raise StrataError(f"{self.root}: missing {name}")

    def size(self, name: str) -> int | None:
        """Size in bytes of the stored file `name` (as `member_name` spells it), None when it is not there."""
        if self._tar is None:
            try:
                return (self.root / name).stat().st_size
            except OSError:
                return None
        try:
            return self._tar.getmember(name).size
        except KeyError:
            return None

    def member_name(self, name: str) -> str:
        """The name under which `name` is stored (archives sometimes prefix `./`)."""
        if self._tar is not None and name not in self._tar.getnames() and "./" + name in self._tar.getnames():
            return "./" + name
        return name

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def read_image(path: Path, tag: str | None = None) -> Image:
    """Read the image stored at `path`: a `docker save` tar, an OCI archive, or an OCI layout directory.

    When the file holds several images, `tag` picks one (by RepoTags, the OCI ref.name annotation, or the
    manifest digest); without it the file must hold exactly one.

    Example: `read_image(Path("out/tf2.15-gpu"))` reads the layout `canonicalize_archive` wrote.
    """
    if not path.exists():
        raise StrataError(f"{path}: no such image archive or layout")
    reader = _Reader(path)
    try:
        if reader.exists("manifest.json") and not (tag or "").startswith("sha256:"):
            return _read_docker_archive(path, reader, tag)
        if reader.exists("index.json"):
            return _read_oci(path, reader, tag)
        raise StrataError(f"{path}: neither manifest.json (docker save) nor index.json (OCI layout) found")
    except (KeyError, TypeError, AttributeError) as exc:
        raise StrataError(
            f"{path}: the image's manifest is malformed ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        reader.close()


def _read_config(path: Path, reader: _Reader, name: str, digest: str | None) -> bytes:
    """The config blob `name`, checked against the digest its name (or descriptor) promises."""
    data = reader.read(name)
    if digest is not None and sha256_digest(data) != digest:
        raise StrataError(f"{path}: config {name} hashes to {sha256_digest(data)}, not {digest}")
    return data


def _read_docker_archive(path: Path, reader: _Reader, tag: str | None) -> Image:
    entries = _read_json(reader.read("manifest.json"), f"{path}:manifest.json")
    if not isinstance(entries, list) or not entries:
        raise StrataError(f"{path}:manifest.json: expected a non-empty list of images")
    if tag is not None:
        entries = [e for e in entries if tag in (e.get("RepoTags") or [])]
        if not entries:
            raise StrataError(f"{path}: no image tagged {tag!r}")
    if len(entries) > 1:
        raise StrataError(f"{path}: holds {len(entries)} images; name one with its tag")
    entry = entries[0]
    config_name = str(entry["Config"])
    # `<hex>.json` (docker save) or `blobs/sha256/<hex>` (an OCI layout's manifest.json): the name is the digest.
    named = Path(config_name).name.removesuffix(".json")
    promised = f"sha256:{named}" if len(named) == 64 else None
    refs = tuple(reader.member_name(str(layer)) for layer in entry["Layers"])
    return make_image(
        str(path),
        _read_config(path, reader, config_name, promised),
        ArchiveLayers(str(path), path, refs),
        [LayerDescriptor("", size=reader.size(ref)) for ref in refs],
        repo_tags=tuple(entry.get("RepoTags") or ()),
    )


def _read_oci(path: Path, reader: _Reader, tag: str | None) -> Image:
    index = _read_json(reader.read("index.json"), f"{path}:index.json")
    manifests = list(index.get("manifests", []))
    # Follow nested indexes (multi-platform); Strata builds linux/amd64 only, so take the manifests inside.
    resolved: list[dict[str, Any]] = []
    while manifests:
        descriptor = manifests.pop(0)
        if descriptor.get("mediaType") in INDEX_MEDIA_TYPES:
            nested = _read_json(
                reader.read(blob_path(descriptor["digest"])), f"{path}:{descriptor['digest']}"
            )
            manifests.extend(nested.get("manifests", []))
        else:
            resolved.append(descriptor)
    if tag is not None and tag.startswith("sha256:"):
        resolved = [d for d in resolved if d.get("digest") == tag][:1]
        if not resolved:
            raise StrataError(f"{path}: no image manifest {tag}")
    elif tag is not None:
        resolved = [
            d
            for d in resolved
            if (d.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag
        ]
        if not resolved:
            raise StrataError(f"{path}: no image with ref.name {tag!r}")
    if len(resolved) != 1:
        raise StrataError(f"{path}: holds {len(resolved)} image manifests; name one with its tag")
    descriptor = resolved[0]
    manifest = _read_json(reader.read(blob_path(descriptor["digest"])), f"{path}:{descriptor['digest']}")
    ref_name = (descriptor.get("annotations") or {}).get("org.opencontainers.image.ref.name")
    config_digest = str(manifest["config"]["digest"])
    return make_image(
        str(path),
        _read_config(path, reader, blob_path(config_digest), config_digest),
        ArchiveLayers(
            str(path),
            path,
            tuple(reader.member_name(blob_path(layer["digest"])) for layer in manifest["layers"]),
        ),
        [
            LayerDescriptor("", str(layer["digest"]), int(layer["size"]), layer.get("mediaType"))
            for layer in manifest["layers"]
        ],
        repo_tags=(ref_name,) if ref_name else (),
    )

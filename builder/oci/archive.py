"""Read container images from files: a `docker save` archive, an OCI archive, or an OCI layout directory.

Pure file I/O, no Docker engine: the engine side (`builder.engine.images`) only turns a reference into one of
these files. Layers are handed out as uncompressed, seekable tar files, because canonicalizing needs to visit
a layer's members in an order other than the one they were written in.
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
from typing import IO, Any, Protocol

from builder.errors import StrataError
from builder.oci.digest import sha256_digest
from builder.oci.media_types import INDEX_MEDIA_TYPES

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def blob_path(digest: str) -> str:
    """Path of a blob inside an OCI layout: `sha256:ab..` -> `blobs/sha256/ab..`."""
    algorithm, _, hexpart = digest.partition(":")
    return f"blobs/{algorithm}/{hexpart}"


class LayerReader(Protocol):
    """What canonicalizing needs of one layer: its members, and the data of the regular ones."""

    def getmembers(self) -> list[tarfile.TarInfo]: ...

    def extractfile(self, member: tarfile.TarInfo) -> IO[bytes] | None: ...


class LayeredImage(Protocol):
    """An image to canonicalize: an `ImageSource` read from a file, or one read from an engine's storage."""

    @property
    def label(self) -> str: ...

    @property
    def layer_refs(self) -> tuple[str, ...]: ...

    @property
    def config(self) -> dict[str, Any]: ...

    @property
    def diff_ids(self) -> tuple[str, ...]: ...

    def stored_layer_size(self, index: int) -> tuple[int, bool]: ...

    def open_layer(self, index: int) -> contextlib.AbstractContextManager[LayerReader]: ...


@dataclass(frozen=True)
class ImageSource:
    """An image read from a file: its config and where each layer's blob lives.

    `layer_refs[i]` is a path inside `root` (a directory or a tar archive) holding layer i, possibly compressed.
    Use `open_layer(i)` to get it as an uncompressed tar.
    """

    label: str
    root: Path
    config_bytes: bytes
    layer_refs: tuple[str, ...]
    repo_tags: tuple[str, ...] = ()

    @property
    def config(self) -> dict[str, Any]:
        """The image config as parsed JSON."""
        parsed: dict[str, Any] = json.loads(self.config_bytes)
        return parsed

    @property
    def config_digest(self) -> str:
        """Digest of the config bytes; Docker shows it as the image ID."""
        return sha256_digest(self.config_bytes)

    @property
    def diff_ids(self) -> tuple[str, ...]:
        """Digests of the uncompressed layers, as the config lists them."""
        return tuple(self.config.get("rootfs", {}).get("diff_ids", []))

    def _open_stored(self, index: int, stack: contextlib.ExitStack) -> tuple[IO[bytes], int]:
        """Layer `index`'s blob as stored (maybe compressed), and its size in bytes."""
        ref = self.layer_refs[index]
        if self.root.is_dir():
            return stack.enter_context(open(self.root / ref, "rb")), (self.root / ref).stat().st_size
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
    def open_layer(self, index: int) -> Iterator[tarfile.TarFile]:
        """Open layer `index` as an uncompressed tar that allows random access to its members."""
        ref = self.layer_refs[index]
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

    def member_name(self, name: str) -> str:
        """The name under which `name` is stored (archives sometimes prefix `./`)."""
        if self._tar is not None and name not in self._tar.getnames() and "./" + name in self._tar.getnames():
            return "./" + name
        return name

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def read_image(path: Path, tag: str | None = None) -> ImageSource:
    """Read the image stored at `path`: a `docker save` tar, an OCI archive, or an OCI layout directory.

    When the file holds several images, `tag` picks one (by RepoTags or the OCI ref.name annotation);
    without it the file must hold exactly one.

    Example: `read_image(Path("out/tf2.15-gpu"))` reads the layout `canonicalize_archive` wrote.
    """
    if not path.exists():
        raise StrataError(f"{path}: no such image archive or layout")
    reader = _Reader(path)
    try:
        if reader.exists("manifest.json"):
            return _read_docker_archive(path, reader, tag)
        if reader.exists("index.json"):
            return _read_oci(path, reader, tag)
        raise StrataError(f"{path}: neither manifest.json (docker save) nor index.json (OCI layout) found")
    finally:
        reader.close()


def _read_docker_archive(path: Path, reader: _Reader, tag: str | None) -> ImageSource:
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
    return ImageSource(
        label=str(path),
        root=path,
        config_bytes=reader.read(entry["Config"]),
        layer_refs=tuple(reader.member_name(layer) for layer in entry["Layers"]),
        repo_tags=tuple(entry.get("RepoTags") or ()),
    )


def _read_oci(path: Path, reader: _Reader, tag: str | None) -> ImageSource:
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
    if tag is not None:
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
    return ImageSource(
        label=str(path),
        root=path,
        config_bytes=reader.read(blob_path(manifest["config"]["digest"])),
        layer_refs=tuple(reader.member_name(blob_path(layer["digest"])) for layer in manifest["layers"]),
        repo_tags=(ref_name,) if ref_name else (),
    )


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

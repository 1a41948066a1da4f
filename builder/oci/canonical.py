"""Canonical images: the same build inputs give the same bytes, so the same digest.

A build leaves traces of *when* and *where* it ran: file mtimes, the order a filesystem walk met files,
owner names, access times in pax headers, `created` stamps, the builder's hostname and container id, apt and
pip caches, timestamps inside `.pyc` headers. `canonicalize_archive` rewrites an image so none of that is left,
keeping everything a container sees at run time except those stamps:

- every layer's members in byte order of their path, owner names dropped (numeric ids kept), mtimes clamped to
  `policy.epoch` (SOURCE_DATE_EPOCH semantics), pax headers other than xattrs dropped (file capabilities stay);
- hard-link groups re-pointed at their first path, so which name holds the data does not depend on walk order;
- files under `policy.volatile_paths` (caches, logs) removed; whiteouts and directories are never removed;
- timestamp `.pyc` headers clamped like their sources' mtimes, so Python still trusts them;
- the config reduced to what OCI defines (plus Docker's Healthcheck/Shell/OnBuild), `created` set to the epoch;
- layers gzip-compressed with a fixed header (or left uncompressed).

The config digest (Docker's image ID) depends only on uncompressed layers; the manifest digest also depends on
the compressor, so compare config digests when asking "did two builds produce the same image?".
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import os
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import IO, Any, Literal

from builder.errors import StrataError
from builder.oci.archive import blob_path, read_image
from builder.oci.digest import sha256_digest
from builder.oci.image import Image, LayerReader
from builder.oci.layout_store import (
    BlobRef,
    IndexEntry,
    canonical_json,
    docker_load_manifest,
    prepare_layout,
    write_blob,
    write_index,
    write_manifest,
)
from builder.oci.media_types import OCI_CONFIG, OCI_LAYER

# Files whose content records when or how a build ran, never what the image does. Matched against
# non-directory members only (fnmatch: `*` spans `/`), and never against whiteouts.
DEFAULT_VOLATILE_PATHS: tuple[str, ...] = (
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/cache/ldconfig/aux-cache",
    "var/log/*",
    "tmp/*",
    "var/tmp/*",
    "root/.cache/*",
)

# OCI image-spec `config` keys, plus the Docker ones that change what a container does.
CONFIG_KEYS = {
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
}
IMAGE_KEYS = {
    "architecture",
    "os",
    "os.version",
    "os.features",
    "variant",
    "author",
    "config",
    "rootfs",
    "history",
}
HISTORY_KEYS = {"created_by", "comment", "empty_layer", "author"}
XATTR_PAX_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")
WHITEOUT_PREFIX = ".wh."
PYC_HEADER_SIZE = 16
# How member names become bytes in every tar Strata writes (tarfile's defaults on Linux, pinned).
TAR_ENCODING = "utf-8"
TAR_ERRORS = "surrogateescape"


@dataclass(frozen=True)
class CanonicalPolicy:
    """What canonicalizing keeps and what it rewrites.

    Example: `CanonicalPolicy(epoch=int(os.environ["SOURCE_DATE_EPOCH"]))` clamps mtimes to the commit time.
    """

    epoch: int = 0
    volatile_paths: tuple[str, ...] = DEFAULT_VOLATILE_PATHS
    clamp_pyc_timestamps: bool = True
    compression: Literal["gzip", "none"] = "gzip"
    gzip_level: int = 6

    def __post_init__(self) -> None:
        if self.epoch < 0:
            raise StrataError(f"epoch {self.epoch}: must be seconds since 1970, not negative")
        if self.compression not in OCI_LAYER:
            raise StrataError(f"compression {self.compression!r}: choose one of {', '.join(OCI_LAYER)}")

    def is_volatile(self, path: str) -> bool:
        """Whether a non-directory member at `path` is build residue to drop."""
        if os.path.basename(path).startswith(WHITEOUT_PREFIX):
            return False
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.volatile_paths)


@dataclass(frozen=True)
class CanonicalLayer:
    """One rewritten layer: its digests, its blob size, and the paths it dropped as volatile."""

    diff_id: str
    digest: str
    size: int
    media_type: str
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True)
class CanonicalImage:
    """The canonical image written as an OCI layout directory (which also holds a `docker load` manifest)."""

    layout: Path
    manifest_digest: str
    config_digest: str
    layers: tuple[CanonicalLayer, ...]
    tag: str | None = None
    # Layer blobs listed in the manifests but not written to the layout, because the place the image goes
    # (the engine it was built on) already holds them: a partial layout, good for `docker load` only.
    absent: tuple[str, ...] = ()

    @property
    def image_id(self) -> str:
        """What `docker images --no-trunc` shows once loaded: the config digest."""
        return self.config_digest


def normalize_path(name: str) -> str:
    """Member path without leading `./` or `/` and without trailing `/`: the form Docker writes."""
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/") or "."


def rfc3339(epoch: int) -> str:
    """`1970-01-01T00:00:00Z` form of an epoch second, as image configs write `created`."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_config(config: dict[str, Any], diff_ids: Iterable[str], epoch: int) -> dict[str, Any]:
    """The image config without build-time residue, pointing at the rewritten layers' `diff_ids`.

    Drops `container`, `container_config`, `docker_version`, the builder's `Hostname`/`Image`, empty
    values; sets `created` (image and history) to `epoch`.
    """
    result: dict[str, Any] = {
        k: v for k, v in config.items() if k in IMAGE_KEYS and v not in (None, "", [], {})
    }
    runtime = config.get("config") or {}
    result["config"] = {k: v for k, v in runtime.items() if k in CONFIG_KEYS and v not in (None, "", [], {})}
    created = rfc3339(epoch)
    result["created"] = created
    result["history"] = [
        {"created": created, **{k: v for k, v in entry.items() if k in HISTORY_KEYS and v not in (None, "")}}
        for entry in config.get("history") or []
    ]
    result["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    return result


def clamp_pyc_timestamp(data: bytes, epoch: int) -> bytes:
    """Clamp the source mtime a timestamp-based `.pyc` records, as the source's own mtime was clamped.

    Python accepts a `.pyc` whose header mtime equals its source's mtime; since canonicalizing clamps
    both the same way, the cache stays valid. Hash-based `.pyc` (PEP 552 flags != 0) are returned as is.
    """
    if len(data) < PYC_HEADER_SIZE or int.from_bytes(data[4:8], "little") != 0:
        return data
    recorded = int.from_bytes(data[8:12], "little")
    if recorded <= epoch:
        return data
    return data[:8] + (epoch & 0xFFFFFFFF).to_bytes(4, "little") + data[12:]


@dataclass
class _DigestWriter:
    """Passes bytes on to `sink` while hashing and counting them."""

    sink: Any
    hasher: Any = field(default_factory=hashlib.sha256)
    size: int = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        self.sink.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


@dataclass(frozen=True)
class _PlannedMember:
    """A member to write: its new header, and the source member whose data it carries (if any)."""

    info: tarfile.TarInfo
    data_from: tarfile.TarInfo | None

    @cached_property
    def header(self) -> bytes:
        """The member's header blocks (pax records first where needed), built once for sizing and writing."""
        return self.info.tobuf(tarfile.PAX_FORMAT, TAR_ENCODING, TAR_ERRORS)

    @property
    def padded_size(self) -> int:
        """Bytes of data blocks after the header: the data rounded up to whole tar blocks."""
        if self.data_from is None:
            return 0
        return -(-self.info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _canonical_info(source: tarfile.TarInfo, name: str, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.REGTYPE if source.issparse() or source.type == tarfile.AREGTYPE else source.type
    info.mode = source.mode
    info.uid, info.gid = source.uid, source.gid
    info.uname = info.gname = ""
    info.mtime = min(int(source.mtime), epoch)
    info.size = source.size if info.isreg() else 0
    info.linkname = normalize_path(source.linkname) if source.islnk() else source.linkname
    info.devmajor, info.devminor = source.devmajor, source.devminor
    info.pax_headers = {k: v for k, v in source.pax_headers.items() if k.startswith(XATTR_PAX_PREFIXES)}
    return info


def plan_layer(
    members: Iterable[tarfile.TarInfo], policy: CanonicalPolicy
) -> tuple[list[_PlannedMember], list[str]]:
    """Decide what a canonical layer holds, in order; returns (members to write, paths dropped as volatile).

    Pure: reads only headers. A later member with the same path replaces an earlier one, as tar extraction does.
    """
    latest: dict[str, tarfile.TarInfo] = {}
    for member in members:
        latest[normalize_path(member.name)] = member
    latest.pop(".", None)  # the layer root itself carries nothing Docker applies
    dropped = sorted(p for p, m in latest.items() if not m.isdir() and policy.is_volatile(p))
    kept = {p: m for p, m in latest.items() if p not in set(dropped)}

    # Hard links: group every name of one inode under the member that carries the data.
    def data_holder(path: str) -> str:
        seen = set()
        while path in latest and latest[path].islnk() and path not in seen:
            seen.add(path)
            path = normalize_path(latest[path].linkname)
        return path

    groups: dict[str, list[str]] = {}
    for path, member in kept.items():
        if member.islnk():
            target = data_holder(path)
            if target in latest and not latest[target].islnk():
                groups.setdefault(target, []).append(path)
    primary_of: dict[str, str] = {}
    for holder_path, links in groups.items():
        names = sorted(links + ([holder_path] if holder_path in kept else []))
        for name in names:
            primary_of[name] = names[0]

    planned = []
    for path in sorted(kept, key=lambda p: p.encode("utf-8", "surrogateescape")):
        member = kept[path]
        primary = primary_of.get(path)
        holder = member if primary is None or not member.islnk() else latest[data_holder(path)]
        info = _canonical_info(holder, path, policy.epoch)
        data_from: tarfile.TarInfo | None = holder if holder.isreg() else None
        if primary is not None and primary != path:
            info.type, info.linkname, info.size = tarfile.LNKTYPE, primary, 0
            data_from = None
        planned.append(_PlannedMember(info, data_from))
    return planned, dropped


def planned_tar_size(planned: Sequence[_PlannedMember]) -> int:
    """Bytes `canonicalize_layer` writes for `planned` uncompressed: known before any file is read.

    A streamed archive needs a layer's size in its tar header before the layer's first byte.
    """
    size = sum(len(item.header) + item.padded_size for item in planned) + _END_OF_ARCHIVE
    return -(-size // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def canonicalize_layer(layer: LayerReader, out: IO[bytes], policy: CanonicalPolicy) -> CanonicalLayer:
    """Write `layer` in canonical form to `out` (compressed per `policy`) and return its digests."""
    planned, dropped = plan_layer(layer.getmembers(), policy)
    return write_planned_layer(planned, dropped, layer, out, policy)


def write_planned_layer(
    planned: Sequence[_PlannedMember],
    dropped: Sequence[str],
    layer: LayerReader,
    out: IO[bytes],
    policy: CanonicalPolicy,
) -> CanonicalLayer:
    """Write what `plan_layer` decided, reading file data from `layer`, to `out`; return the layer's digests.

    The bytes are those of `tarfile` in PAX format writing the planned headers and data (and the unit tests
    hold the two to that), written in large pieces: a layer is gigabytes, and tarfile's stream mode would pass
    it on in 10 KB records through every wrapper below.
    """
    compressed = _DigestWriter(out)
    gzip_stream = None
    if policy.compression == "gzip":
        # filename="" and mtime=0 keep the gzip header free of the output path and the time.
        gzip_stream = gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=policy.gzip_level
        )
        uncompressed = _DigestWriter(gzip_stream)
    else:
        uncompressed = compressed  # one stream, so one hash: its diff_id is its digest
    written = 0
    for item in planned:
        uncompressed.write(item.header)
        written += len(item.header)
        if item.data_from is None:
            continue
        source = layer.extractfile(item.data_from)
        if source is None:
            raise StrataError(f"layer member {item.data_from.name!r}: data could not be read")
        with source:
            if policy.clamp_pyc_timestamps and item.info.name.endswith(".pyc"):
                data = clamp_pyc_timestamp(source.read(item.info.size), policy.epoch)
                _check_length(item, len(data))
                uncompressed.write(data)
            else:
                _copy_exactly(source, uncompressed, item)
        uncompressed.write(tarfile.NUL * (item.padded_size - item.info.size))
        written += item.padded_size
    written += _END_OF_ARCHIVE  # two zero blocks, then zeros to a whole record, as tarfile closes an archive
    uncompressed.write(tarfile.NUL * (_END_OF_ARCHIVE + -written % tarfile.RECORDSIZE))
    if gzip_stream is not None:
        gzip_stream.close()
    return CanonicalLayer(
        diff_id=uncompressed.digest,
        digest=compressed.digest,
        size=compressed.size,
        media_type=OCI_LAYER[policy.compression],
        dropped=tuple(dropped),
    )


_END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE
_COPY_CHUNK = 1 << 20


def _copy_exactly(source: IO[bytes], sink: _DigestWriter, item: _PlannedMember) -> None:
    """Copy the member's `info.size` bytes of data from `source` to `sink`; a short file is an error."""
    remaining = item.info.size
    while remaining:
        chunk = source.read(min(_COPY_CHUNK, remaining))
        if not chunk:
            break
        sink.write(chunk)
        remaining -= len(chunk)
    _check_length(item, item.info.size - remaining)


def _check_length(item: _PlannedMember, length: int) -> None:
    if length != item.info.size:
        raise StrataError(
            f"layer member {item.info.name!r}: {length} bytes of data, its header says {item.info.size}"
            " (the file changed while it was read?)"
        )


def canonical_prefix(source: Image, canonical_diff_ids: Sequence[str], policy: CanonicalPolicy) -> int:
    """How many leading layers of `source` are already canonical: those equal to `canonical_diff_ids`.

    Only uncompressed canonical layers qualify (their diff_id is their blob digest), and only a prefix: a
    child image built FROM a canonical parent starts with exactly the parent's layers.
    """
    if policy.compression != "none":
        return 0
    count = 0
    for ours, theirs in zip(source.diff_ids, canonical_diff_ids):
        if ours != theirs:
            break
        count += 1
    return count


def _canonical_layers(
    source: Image,
    policy: CanonicalPolicy,
    canonical_base: Sequence[str],
    write_layer: Callable[[int, LayerReader], CanonicalLayer],
) -> tuple[list[CanonicalLayer], list[str]]:
    """Every layer of `source` in canonical form: (layers, diff_ids left absent because the base has them).

    `write_layer(index, reader)` writes one rewritten layer wherever the caller keeps blobs.
    """
    layers: list[CanonicalLayer] = []
    absent: list[str] = []
    reused = canonical_prefix(source, canonical_base, policy)
    for index in range(len(source.layers)):
        if index < reused:
            size, compressed = source.stored_layer_size(index)
            if not compressed:
                diff_id = source.diff_ids[index]
                layers.append(CanonicalLayer(diff_id, diff_id, size, OCI_LAYER["none"]))
                absent.append(diff_id)
                continue
        with source.open_layer(index) as reader:
            layers.append(write_layer(index, reader))
    return layers, absent


def canonicalize_source(
    source: Image,
    layout: Path,
    policy: CanonicalPolicy,
    tag: str | None = None,
    canonical_base: Sequence[str] = (),
) -> CanonicalImage:
    """Write `source` as a canonical image into the OCI layout directory `layout` (replaced if it exists).

    `tag` (e.g. `strata/tf:2.15-gpu`) becomes the OCI `ref.name` and the `docker load` RepoTag.
    `canonical_base` lists the diff_ids of a canonical image `source` was built on (its parent) that the
    destination engine already has: those leading layers are neither read nor written (`absent`), since
    canonicalizing a canonical layer gives it back unchanged. The layout is then only good for `docker load`.
    """
    prepare_layout(layout)
    blobs = layout / "blobs" / "sha256"

    def write_layer(index: int, reader: LayerReader) -> CanonicalLayer:
        partial = blobs / f".layer-{index}.partial"
        with open(partial, "wb") as out:
            layer = canonicalize_layer(reader, out, policy)
        partial.replace(layout / blob_path(layer.digest))
        return layer

    layers, absent = _canonical_layers(source, policy, canonical_base, write_layer)
    config = canonical_config(source.config, [layer.diff_id for layer in layers], policy.epoch)
    config_digest, config_size = write_blob(layout, canonical_json(config))
    manifest = write_manifest(
        layout,
        BlobRef(OCI_CONFIG, config_digest, config_size),
        [BlobRef(layer.media_type, layer.digest, layer.size) for layer in layers],
    )
    # Docker 20.10 cannot load an OCI layout; the docker-archive manifest.json next to it lets `docker load` read it.
    write_index(layout, [IndexEntry(manifest, config_digest, tuple(layer.digest for layer in layers), tag)])
    return CanonicalImage(
        layout=layout,
        manifest_digest=manifest.digest,
        config_digest=config_digest,
        layers=tuple(layers),
        tag=tag,
        absent=tuple(absent),
    )


@dataclass(frozen=True)
class StreamedImage:
    """A canonical image written as a `docker load` stream: its ID, its layers, and those left to the engine."""

    config_digest: str
    layers: tuple[CanonicalLayer, ...]
    absent: tuple[str, ...] = ()


class _ArchiveWriter:
    """Writes tar entries to a stream one by one, each header before its data: nothing is kept on disk."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def header(self, name: str, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, 0
        self.out.write(info.tobuf(tarfile.PAX_FORMAT, TAR_ENCODING, TAR_ERRORS))

    def pad(self, size: int) -> None:
        self.out.write(tarfile.NUL * (-size % tarfile.BLOCKSIZE))

    def add(self, name: str, data: bytes) -> None:
        self.header(name, len(data))
        self.out.write(data)
        self.pad(len(data))

    def close(self) -> None:
        self.out.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))


def write_docker_archive(
    source: Image,
    out: IO[bytes],
    policy: CanonicalPolicy,
    tag: str | None = None,
    canonical_base: Sequence[str] = (),
) -> StreamedImage:
    """Write `source` canonicalized as a `docker load` archive to the stream `out`, with no layout on disk.

    Gives the same image (config digest) as `canonicalize_source` with the same arguments; `canonical_base` as
    there. Each layer's size is planned from its headers first, because the archive's header for the layer
    comes before the layer. Uncompressed layers only (`policy.compression == "none"`): an engine loads them.
    """
    if policy.compression != "none":
        raise StrataError("a docker load stream carries uncompressed layers: use compression 'none'")
    archive = _ArchiveWriter(out)
    written: dict[int, str] = {}  # layer index -> its path in the archive; the others stay in the engine

    def write_layer(index: int, reader: LayerReader) -> CanonicalLayer:
        planned, dropped = plan_layer(reader.getmembers(), policy)
        size = planned_tar_size(planned)
        written[index] = f"layers/{index}.tar"
        archive.header(written[index], size)
        layer = write_planned_layer(planned, dropped, reader, out, policy)
        if (
            layer.size != size
        ):  # the header already promised `size` bytes: a wrong archive, never a wrong image
            raise StrataError(f"{source.label}: layer {index} came out {layer.size} bytes, planned {size}")
        archive.pad(size)
        return layer

    layers, absent = _canonical_layers(source, policy, canonical_base, write_layer)
    config = canonical_json(
        canonical_config(source.config, [layer.diff_id for layer in layers], policy.epoch)
    )
    config_digest = sha256_digest(config)
    archive.add(blob_path(config_digest), config)
    paths = [written.get(index, blob_path(layer.digest)) for index, layer in enumerate(layers)]
    archive.add("manifest.json", canonical_json([docker_load_manifest(config_digest, paths, tag)]))
    archive.close()
    return StreamedImage(config_digest, tuple(layers), tuple(absent))


def canonicalize_archive(
    archive: Path, layout: Path, policy: CanonicalPolicy | None = None, tag: str | None = None
) -> CanonicalImage:
    """Canonicalize the image stored at `archive` (docker save tar, OCI archive or layout) into `layout`.

    Example: `canonicalize_archive(Path("saved.tar"), Path("out/cell"), CanonicalPolicy(epoch=1700000000))`.
    """
    return canonicalize_source(read_image(archive), layout, policy or CanonicalPolicy(), tag)

"""Read a local engine's image layers straight from its overlay2 storage, without `docker save`.

`docker save` makes the daemon re-tar every layer of an image, parents included, into a temporary directory
and then stream all of it: for a user layer of a few MB on a 2 GB TensorFlow image, that is 2 GB of work per
node. When the engine runs on this host with the overlay2 driver and native overlay diffs (Debian's docker.io
does), a layer's files are already on disk under `<DockerRootDir>/overlay2/<cache-id>/diff`, and its config
under `image/overlay2/imagedb`. `store_image` reads them the way the daemon's own differ would (whiteout
devices become `.wh.` files, opaque directories get `.wh..wh..opq`, only `security.capability` among the
xattrs) so the canonical image is the same as through `docker save`; the integration tests check that on
real images. Anything else (a remote or rootless engine, another driver, storage we cannot read) gets None
and the portable `docker save` path.

A push needs more: each layer's tar byte for byte, as its diff_id hashes it. The daemon keeps, per layer, a
tar-split file (`layerdb/sha256/<chain id>/tar-split.json.gz`: every header and padding byte of the original tar,
and the name and size of each file body); replaying it with the bodies read from the diff directory gives the
original tar back, which is exactly how the daemon itself answers `docker save`. `open_layer_tar` streams that;
whoever reads it checks the digest (a push does, while compressing).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from builder.errors import StrataError
from builder.oci.digest import sha256_digest
from builder.oci.image import Image, make_image

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
KEPT_XATTRS = ("security.capability",)  # what the daemon's tar writer records, and nothing else


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """Docker's layer chain IDs: the first is the first diff_id, each next one hashes `<previous> <diff_id>`.

    >>> chain_ids(["sha256:a"])
    ['sha256:a']
    """
    chain: list[str] = []
    for diff_id in diff_ids:
        if chain:
            diff_id = sha256_digest(f"{chain[-1]} {diff_id}".encode())
        chain.append(diff_id)
    return chain


TAR_SPLIT_FILE, TAR_SPLIT_SEGMENT = 1, 2  # tar-split entry types: a file body read from disk, raw tar bytes
BODY_CHUNK = 1 << 20


def tar_split_size(tar_split: IO[bytes]) -> int:
    """Length in bytes of the layer tar a gzipped tar-split stream reassembles (file bodies plus raw segments)."""
    total = 0
    with gzip.GzipFile(fileobj=tar_split) as entries:
        for line in entries:
            entry = json.loads(line)
            if entry.get("type") == TAR_SPLIT_FILE:
                total += int(entry.get("size") or 0)
            elif entry.get("type") == TAR_SPLIT_SEGMENT:
                total += len(base64.b64decode(entry.get("payload") or ""))
    return total


def tar_split_pieces(tar_split: IO[bytes], diff_dir: Path) -> Iterator[bytes]:
    """The layer tar a gzipped tar-split stream describes, in pieces: raw segments as recorded, file bodies read
    from `diff_dir` (at most 1 MB at a time). A body shorter than recorded is an error; one that changed shows
    as a digest that is not the layer's diff_id."""
    with gzip.GzipFile(fileobj=tar_split) as entries:
        for line in entries:
            entry = json.loads(line)
            if entry.get("type") == TAR_SPLIT_SEGMENT:
                yield base64.b64decode(entry.get("payload") or "")
                continue
            size = int(entry.get("size") or 0)
            if entry.get("type") != TAR_SPLIT_FILE or size == 0:
                continue
            name = entry.get("name")
            if name is None:  # a name that is not UTF-8 is recorded as raw bytes
                name = os.fsdecode(base64.b64decode(entry.get("name_raw") or ""))
            path = os.path.join(diff_dir, str(name).lstrip("/"))
            with open(path, "rb") as body:
                remaining = size
                while remaining:
                    chunk = body.read(min(BODY_CHUNK, remaining))
                    if not chunk:
                        raise StrataError(f"{path}: {size - remaining} bytes, its layer records {size}")
                    remaining -= len(chunk)
                    yield chunk


class _PieceStream(io.RawIOBase):
    """A readable binary stream over an iterator of byte pieces."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._piece = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._piece:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._piece = memoryview(piece)
        count = min(len(buffer), len(self._piece))
        buffer[:count] = self._piece[:count]
        self._piece = self._piece[count:]
        return count


def _xattr_pax(path: str) -> dict[str, str]:
    headers = {}
    for name in KEPT_XATTRS:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        headers["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return headers


@dataclass
class DiffDirLayer:
    """An overlay2 diff directory seen as the layer tar the daemon would write for it.

    Members are built from `lstat`; regular files' data is read from the directory when asked for, so a
    layer is never copied into a temporary tar before canonicalizing.
    """

    diff_dir: Path
    members: list[tarfile.TarInfo] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)  # member name -> file holding its data

    def __post_init__(self) -> None:
        first_name: dict[tuple[int, int], str] = {}
        for directory, subdirs, files in os.walk(self.diff_dir):
            subdirs.sort()
            for name in sorted(files) + subdirs:
                path = os.path.join(directory, name)
                for info in self._entries(path, os.path.relpath(path, self.diff_dir), first_name):
                    self.members.append(info)

    def _entries(
        self, path: str, relative: str, first_name: dict[tuple[int, int], str]
    ) -> list[tarfile.TarInfo]:
        st = os.lstat(path)
        info = tarfile.TarInfo(relative)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.mtime = int(st.st_mtime)
        info.pax_headers = _xattr_pax(path)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # an overlay whiteout
            info.name = os.path.join(os.path.dirname(relative), WHITEOUT_PREFIX + os.path.basename(relative))
            info.mode, info.type, info.pax_headers = 0o600, tarfile.REGTYPE, {}
        elif stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            if _is_opaque(path):
                marker = tarfile.TarInfo(os.path.join(relative, OPAQUE_MARKER))
                marker.mode, marker.uid, marker.gid, marker.mtime = info.mode & 0o777, info.uid, info.gid, 0
                return [info, marker]
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            inode = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and inode in first_name:
                info.type, info.linkname = tarfile.LNKTYPE, first_name[inode]
            else:
                first_name.setdefault(inode, relative)
                info.size = st.st_size
                self.paths[relative] = path
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        else:
            return []  # sockets: the daemon's tar writer skips them too
        return [info]

    def getmembers(self) -> list[tarfile.TarInfo]:
        return list(self.members)

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        return iter(self.members)

    def extractfile(self, member: tarfile.TarInfo) -> IO[bytes] | None:
        path = self.paths.get(member.name)
        if path is None:
            return (
                io.BytesIO(b"") if member.isreg() and member.size == 0 else None
            )  # whiteouts, opaque markers
        return open(path, "rb")  # noqa: SIM115 -- the caller closes it


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


@dataclass(frozen=True)
class StorageLayers:
    """An image's layers in an engine's overlay2 storage: `root` is the DockerRootDir, layer i is `chain_ids[i]`."""

    label: str
    root: Path
    chain_ids: tuple[str, ...]

    def _layer_dir(self, chain_id: str) -> Path:
        return self.root / "image" / "overlay2" / "layerdb" / "sha256" / chain_id.removeprefix("sha256:")

    def holds_every_layer(self) -> bool:
        return all(self._layer_dir(chain).is_dir() for chain in self.chain_ids)

    def diff_dir(self, index: int) -> Path:
        """Where layer `index`'s files live in the engine's storage."""
        cache_id = (self._layer_dir(self.chain_ids[index]) / "cache-id").read_text().strip()
        return self.root / "overlay2" / cache_id / "diff"

    def stored_layer_size(self, index: int) -> tuple[int, bool]:
        with open(self._layer_dir(self.chain_ids[index]) / "tar-split.json.gz", "rb") as split:
            return tar_split_size(split), False

    @contextlib.contextmanager
    def open_layer(self, index: int) -> Iterator[DiffDirLayer]:
        try:
            layer = DiffDirLayer(self.diff_dir(index))
        except OSError as exc:
            raise StrataError(
                f"{self.label}: layer {index} could not be read from the engine ({exc})"
            ) from None
        yield layer

    @contextlib.contextmanager
    def open_layer_tar(self, index: int) -> Iterator[IO[bytes]]:
        def failed(exc: OSError) -> StrataError:
            return StrataError(f"{self.label}: layer {index} could not be read from the engine ({exc})")

        def pieces(split: IO[bytes]) -> Iterator[bytes]:
            try:
                yield from tar_split_pieces(split, self.diff_dir(index))
            except OSError as exc:
                raise failed(exc) from None

        try:
            split = open(self._layer_dir(self.chain_ids[index]) / "tar-split.json.gz", "rb")  # noqa: SIM115
        except OSError as exc:
            raise failed(exc) from None
        with split:
            yield cast(IO[bytes], io.BufferedReader(_PieceStream(pieces(split)), BODY_CHUNK))


def store_image(client: Any, ref: str, layer_read: str = "") -> Image | None:
    """The engine's image `ref` read from its local overlay2 storage, or None where that is not possible.

    `layer_read` "save" (settings.layer_read, from STRATA_LAYER_READ) always takes the portable path.
    """
    if layer_read == "save":
        return None
    try:
        info = client.info()
        image_id = client.images.get(ref).id
    except Exception:  # noqa: BLE001 -- any doubt means the portable path
        return None
    status = dict(info.get("DriverStatus") or [])
    if info.get("Driver") != "overlay2" or status.get("Native Overlay Diff") != "true":
        return None
    root = Path(info.get("DockerRootDir") or "/var/lib/docker")
    config_file = (
        root / "image" / "overlay2" / "imagedb" / "content" / "sha256" / image_id.removeprefix("sha256:")
    )
    try:
        config_bytes = config_file.read_bytes()
    except OSError:
        return None  # a remote or rootless engine, or storage this user cannot read
    if sha256_digest(config_bytes) != image_id:
        return None  # not this engine's storage after all
    diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids") or []
    layers = StorageLayers(ref, root, tuple(chain_ids(diff_ids)))
    if not layers.holds_every_layer():
        return None
    return make_image(ref, config_bytes, layers, len(diff_ids))

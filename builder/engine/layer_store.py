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
from typing import IO, Any

from builder.errors import StrataError
from builder.oci.digest import sha256_digest

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


def tar_split_size(tar_split: IO[bytes]) -> int:
    """Length in bytes of the layer tar a gzipped tar-split stream reassembles (file bodies plus raw segments)."""
    total = 0
    with gzip.GzipFile(fileobj=tar_split) as entries:
        for line in entries:
            entry = json.loads(line)
            if entry.get("type") == 1:
                total += int(entry.get("size") or 0)
            elif entry.get("type") == 2:
                total += len(base64.b64decode(entry.get("payload") or ""))
    return total


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
class StoreImage:
    """An engine image read from its overlay2 storage: `root` is the DockerRootDir, `layer_refs` chain IDs.

    It offers what canonicalizing needs (`builder.oci.archive.LayeredImage`), like an `ImageSource` does.
    """

    label: str
    root: Path
    config_bytes: bytes
    layer_refs: tuple[str, ...]

    @property
    def config(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.config_bytes)
        return parsed

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return tuple(self.config.get("rootfs", {}).get("diff_ids", []))

    def _layer_dir(self, chain_id: str) -> Path:
        return self.root / "image" / "overlay2" / "layerdb" / "sha256" / chain_id.removeprefix("sha256:")

    def diff_dir(self, index: int) -> Path:
        """Where layer `index`'s files live in the engine's storage."""
        cache_id = (self._layer_dir(self.layer_refs[index]) / "cache-id").read_text().strip()
        return self.root / "overlay2" / cache_id / "diff"

    def stored_layer_size(self, index: int) -> tuple[int, bool]:
        with open(self._layer_dir(self.layer_refs[index]) / "tar-split.json.gz", "rb") as split:
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


def store_image(client: Any, ref: str, layer_read: str = "") -> StoreImage | None:
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
    image = StoreImage(
        label=ref,
        root=root,
        config_bytes=config_bytes,
        layer_refs=tuple(chain_ids(diff_ids)),
    )
    if not all(image._layer_dir(chain).is_dir() for chain in image.layer_refs):
        return None
    return image

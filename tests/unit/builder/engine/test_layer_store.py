"""The pure parts of reading an engine's overlay2 storage, and the diff-directory tar writer on a real tree."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.engine.layer_store import (
    DiffDirLayer,
    StorageLayers,
    chain_ids,
    tar_split_pieces,
    tar_split_size,
)
from builder.errors import StrataError

BASE_LAYER = "sha256:76cde0599a9d97abdf8d1f108963bf179335be6995f981be3107149e25903066"
SECOND_LAYER = "sha256:fa2d3f4aa7cd49f75cfe753fccfdfbb0f25d1e7e9efd36946de79c07fdc1bc3f"


def test_chain_ids_match_what_docker_stored_for_the_hermetic_bookworm_base() -> None:
    # Read off /var/lib/docker/image/overlay2/layerdb on an engine holding base-bookworm.
    assert chain_ids([BASE_LAYER, SECOND_LAYER]) == [
        BASE_LAYER,
        "sha256:606b1e49f1ba28729b34bcd358f92447951c4b8cdb8bd5b328b288044d9c5dd9",
    ]
    assert chain_ids([]) == []


def test_tar_split_size_is_file_bodies_plus_raw_segments() -> None:
    lines = [
        {"type": 2, "payload": base64.b64encode(b"h" * 512).decode(), "position": 0},
        {"type": 1, "name": "a", "size": 5, "payload": "AAAAAAAAAAA=", "position": 1},
        {"type": 2, "payload": base64.b64encode(b"\0" * 507).decode(), "position": 2},
        {"type": 1, "name": "dir/", "size": 0, "position": 3},
        {"type": 2, "payload": base64.b64encode(b"\0" * 1024).decode(), "position": 4},
    ]
    packed = gzip.compress("".join(json.dumps(line) + "\n" for line in lines).encode())
    assert tar_split_size(io.BytesIO(packed)) == 512 + 5 + 507 + 1024


def split_tar(data: bytes) -> tuple[bytes, dict[str, bytes]]:
    """The gzipped tar-split a daemon would record for the tar `data`, and the file bodies it leaves out.

    Every byte that is not a regular file's body (headers, padding, the end of the archive) is a raw segment;
    each member is a file entry naming its body's size (0 for anything but a regular file with data).
    """
    lines: list[dict[str, object]] = []
    bodies: dict[str, bytes] = {}
    position = 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            lines.append(
                {"type": 2, "payload": base64.b64encode(data[position : member.offset_data]).decode()}
            )
            size = member.size if member.isreg() else 0
            lines.append({"type": 1, "name": member.name, "size": size, "payload": None})
            bodies[member.name] = data[member.offset_data : member.offset_data + size]
            position = member.offset_data + size
    lines.append({"type": 2, "payload": base64.b64encode(data[position:]).decode()})
    for index, line in enumerate(lines):
        line["position"] = index
    return gzip.compress("".join(json.dumps(line) + "\n" for line in lines).encode()), bodies


def layer_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, body in (("etc", None), ("etc/big", os.urandom(3 << 20)), ("etc/small", b"x" * 700)):
            info = tarfile.TarInfo(name)
            if body is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
        link = tarfile.TarInfo("etc/alias")
        link.type, link.linkname = tarfile.LNKTYPE, "etc/small"
        tar.addfile(link)
        long_name = tarfile.TarInfo("opt/" + "d" * 120 + "/f")  # a pax record in the header segment
        long_name.size = 3
        tar.addfile(long_name, io.BytesIO(b"abc"))
    return buffer.getvalue()


def test_replaying_a_tar_split_gives_the_layer_tar_back_byte_for_byte(tmp_path: Path) -> None:
    data = layer_tar()
    packed, bodies = split_tar(data)
    diff = tmp_path / "diff"
    for name, body in bodies.items():
        if body:
            (diff / name).parent.mkdir(parents=True, exist_ok=True)
            (diff / name).write_bytes(body)

    assert b"".join(tar_split_pieces(io.BytesIO(packed), diff)) == data
    assert tar_split_size(io.BytesIO(packed)) == len(data)


def test_the_engine_storage_streams_a_layer_as_its_tar(tmp_path: Path) -> None:
    """StorageLayers over a hand-made overlay2 root: a layerdb entry (cache-id, tar-split) and its diff dir."""
    data = layer_tar()
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    packed, bodies = split_tar(data)
    layer_dir = tmp_path / "image" / "overlay2" / "layerdb" / "sha256" / diff_id.removeprefix("sha256:")
    layer_dir.mkdir(parents=True)
    (layer_dir / "cache-id").write_text("abc123")
    (layer_dir / "tar-split.json.gz").write_bytes(packed)
    diff = tmp_path / "overlay2" / "abc123" / "diff"
    for name, body in bodies.items():
        if body:
            (diff / name).parent.mkdir(parents=True, exist_ok=True)
            (diff / name).write_bytes(body)
    storage = StorageLayers("img", tmp_path, (diff_id,))

    with storage.open_layer_tar(0) as stream:
        pieces = []
        while chunk := stream.read(100_000):  # reads that cut through headers and bodies alike
            pieces.append(chunk)
    assert b"".join(pieces) == data
    assert storage.stored_layer_size(0) == (len(data), False)

    (diff / "etc" / "small").write_bytes(b"x" * 10)  # a body shorter than the layer recorded
    with pytest.raises(StrataError, match="etc/small: 10 bytes, its layer records 700"):
        with storage.open_layer_tar(0) as stream:
            stream.read()
    (diff / "etc" / "small").unlink()
    with pytest.raises(StrataError, match="img: layer 0 could not be read from the engine"):
        with storage.open_layer_tar(0) as stream:
            stream.read()


def test_diff_dir_tar_converts_overlay_whiteouts_and_opaque_dirs(
    tmp_path: Path, require: Callable[[bool, str], None]
) -> None:
    require(os.geteuid() == 0, "whiteout devices and trusted.* xattrs need root, as the engine does")
    diff = tmp_path / "diff"
    (diff / "opaque").mkdir(parents=True)
    os.setxattr(diff / "opaque", "trusted.overlay.opaque", b"y")
    (diff / "opaque" / "new").write_text("n")
    os.mknod(diff / "deleted", 0o600 | 0o020000, os.makedev(0, 0))
    (diff / "data").write_text("d")
    os.link(diff / "data", diff / "alias")
    (diff / "link").symlink_to("data")
    members = {m.name: m for m in DiffDirLayer(diff).getmembers()}
    assert set(members) == {
        "opaque",
        "opaque/.wh..wh..opq",
        "opaque/new",
        ".wh.deleted",
        "data",
        "alias",
        "link",
    }
    assert members[".wh.deleted"].isreg() and members[".wh.deleted"].mode == 0o600
    assert not any("overlay" in key for m in members.values() for key in m.pax_headers)
    linked = [m for m in (members["alias"], members["data"]) if m.islnk()]
    assert len(linked) == 1 and linked[0].linkname in {"alias", "data"}
    assert members["link"].issym() and members["link"].linkname == "data"

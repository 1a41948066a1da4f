"""The pure parts of reading an engine's overlay2 storage, and the diff-directory tar writer on a real tree."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
from pathlib import Path

import pytest

from builder.engine.layer_store import DiffDirLayer, chain_ids, tar_split_size

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


@pytest.mark.skipif(
    os.geteuid() != 0, reason="whiteout devices and trusted.* xattrs need root, as the engine does"
)
def test_diff_dir_tar_converts_overlay_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
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

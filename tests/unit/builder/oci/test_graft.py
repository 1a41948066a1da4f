"""Grafting a tree on disk into the stand-in layer that holds its empty directory gives the real build's image."""

from __future__ import annotations

import os
import tarfile
from functools import partial
from pathlib import Path

import pytest

from builder.engine.layer_store import DiffDirLayer
from builder.errors import StrataError
from builder.oci.archive import read_image
from builder.oci.canonical import CanonicalPolicy, canonicalize_source
from builder.oci.graft import Graft, GraftedLayer, graft_image, graft_target

EPOCH = 1_700_000_000


def _tree(root: Path) -> Path:
    """An installed tree: a package with a module, an executable script, a nested empty directory."""
    (root / "lib" / "pkg").mkdir(parents=True)
    (root / "lib" / "pkg" / "__init__.py").write_bytes(b"VALUE = 1\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/opt/venv/bin/python\nprint('x')\n")
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "share" / "empty").mkdir(parents=True)
    (root / "lib" / "pkg" / "link").symlink_to("__init__.py")
    return root


def _parent(member):
    return [member("etc/", kind=b"5", mode=0o755), member("etc/os-release", b"ID=debian\n")]


def _parents(member):
    return [member("opt/", kind=b"5", mode=0o755), member("opt/strata/", kind=b"5", mode=0o755)]


def test_a_grafted_stand_in_canonicalizes_to_the_image_whose_layer_holds_the_tree(
    docker_archive, member, tmp_path
):
    tree = _tree(tmp_path / "upper" / "opt" / "strata" / "x")
    real_members = [member("opt/strata/x/", kind=b"5", mode=0o755)]
    for path in sorted(tree.rglob("*")):
        name = "opt/strata/x/" + path.relative_to(tree).as_posix()
        if path.is_symlink():
            real_members.append(member(name, kind=b"2", mode=0o777, linkname=os.readlink(path)))
        elif path.is_dir():
            real_members.append(member(name + "/", kind=b"5", mode=0o755))
        else:
            real_members.append(member(name, path.read_bytes(), mode=path.stat().st_mode & 0o7777))
    pth = [member("opt/", kind=b"5", mode=0o755), member("opt/x.pth", b"/opt/strata/x/lib\n")]
    real = docker_archive(_parent(member), _parents(member) + real_members, pth)
    stand_in = docker_archive(
        _parent(member), _parents(member) + [member("opt/strata/x/", kind=b"5", mode=0o755)], pth
    )

    grafted = graft_image(
        read_image(stand_in), [Graft("/opt/strata/x", partial(DiffDirLayer, tree))], first_index=1
    )
    policy = CanonicalPolicy(epoch=EPOCH, compression="none")
    want = canonicalize_source(read_image(real), tmp_path / "real", policy)
    got = canonicalize_source(grafted, tmp_path / "grafted", policy)

    assert read_image(stand_in).config_digest != read_image(real).config_digest
    assert got.config_digest == want.config_digest
    assert [layer.diff_id for layer in got.layers] == [layer.diff_id for layer in want.layers]


def _info(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


def test_only_a_layer_holding_the_path_as_an_empty_directory_is_a_graft_target():
    graft = Graft("/opt/strata/x", lambda: DiffDirLayer(Path("/nonexistent")))
    assert graft_target([_info("opt/strata/x/", tarfile.DIRTYPE)], graft)
    assert graft_target([_info("./opt/strata/x", tarfile.DIRTYPE), _info("opt/strata/xy")], graft)
    assert not graft_target([_info("opt/strata/x/", tarfile.DIRTYPE), _info("opt/strata/x/a")], graft)
    assert not graft_target([_info("opt/strata/x")], graft)
    assert not graft_target([_info("opt/strata/xy/", tarfile.DIRTYPE)], graft)


def test_a_stand_in_without_the_empty_directory_is_an_error_naming_the_path(docker_archive, member, tmp_path):
    stand_in = docker_archive(_parent(member), _parents(member))
    graft = Graft("/opt/strata/x", partial(DiffDirLayer, _tree(tmp_path / "x")))
    with pytest.raises(StrataError, match="no layer holds the empty directory /opt/strata/x"):
        graft_image(read_image(stand_in), [graft])


def test_hard_links_of_the_tree_are_renamed_with_it(tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a").write_bytes(b"data")
    os.link(tree / "a", tree / "b")

    class Empty:
        def getmembers(self):
            return []

        def __iter__(self):
            return iter([])

        def extractfile(self, member):
            return None

    layer = GraftedLayer(Empty(), [("opt/t", DiffDirLayer(tree))])
    by_name = {m.name: m for m in layer.getmembers()}
    assert set(by_name) == {"opt/t/a", "opt/t/b"}
    link = by_name["opt/t/b"] if by_name["opt/t/b"].islnk() else by_name["opt/t/a"]
    assert link.linkname in {"opt/t/a", "opt/t/b"} and link.linkname != link.name
    data_member = by_name["opt/t/a"] if link is by_name["opt/t/b"] else by_name["opt/t/b"]
    stream = layer.extractfile(data_member)
    assert stream is not None and stream.read() == b"data"

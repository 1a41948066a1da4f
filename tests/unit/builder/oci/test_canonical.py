"""Canonicalizing: builds that differ only in time, order and residue give the same bytes."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import json
import py_compile
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import StrataError
from builder.oci.archive import blob_path, read_image
from builder.oci.canonical import (
    CanonicalPolicy,
    canonical_config,
    canonical_prefix,
    canonicalize_archive,
    canonicalize_source,
    clamp_pyc_timestamp,
    plan_layer,
    planned_tar_size,
    write_docker_archive,
    write_planned_layer,
)
from builder.oci.layout_store import pack_layout

EPOCH = 1_600_000_000


def tree(m, mtime: int, uname: str = "root") -> list:
    """A small filesystem with a dir, files, a symlink and a capability xattr, stamped with `mtime`."""
    return [
        m("usr", kind=tarfile.DIRTYPE, mode=0o755, mtime=mtime, uname=uname),
        m("usr/bin", kind=tarfile.DIRTYPE, mode=0o755, mtime=mtime, uname=uname),
        m(
            "usr/bin/tool",
            b"#!/bin/sh\necho tool\n",
            mode=0o755,
            mtime=mtime,
            uname=uname,
            pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02", "atime": str(mtime + 5)},
        ),
        m("usr/bin/alias", kind=tarfile.SYMTYPE, linkname="tool", mtime=mtime, uname=uname),
        m("etc", kind=tarfile.DIRTYPE, mode=0o755, mtime=mtime, uname=uname),
        m("etc/app.conf", b"threads = 4\n", mtime=mtime, uname=uname),
    ]


def layer_members(layout: Path, index: int = 0) -> list[tarfile.TarInfo]:
    with read_image(layout).open_layer(index) as tar:
        return tar.getmembers()


def all_bytes(layout: Path) -> dict[str, bytes]:
    return {
        p.relative_to(layout).as_posix(): p.read_bytes() for p in sorted(layout.rglob("*")) if p.is_file()
    }


def test_builds_differing_in_time_order_owner_names_and_residue_become_byte_identical(
    docker_archive, member, tmp_path
):
    early = docker_archive(tree(member, 1_700_000_000))
    late_members = list(reversed(tree(member, 1_800_000_000, uname="builder")))
    late = docker_archive(late_members, created="2027-01-01T00:00:00Z", container="fedcba9876543210")

    one = canonicalize_archive(early, tmp_path / "one", CanonicalPolicy(epoch=EPOCH), tag="strata/t:1")
    two = canonicalize_archive(late, tmp_path / "two", CanonicalPolicy(epoch=EPOCH), tag="strata/t:1")

    assert read_image(early).config_digest != read_image(late).config_digest
    assert one.manifest_digest == two.manifest_digest
    assert one.config_digest == two.config_digest
    assert all_bytes(tmp_path / "one") == all_bytes(tmp_path / "two")


def test_canonicalizing_is_idempotent_and_repeatable(docker_archive, member, tmp_path):
    saved = docker_archive(tree(member, 1_800_000_000))
    first = canonicalize_archive(saved, tmp_path / "first", CanonicalPolicy(epoch=EPOCH))
    again = canonicalize_archive(saved, tmp_path / "first", CanonicalPolicy(epoch=EPOCH))
    of_canonical = canonicalize_archive(tmp_path / "first", tmp_path / "second", CanonicalPolicy(epoch=EPOCH))
    assert first == again
    assert of_canonical.manifest_digest == first.manifest_digest


def test_members_are_sorted_and_times_clamped_but_older_times_kept(docker_archive, member, tmp_path):
    old = EPOCH - 86_400
    saved = docker_archive(
        [
            member("z-new", b"new", mtime=EPOCH + 999),
            member("a-old", b"old", mtime=old),
            member("./m-dotted", b"dot", mtime=EPOCH),
        ]
    )
    canonicalize_archive(saved, tmp_path / "out", CanonicalPolicy(epoch=EPOCH))
    members = layer_members(tmp_path / "out")
    assert [m.name for m in members] == ["a-old", "m-dotted", "z-new"]
    assert [m.mtime for m in members] == [old, EPOCH, EPOCH]
    assert {(m.uname, m.gname) for m in members} == {("", "")}


def test_xattrs_survive_and_access_times_do_not(docker_archive, member, tmp_path):
    canonicalize_archive(
        docker_archive(tree(member, 1_800_000_000)), tmp_path / "out", CanonicalPolicy(epoch=EPOCH)
    )
    tool = next(m for m in layer_members(tmp_path / "out") if m.name == "usr/bin/tool")
    assert tool.pax_headers.get("SCHILY.xattr.security.capability") == "\x01\x00\x00\x02"
    assert "atime" not in tool.pax_headers
    assert tool.mode == 0o755


def test_volatile_files_are_dropped_but_their_directories_and_whiteouts_stay(
    docker_archive, member, tmp_path
):
    saved = docker_archive(
        [
            member("var", kind=tarfile.DIRTYPE),
            member("var/log", kind=tarfile.DIRTYPE),
            member("var/log/dpkg.log", b"2026-11-23 17:00:01 install foo\n"),
            member("var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease", b"Date: today\n"),
            member("var/lib/apt/lists/.wh.stale_Packages"),
            member("usr/keep.txt", b"keep"),
        ]
    )
    image = canonicalize_archive(saved, tmp_path / "out", CanonicalPolicy(epoch=EPOCH))
    names = [m.name for m in layer_members(tmp_path / "out")]
    assert names == ["usr/keep.txt", "var", "var/lib/apt/lists/.wh.stale_Packages", "var/log"]
    assert image.layers[0].dropped == (
        "var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease",
        "var/log/dpkg.log",
    )


def test_hard_link_groups_point_at_their_first_path_whichever_name_held_the_data(
    docker_archive, member, tmp_path
):
    walk_one = [member("lib/b.so", b"ELF"), member("lib/a.so", kind=tarfile.LNKTYPE, linkname="lib/b.so")]
    walk_two = [member("lib/a.so", b"ELF"), member("lib/b.so", kind=tarfile.LNKTYPE, linkname="lib/a.so")]
    one = canonicalize_archive(docker_archive(walk_one), tmp_path / "one", CanonicalPolicy(epoch=EPOCH))
    two = canonicalize_archive(docker_archive(walk_two), tmp_path / "two", CanonicalPolicy(epoch=EPOCH))
    assert one.config_digest == two.config_digest

    members = layer_members(tmp_path / "one")
    assert [(m.name, m.isreg(), m.linkname) for m in members] == [
        ("lib/a.so", True, ""),
        ("lib/b.so", False, "lib/a.so"),
    ]
    with read_image(tmp_path / "one").open_layer(0) as tar:
        tar.extractall(tmp_path / "root", filter="tar")
    assert (tmp_path / "root/lib/b.so").read_bytes() == b"ELF"
    assert (tmp_path / "root/lib/a.so").stat().st_ino == (tmp_path / "root/lib/b.so").stat().st_ino


def test_dropping_the_data_holder_of_a_hard_link_moves_the_data_to_the_next_name(
    docker_archive, member, tmp_path
):
    saved = docker_archive(
        [member("tmp/x", b"data"), member("opt/x", kind=tarfile.LNKTYPE, linkname="tmp/x")]
    )
    canonicalize_archive(saved, tmp_path / "out", CanonicalPolicy(epoch=EPOCH))
    with read_image(tmp_path / "out").open_layer(0) as tar:
        (only,) = tar.getmembers()
        assert only.name == "opt/x" and only.isreg()
        assert tar.extractfile(only).read() == b"data"  # type: ignore[union-attr]


def test_clamped_pyc_is_still_trusted_by_python(docker_archive, member, tmp_path):
    # The cache says 'pyc', the source says 'src': importing gives 'pyc' only if Python accepts the cache.
    source_dir = tmp_path / "build"
    source_dir.mkdir()
    module = source_dir / "probe_mod.py"
    module.write_text("VALUE = 'pyc'\n")
    pyc = Path(py_compile.compile(str(module), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP))
    built_at = int(module.stat().st_mtime)
    assert built_at > EPOCH
    saved = docker_archive(
        [
            member("app", kind=tarfile.DIRTYPE, mtime=built_at),
            member("app/probe_mod.py", b"VALUE = 'src'\n", mtime=built_at),
            member(f"app/__pycache__/{pyc.name}", pyc.read_bytes(), mtime=built_at),
        ]
    )
    canonicalize_archive(saved, tmp_path / "out", CanonicalPolicy(epoch=EPOCH))
    with read_image(tmp_path / "out").open_layer(0) as tar:
        tar.extractall(tmp_path / "root", filter="tar")

    sys.path.insert(0, str(tmp_path / "root/app"))
    sys.dont_write_bytecode, saved_flag = True, sys.dont_write_bytecode
    try:
        sys.modules.pop("probe_mod", None)
        assert importlib.import_module("probe_mod").VALUE == "pyc"
    finally:
        sys.path.remove(str(tmp_path / "root/app"))
        sys.modules.pop("probe_mod", None)
        sys.dont_write_bytecode = saved_flag


def test_pyc_clamping_leaves_hash_based_and_old_pycs_alone():
    hash_based = b"MAGC" + (1).to_bytes(4, "little") + b"\xff" * 8 + b"code"
    old = b"MAGC" + bytes(4) + (EPOCH - 1).to_bytes(4, "little") + bytes(4) + b"code"
    new = b"MAGC" + bytes(4) + (EPOCH + 1).to_bytes(4, "little") + bytes(4) + b"code"
    assert clamp_pyc_timestamp(hash_based, EPOCH) == hash_based
    assert clamp_pyc_timestamp(old, EPOCH) == old
    assert clamp_pyc_timestamp(new, EPOCH)[8:12] == EPOCH.to_bytes(4, "little")


def test_config_keeps_what_a_container_sees_and_drops_build_residue():
    raw = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-11-23T17:00:00.5Z",
        "container": "abc",
        "docker_version": "20.10",
        "config": {
            "Hostname": "abc",
            "Image": "sha256:1",
            "Env": ["A=1"],
            "Cmd": ["python"],
            "Labels": None,
            "User": "1000",
            "AttachStdin": False,
        },
        "container_config": {"Hostname": "abc"},
        "history": [{"created": "2026-11-23T17:00:00Z", "created_by": "RUN x", "empty_layer": True}],
        "rootfs": {"type": "layers", "diff_ids": ["sha256:old"]},
    }
    assert canonical_config(raw, ["sha256:new"], 0) == {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["A=1"], "Cmd": ["python"], "User": "1000"},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "RUN x", "empty_layer": True}],
        "rootfs": {"type": "layers", "diff_ids": ["sha256:new"]},
    }


def test_layout_is_valid_oci_and_docker_loadable_with_consistent_digests(docker_archive, member, tmp_path):
    image = canonicalize_archive(
        docker_archive(tree(member, 1)), tmp_path / "out", CanonicalPolicy(), tag="s/t:1"
    )
    layout = tmp_path / "out"
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.manifest_digest
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "s/t:1"}
    manifest = json.loads((layout / blob_path(image.manifest_digest)).read_text())
    assert manifest["config"]["digest"] == image.config_digest
    docker_manifest = json.loads((layout / "manifest.json").read_text())
    assert docker_manifest == [
        {
            "Config": blob_path(image.config_digest),
            "RepoTags": ["s/t:1"],
            "Layers": [blob_path(image.layers[0].digest)],
        }
    ]
    # Every blob's name is its digest, and the config lists the uncompressed layer digests.
    for blob in (layout / "blobs/sha256").iterdir():
        assert blob_path(f"sha256:{hashlib.sha256(blob.read_bytes()).hexdigest()}").endswith(blob.name)
    assert read_image(layout).diff_ids == (image.layers[0].diff_id,)
    # Read back through the OCI index alone, and through a packed archive: the same image.
    (layout / "manifest.json").unlink()
    assert read_image(layout, tag="s/t:1").config_digest == image.config_digest
    with open(tmp_path / "packed.tar", "wb") as out:
        pack_layout(layout, out)
    assert read_image(tmp_path / "packed.tar").config_digest == image.config_digest


def test_uncompressed_layers_share_the_config_digest_of_gzip_ones(docker_archive, member, tmp_path):
    saved = docker_archive(tree(member, 1))
    gz = canonicalize_archive(saved, tmp_path / "gz", CanonicalPolicy())
    plain = canonicalize_archive(saved, tmp_path / "plain", CanonicalPolicy(compression="none"))
    assert gz.config_digest == plain.config_digest
    assert gz.manifest_digest != plain.manifest_digest
    assert plain.layers[0].digest == plain.layers[0].diff_id


def test_bad_inputs_are_one_line_errors_naming_the_file(tmp_path, docker_archive, member):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(StrataError, match="junk.tar"):
        canonicalize_archive(junk, tmp_path / "out")
    with pytest.raises(StrataError, match="no such image"):
        canonicalize_archive(tmp_path / "missing.tar", tmp_path / "out")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(StrataError, match="not an OCI layout"):
        canonicalize_archive(docker_archive(tree(member, 1)), occupied)
    assert (occupied / "notes.txt").read_text() == "mine"
    with pytest.raises(StrataError, match="negative"):
        CanonicalPolicy(epoch=-1)


def test_zstd_layers_are_refused_by_name(tmp_path):
    layout = tmp_path / "zstd"
    (layout / "blobs/sha256").mkdir(parents=True)
    (layout / "blobs/sha256/aa").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(64))
    (layout / "blobs/sha256/cc").write_bytes(json.dumps({"rootfs": {"diff_ids": ["sha256:x"]}}).encode())
    (layout / "manifest.json").write_text(
        json.dumps([{"Config": "blobs/sha256/cc", "Layers": ["blobs/sha256/aa"]}])
    )
    with pytest.raises(StrataError, match="zstd"):
        canonicalize_archive(layout, tmp_path / "out")


names = st.lists(st.text(alphabet="abc/", min_size=1, max_size=6), min_size=1, max_size=8, unique=True)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=names, seed=st.randoms(), mtimes=st.lists(st.integers(0, 2_000_000_000), min_size=8, max_size=8))
def test_member_order_and_times_never_change_the_plan(paths, seed, mtimes, member):
    clean = sorted({p.strip("/") for p in paths if p.strip("/") and "//" not in p})
    members = [member(p, p.encode(), mtime=mtimes[i % 8]) for i, p in enumerate(clean)]

    shuffled = list(members)
    seed.shuffle(shuffled)

    def plan(ms):
        infos = []
        for m in ms:
            info = tarfile.TarInfo(m.name)
            info.size, info.mtime = len(m.data), m.mtime
            infos.append(info)
        planned, _ = plan_layer(infos, CanonicalPolicy(epoch=EPOCH))
        return [(p.info.name, p.info.mtime, p.info.size) for p in planned]

    assert plan(members) == plan(shuffled)
    assert [name for name, _, _ in plan(shuffled)] == sorted(n for n, _, _ in plan(shuffled))
    assert all(mtime <= EPOCH for _, mtime, _ in plan(members))


def test_layers_of_a_canonical_parent_are_reused_without_being_rewritten(docker_archive, member, tmp_path):
    policy = CanonicalPolicy(epoch=EPOCH, compression="none")
    saved = docker_archive(tree(member, 1_800_000_000), [member("app/run.sh", b"echo run\n", mode=0o755)])
    full = canonicalize_archive(saved, tmp_path / "full", policy, tag="s/t:1")
    parent_diff_ids = [full.layers[0].diff_id]

    partial = canonicalize_source(
        read_image(tmp_path / "full"), tmp_path / "partial", policy, "s/t:1", parent_diff_ids
    )

    assert (partial.config_digest, partial.manifest_digest, partial.layers) == (
        full.config_digest,
        full.manifest_digest,
        full.layers,
    )
    assert partial.absent == (full.layers[0].digest,)
    assert not (tmp_path / "partial" / blob_path(full.layers[0].digest)).exists()
    assert (tmp_path / "partial" / blob_path(full.layers[1].digest)).read_bytes() == (
        tmp_path / "full" / blob_path(full.layers[1].digest)
    ).read_bytes()
    assert json.loads((tmp_path / "partial" / "manifest.json").read_text()) == json.loads(
        (tmp_path / "full" / "manifest.json").read_text()
    )


def test_only_a_matching_uncompressed_prefix_counts_as_canonical(docker_archive, member, tmp_path):
    saved = docker_archive(tree(member, 1), [member("app/x", b"x")])
    source = read_image(saved)
    plain = CanonicalPolicy(compression="none")
    assert canonical_prefix(source, source.diff_ids, plain) == 2
    assert canonical_prefix(source, [source.diff_ids[0], "sha256:" + "0" * 64], plain) == 1
    assert canonical_prefix(source, ["sha256:" + "0" * 64, source.diff_ids[1]], plain) == 0
    assert canonical_prefix(source, [*source.diff_ids, "sha256:" + "1" * 64], plain) == 2
    assert canonical_prefix(source, source.diff_ids, CanonicalPolicy(compression="gzip")) == 0
    # A parent that is not canonical is rewritten in full: nothing is left out of the layout.
    image = canonicalize_source(source, tmp_path / "out", plain, canonical_base=["sha256:" + "0" * 64])
    assert image.absent == ()


def odd_tree(m) -> list:
    """Members whose headers need pax records or whose data needs padding: what a size plan can get wrong."""
    long_dir = "opt/" + "d" * 120
    return [
        *tree(m, 1_800_000_000),
        m(long_dir, kind=tarfile.DIRTYPE, mode=0o755),
        m(f"{long_dir}/{'f' * 110}.py", b"x = 1\n" * 300),
        m("opt/naïve-ünïcode.txt", b"\xff" * 513),
        m("opt/empty", b""),
        m("opt/exact", b"e" * 1024),
        m("opt/link-to-exact", kind=tarfile.LNKTYPE, linkname="opt/exact"),
        m("tmp/volatile.log", b"dropped"),
        m(
            "opt/mod.pyc",
            b"\x55\x0d\x0d\x0a" + b"\x00" * 4 + (1_900_000_000).to_bytes(4, "little") + b"\x00" * 20,
        ),
    ]


def test_planned_size_is_the_size_written(docker_archive, member, tmp_path):
    policy = CanonicalPolicy(epoch=EPOCH, compression="none")
    with read_image(docker_archive(odd_tree(member))).open_layer(0) as tar:
        planned, dropped = plan_layer(tar.getmembers(), policy)
        out = tmp_path / "layer.tar"
        with open(out, "wb") as f:
            layer = write_planned_layer(planned, dropped, tar, f, policy)
    assert planned_tar_size(planned) == layer.size == out.stat().st_size
    assert dropped == ["tmp/volatile.log"]


def tarfile_reference(planned, reader, policy: CanonicalPolicy) -> bytes:
    """The same plan written by the standard library's tar writer, the way Strata wrote layers before."""
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"
    ) as tar:
        for item in planned:
            if item.data_from is None:
                tar.addfile(item.info)
                continue
            data = reader.extractfile(item.data_from).read()
            if item.info.name.endswith(".pyc"):
                data = clamp_pyc_timestamp(data, policy.epoch)
            tar.addfile(item.info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_layers_are_written_byte_for_byte_as_tarfile_writes_them(
    docker_archive, member, tmp_path, compression
):
    policy = CanonicalPolicy(epoch=EPOCH, compression=compression)
    big = member("opt/big.bin", bytes(range(256)) * 9000)  # more than one copy chunk, not block-aligned
    with read_image(docker_archive([*odd_tree(member), big])).open_layer(0) as tar:
        planned, dropped = plan_layer(tar.getmembers(), policy)
        out = io.BytesIO()
        layer = write_planned_layer(planned, dropped, tar, out, policy)
        expected = tarfile_reference(planned, tar, policy)
    written = out.getvalue() if compression == "none" else gzip.decompress(out.getvalue())
    assert written == expected
    assert layer.diff_id == "sha256:" + hashlib.sha256(expected).hexdigest()
    assert layer.digest == "sha256:" + hashlib.sha256(out.getvalue()).hexdigest()
    assert layer.size == len(out.getvalue())


class ShrunkLayer:
    """A layer whose file data is shorter than its headers say, as when a file is truncated mid-read."""

    def __init__(self, reader) -> None:
        self.reader = reader

    def extractfile(self, member):
        data = self.reader.extractfile(member).read()
        return io.BytesIO(data[: len(data) // 2])


def test_a_file_shorter_than_its_header_is_an_error_naming_it(docker_archive, member, tmp_path):
    policy = CanonicalPolicy(epoch=EPOCH, compression="none")
    with read_image(docker_archive([member("opt/data.bin", b"d" * 5000)])).open_layer(0) as tar:
        planned, dropped = plan_layer(tar.getmembers(), policy)
        with pytest.raises(StrataError, match=r"opt/data.bin.*2500 bytes of data, its header says 5000"):
            write_planned_layer(planned, dropped, ShrunkLayer(tar), io.BytesIO(), policy)


def test_streamed_archive_loads_as_the_same_image_as_the_layout(docker_archive, member, tmp_path):
    policy = CanonicalPolicy(epoch=EPOCH, compression="none")
    saved = docker_archive(odd_tree(member), [member("app/run.sh", b"echo run\n", mode=0o755)])
    layout = canonicalize_archive(saved, tmp_path / "layout", policy, tag="s/t:1")

    stream = tmp_path / "stream.tar"
    with open(stream, "wb") as out:
        streamed = write_docker_archive(read_image(saved), out, policy, tag="s/t:1")

    assert streamed.config_digest == layout.config_digest
    assert streamed.layers == layout.layers and streamed.absent == ()
    # What `docker load` reads: manifest.json naming the config and one tar per layer, each with its diff_id.
    source = read_image(stream)
    assert source.config_digest == layout.config_digest and source.repo_tags == ("s/t:1",)
    for index, layer in enumerate(layout.layers):
        with source.open_layer_tar(index) as tar:
            data = tar.read()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.diff_id
    assert canonicalize_archive(stream, tmp_path / "again", policy).config_digest == layout.config_digest


def test_streamed_archive_leaves_out_the_layers_of_a_canonical_parent(docker_archive, member, tmp_path):
    policy = CanonicalPolicy(epoch=EPOCH, compression="none")
    saved = docker_archive(tree(member, 1), [member("app/x", b"x")])
    full = canonicalize_archive(saved, tmp_path / "full", policy, tag="s/t:1")
    stream = tmp_path / "stream.tar"
    with open(stream, "wb") as out:
        streamed = write_docker_archive(
            read_image(tmp_path / "full"), out, policy, "s/t:1", [full.layers[0].diff_id]
        )
    assert streamed.config_digest == full.config_digest and streamed.absent == (full.layers[0].diff_id,)
    with tarfile.open(stream) as archive:
        names = archive.getnames()
    manifest = json.loads(tarfile.open(stream).extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest[0]["Layers"] == [blob_path(full.layers[0].digest), "layers/1.tar"]
    assert blob_path(full.layers[0].digest) not in names and "layers/1.tar" in names


def test_a_streamed_archive_needs_uncompressed_layers(docker_archive, member, tmp_path):
    with pytest.raises(StrataError, match="uncompressed"):
        write_docker_archive(read_image(docker_archive(tree(member, 1))), io.BytesIO(), CanonicalPolicy())

"""The differ names the layer, the path and the field that keep two images from being identical."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tarfile

import pytest

from builder.errors import StrataError
from builder.oci.archive import ArchiveLayers, read_image
from builder.oci.canonical import CanonicalPolicy, canonicalize_archive
from builder.oci.diff import FileSummary, diff_images, diff_to_json, render_text
from builder.oci.packages import PackageDiff, compare_image_packages
from cli.images import register

EPOCH = 1_600_000_000


def base(m, stamp: str = "2026-11-23 17:00:01") -> list:
    return [
        m("etc", kind=tarfile.DIRTYPE, mode=0o755),
        m("etc/build-info", f"version=1\nbuilt={stamp}\nhost=ci\n".encode()),
        m("usr/lib/libx.so", b"\x7fELF" + bytes(32)),
    ]


def test_identical_images_are_reported_identical_without_opening_layers(docker_archive, member):
    saved = docker_archive(base(member))
    result = diff_images(read_image(saved), read_image(saved))
    assert result.identical
    assert result.layers == () and result.config_changes == ()
    assert result.packages == PackageDiff() and result.files == FileSummary(0, 0, 0)
    assert render_text(result).startswith("identical:")
    assert diff_to_json(result)["packages"] == {"python": [], "debian": []}


def test_changed_text_file_is_named_with_its_layer_step_and_a_content_diff(docker_archive, member, tmp_path):
    shared = [member("bin", kind=tarfile.DIRTYPE, mode=0o755)]
    one = docker_archive(shared, base(member, "2026-11-23 17:00:01"))
    two = docker_archive(shared, base(member, "2026-11-24 09:30:00"))
    a = canonicalize_archive(one, tmp_path / "a", CanonicalPolicy(epoch=EPOCH))
    b = canonicalize_archive(two, tmp_path / "b", CanonicalPolicy(epoch=EPOCH))
    assert a.layers[0].diff_id == b.layers[0].diff_id

    result = diff_images(read_image(tmp_path / "a"), read_image(tmp_path / "b"))
    assert not result.identical
    assert result.config_changes == ()
    (layer,) = result.layers
    assert layer.index == 1 and layer.created_by == "/bin/sh -c step 1"
    (change,) = layer.changes
    assert (change.path, change.kind, change.fields) == ("etc/build-info", "changed", ("sha256",))
    assert "-built=2026-11-23 17:00:01" in (change.text_diff or "")
    assert "+built=2026-11-24 09:30:00" in (change.text_diff or "")
    text = render_text(result)
    assert "layer 1 (/bin/sh -c step 1): 1 path(s) differ" in text
    assert "~ etc/build-info  (content differs)" in text


def test_uncanonical_builds_show_metadata_fields_and_ignore_hides_them(docker_archive, member):
    one = docker_archive([member("f", b"same", mtime=1, uname="root")])
    two = docker_archive([member("f", b"same", mtime=2, uname="builder")])
    result = diff_images(read_image(one), read_image(two))
    (change,) = result.layers[0].changes
    assert change.fields == ("owner", "mtime")
    assert ".created" not in {c.path for c in result.config_changes}  # same residue in both fixtures
    quiet = diff_images(read_image(one), read_image(two), ignore=("mtime", "owner"))
    assert quiet.layers[0].changes == ()
    assert "no file differs" in render_text(quiet)


def test_added_removed_and_config_changes(docker_archive, member):
    one = docker_archive([member("keep", b"k"), member("old", b"o")])
    two = docker_archive(
        [member("keep", b"k"), member("new", b"n")],
        config={"Env": ["PATH=/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL=2"], "Cmd": ["/bin/sh"]},
    )
    result = diff_images(read_image(one), read_image(two))
    kinds = {c.path: c.kind for c in result.layers[0].changes}
    assert kinds == {"new": "added", "old": "removed"}
    changed = {c.path: (c.a, c.b) for c in result.config_changes}
    # Lists of different length are reported whole; fields only one side has show None on the other.
    assert changed[".config.Env"] == (
        ["PATH=/usr/bin:/bin"],
        ["PATH=/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL=2"],
    )
    assert changed[".config.Hostname"] == ("0123456789ab", None)
    assert ".rootfs.diff_ids" not in changed  # layer digests are reported per layer, not as config noise


def test_flattened_view_applies_whiteouts_and_opaque_directories(docker_archive, member):
    one = docker_archive([member("opt/a", b"1"), member("opt/b", b"2"), member("srv/x", b"x")])
    two = docker_archive(
        [member("opt/a", b"1"), member("opt/b", b"2"), member("srv/x", b"x")],
        [member("opt/.wh.b"), member("srv/.wh..wh..opq"), member("srv/y", b"y")],
    )
    result = diff_images(read_image(one), read_image(two))
    assert result.layer_counts == (1, 2) and result.layers == ()
    assert [(c.path, c.kind) for c in result.flattened or ()] == [
        ("opt/b", "removed"),
        ("srv/x", "removed"),
        ("srv/y", "added"),
    ]
    assert "layer count differs: 1 vs 2" in render_text(result)


def test_json_report_is_plain_data(docker_archive, member):
    one = docker_archive([member("f", b"1")])
    two = docker_archive([member("f", b"2")])
    data = json.loads(json.dumps(diff_to_json(diff_images(read_image(one), read_image(two)))))
    assert data["identical"] is False
    assert data["layers"][0]["changes"][0]["path"] == "f"
    assert data["layers"][0]["changes"][0]["text_diff"].endswith("+2")


def test_unknown_ignore_field_is_a_one_line_error(docker_archive, member):
    one = docker_archive([member("f", b"1")])
    two = docker_archive([member("f", b"2")])
    with pytest.raises(StrataError, match="cannot ignore colour"):
        diff_images(read_image(one), read_image(two), ignore=("colour",))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="strata")
    register(top.add_subparsers(dest="command"))
    return top


def test_cli_image_diff_exits_one_on_difference_and_zero_when_identical(
    docker_archive, member, tmp_path, capsys
):
    one = docker_archive([member("f", b"1")])
    two = docker_archive([member("f", b"2")])
    args = parser().parse_args(["diff", str(one), str(two)])
    assert args.func(args) == 1
    assert "~ f  (content differs)" in capsys.readouterr().out
    args = parser().parse_args(["diff", str(one), str(one), "--format", "json"])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "strata.diff/1" and doc["identical"] is True


def test_cli_help_carries_an_example():
    top = parser()
    for command in ("canonicalize", "diff"):
        sub = top._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        assert "example: strata " + command in sub.format_help().replace("\n", " ").replace("  ", " ")


def test_cli_canonicalize_reads_an_archive_path_and_honours_source_date_epoch(
    docker_archive, member, tmp_path, capsys, monkeypatch
):
    saved = docker_archive([member("f", b"1", mtime=EPOCH + 50), member("var/log/x.log", b"noise")])
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    args = parser().parse_args(["canonicalize", str(saved), str(tmp_path / "out"), "--format", "json"])
    assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["schema"] == "strata.canonicalize/1"
    assert result["layers"][0]["dropped"] == ["var/log/x.log"]
    with read_image(tmp_path / "out").open_layer(0) as tar:
        assert [(m.name, m.mtime) for m in tar.getmembers()] == [("f", EPOCH)]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    args = parser().parse_args(["canonicalize", str(saved), str(tmp_path / "out")])
    with pytest.raises(StrataError, match="SOURCE_DATE_EPOCH='yesterday'"):
        args.func(args)


SITE = "usr/lib/python3/dist-packages"


def release(m, foo: str, libc: str, *extra) -> list:
    """A top layer as a release build leaves it: a dist-info for foo and a dpkg status naming libc6."""
    status = f"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: {libc}\n"
    return [
        *extra,
        m(f"{SITE}/foo-{foo}.dist-info", kind=tarfile.DIRTYPE, mode=0o755),
        m(f"{SITE}/foo-{foo}.dist-info/METADATA", f"Name: foo\nVersion: {foo}\n".encode()),
        m("var/lib/dpkg/status", status.encode()),
    ]


@pytest.fixture
def last_week_and_today(docker_archive, member):
    shared = [*base(member), member("usr/bin/python3", b"\x7fELF")]
    last_week = docker_archive(shared, release(member, "1.0", "2.36-9", member("etc/motd", b"hi")))
    today = docker_archive(shared, release(member, "1.1", "2.36-9+deb12u4"))
    return read_image(last_week), read_image(today)


def test_report_opens_with_package_changes_and_merged_file_counts(last_week_and_today):
    result = diff_images(*last_week_and_today)
    assert [(c.name, c.kind, c.a and c.a.version, c.b and c.b.version) for c in result.packages.python] == [
        ("foo", "changed", "1.0", "1.1")
    ]
    assert [(c.name, c.a and c.a.version, c.b and c.b.version) for c in result.packages.debian] == [
        ("libc6", "2.36-9", "2.36-9+deb12u4")
    ]
    # Removed: motd and foo-1.0's directory and METADATA; added: foo-1.1's; changed: the dpkg status.
    assert result.files == FileSummary(added=2, removed=3, changed=1)
    assert [layer.index for layer in result.layers] == [1]  # still per layer, the shared layer 0 not compared
    lines = render_text(result).splitlines()
    assert lines[2:7] == [
        "python packages: 1 changed",
        f"  ~ foo 1.0 -> 1.1  ({SITE})",
        "debian packages: 1 changed",
        "  ~ libc6 2.36-9 -> 2.36-9+deb12u4  (amd64)",
        "merged filesystem: 2 added, 3 removed, 1 changed",
    ]
    assert lines[7].startswith("layer 1 (")
    data = json.loads(json.dumps(diff_to_json(result)))
    assert data["files"] == {"added": 2, "removed": 3, "changed": 1}
    assert data["packages"]["python"][0]["kind"] == "changed"
    assert data["packages"]["debian"][0]["b"] == {
        "name": "libc6",
        "version": "2.36-9+deb12u4",
        "where": "amd64",
    }


def test_merged_file_counts_follow_the_flattened_view_and_ignored_fields(docker_archive, member):
    one = docker_archive([member("a", b"1", mtime=1), member("b", b"2", mtime=1)])
    two = docker_archive([member("a", b"1", mtime=2)], [member("c", b"3")])
    result = diff_images(read_image(one), read_image(two))
    kinds = [c.kind for c in result.flattened or ()]
    assert result.files == FileSummary(kinds.count("added"), kinds.count("removed"), kinds.count("changed"))
    assert result.files == FileSummary(added=1, removed=1, changed=1)
    quiet = diff_images(read_image(one), read_image(two), ignore=("mtime",))
    assert quiet.files == FileSummary(added=1, removed=1, changed=0)
    assert quiet.packages == PackageDiff()
    assert "python packages: none differ" in render_text(quiet)


def test_cli_packages_prints_only_the_package_changes(last_week_and_today, capsys):
    a, b = (source.label for source in last_week_and_today)
    args = parser().parse_args(["diff", "--packages", a, b])
    assert args.func(args) == 1
    assert capsys.readouterr().out.splitlines()[2:] == [
        "python packages: 1 changed",
        f"  ~ foo 1.0 -> 1.1  ({SITE})",
        "debian packages: 1 changed",
        "  ~ libc6 2.36-9 -> 2.36-9+deb12u4  (amd64)",
    ]
    args = parser().parse_args(["diff", "--packages", "--format", "json", a, b])
    assert args.func(args) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["identical"] is False and set(data) == {
        "schema",
        "mode",
        "a_label",
        "b_label",
        "a_id",
        "b_id",
        "identical",
        "packages",
    }
    assert [(c["name"], c["kind"]) for c in data["packages"]["python"]] == [("foo", "changed")]
    args = parser().parse_args(["diff", "--packages", a, a])
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith("identical:")


def test_images_stacking_the_same_layers_differ_in_config_only_and_no_layer_is_opened(docker_archive, member):
    layers = [member("f", b"1")]
    one, two = docker_archive(layers), docker_archive(layers, config={"Cmd": ["/bin/true"]})
    # Layer references that cannot be opened: reading any layer would fail the test.
    a, b = (
        dataclasses.replace(read_image(p), storage=ArchiveLayers(str(p), p, ("no-such-layer",)))
        for p in (one, two)
    )
    for flatten in (False, True):
        result = diff_images(a, b, flatten=flatten)
        assert not result.identical and ".config.Cmd[0]" in {c.path for c in result.config_changes}
        assert result.packages == PackageDiff() and result.files == FileSummary()
        assert (result.layers, result.flattened) == (((), None) if not flatten else ((), ()))
    assert compare_image_packages(a, b) == PackageDiff()

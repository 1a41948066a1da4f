"""Installed packages of an image's merged filesystem and what changed between two images, from small tars."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import tarfile
from collections.abc import Iterator
from typing import IO

import pytest

from builder.errors import StrataError
from builder.oci.archive import read_image
from builder.oci.image import Image, LayerReader, LayerStorage
from builder.oci.packages import (
    ImagePackages,
    InstalledPackage,
    PackageDiff,
    compare_image_packages,
    diff_packages,
    image_packages,
    package_diff_to_json,
    parse_dist_metadata,
    parse_dpkg_status,
    render_package_changes,
)

DIST = "usr/lib/python3/dist-packages"
SITE = "usr/local/lib/python3.11/site-packages"


def metadata(name: str, version: str) -> bytes:
    return (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: x\n\nLong description.\n".encode()
    )


def dist(m, site: str, name: str, version: str) -> list:
    """Members pip leaves for one distribution: the dist-info directory and its METADATA."""
    directory = f"{site}/{name.replace('-', '_')}-{version}.dist-info"
    return [
        m(directory, kind=tarfile.DIRTYPE, mode=0o755),
        m(f"{directory}/METADATA", metadata(name, version)),
    ]


def stanza(package: str, version: str, arch: str = "amd64", status: str = "install ok installed") -> str:
    return (
        f"Package: {package}\nStatus: {status}\nPriority: optional\nArchitecture: {arch}\n"
        f"Version: {version}\nDescription: {package}\n a continuation line: Version: 0\n"
    )


def dpkg_status(*stanzas: str) -> bytes:
    return "\n".join(stanzas).encode()


def py(name: str, version: str, where: str = DIST) -> InstalledPackage:
    return InstalledPackage(name, version, where)


def deb(name: str, version: str, arch: str = "amd64") -> InstalledPackage:
    return InstalledPackage(name, version, arch)


# --- parsing the two small files ------------------------------------------------------------------


def test_metadata_headers_give_name_and_version_and_the_body_is_not_read():
    body = b"Name: not-this\n" * 100_000
    stream = io.BytesIO(b"Metadata-Version: 2.1\nname: Typing_Extensions\nVersion: 4.8.0\n\n" + body)
    package = parse_dist_metadata(stream, f"{SITE}/typing_extensions-4.8.0.dist-info/METADATA")
    assert package == InstalledPackage("Typing_Extensions", "4.8.0", SITE)
    assert stream.tell() < 100  # stopped once Name and Version were known


def test_metadata_without_headers_falls_back_to_the_directory_name():
    package = parse_dist_metadata(io.BytesIO(b"Summary: broken\n"), "opt/foo_bar-1.2.3.dist-info/METADATA")
    assert package == InstalledPackage("foo_bar", "1.2.3", "opt")
    assert parse_dist_metadata(io.BytesIO(b""), "odd.dist-info/METADATA") == InstalledPackage(
        "odd", "unknown", "."
    )


def test_dpkg_status_keeps_installed_and_held_packages_of_every_architecture():
    status = dpkg_status(
        stanza("libc6", "2.36-9+deb12u4"),
        stanza("libc6", "2.36-9+deb12u4", arch="i386"),
        stanza("libcudnn8", "8.9.7.29-1+cuda11.8", status="hold ok installed"),
        stanza("old-tool", "1.0", status="deinstall ok config-files"),
        stanza("tzdata", "2024a-0+deb12u1", arch="all"),
    )
    assert parse_dpkg_status(status) == (
        deb("libc6", "2.36-9+deb12u4"),
        deb("libc6", "2.36-9+deb12u4", "i386"),
        deb("libcudnn8", "8.9.7.29-1+cuda11.8"),
        deb("tzdata", "2024a-0+deb12u1", "all"),
    )


# --- the merged filesystem, layer by layer -------------------------------------------------------


def test_dist_infos_of_two_layers_merge_and_a_whiteout_removes_one(docker_archive, member):
    saved = docker_archive(
        [*dist(member, DIST, "foo", "1.0"), *dist(member, SITE, "numpy", "1.24.3")],
        [
            member(f"{DIST}/.wh.foo-1.0.dist-info"),
            *dist(member, DIST, "foo", "1.1"),
            *dist(member, SITE, "requests", "2.31.0"),
        ],
    )
    assert image_packages(read_image(saved)).python == (
        py("foo", "1.1"),
        py("numpy", "1.24.3", SITE),
        py("requests", "2.31.0", SITE),
    )


def test_two_copies_of_one_package_in_different_prefixes_are_both_reported(docker_archive, member):
    saved = docker_archive([*dist(member, DIST, "six", "1.16.0")], [*dist(member, SITE, "six", "1.15.0")])
    assert image_packages(read_image(saved)).python == (py("six", "1.16.0"), py("six", "1.15.0", SITE))


def test_opaque_directories_and_non_directories_replacing_a_site_hide_what_is_below(docker_archive, member):
    saved = docker_archive(
        [
            *dist(member, DIST, "a", "1"),
            *dist(member, SITE, "b", "2"),
            *dist(member, "opt/venv/site", "c", "3"),
        ],
        [member(f"{DIST}/.wh..wh..opq"), *dist(member, DIST, "a2", "1")],
        [member("usr/local/lib/python3.11", kind=tarfile.SYMTYPE, linkname="/opt/py")],
        [member("opt/venv/site/c-3.dist-info/METADATA", kind=tarfile.SYMTYPE, linkname="elsewhere")],
    )
    assert image_packages(read_image(saved)).python == (py("a2", "1"),)


def test_a_hard_linked_metadata_is_read_through_its_target(docker_archive, member):
    saved = docker_archive(
        [
            *dist(member, DIST, "six", "1.16.0"),
            member(f"{SITE}/six-1.16.0.dist-info", kind=tarfile.DIRTYPE, mode=0o755),
            member(
                f"{SITE}/six-1.16.0.dist-info/METADATA",
                kind=tarfile.LNKTYPE,
                linkname=f"{DIST}/six-1.16.0.dist-info/METADATA",
            ),
        ]
    )
    assert image_packages(read_image(saved)).python == (py("six", "1.16.0"), py("six", "1.16.0", SITE))


def test_a_hard_link_to_a_missing_file_is_a_one_line_error(docker_archive, member):
    saved = docker_archive([member(f"{DIST}/x-1.dist-info/METADATA", kind=tarfile.LNKTYPE, linkname="gone")])
    with pytest.raises(StrataError, match=r"layer 0: .*x-1.dist-info/METADATA is a hard link to gone"):
        image_packages(read_image(saved))


def test_the_top_most_dpkg_status_wins_and_a_whiteout_removes_it(docker_archive, member):
    first = dpkg_status(stanza("libc6", "2.36-9"), stanza("curl", "7.88.1-10"))
    second = dpkg_status(stanza("libc6", "2.36-9+deb12u4"))
    lower = [member("var/lib/dpkg/status", first)]
    replaced = docker_archive(lower, [member("etc/motd", b"hi")], [member("var/lib/dpkg/status", second)])
    assert image_packages(read_image(replaced)).debian == (deb("libc6", "2.36-9+deb12u4"),)
    unchanged = docker_archive(lower, [member("etc/motd", b"hi")])
    assert image_packages(read_image(unchanged)).debian == (deb("curl", "7.88.1-10"), deb("libc6", "2.36-9"))
    removed = docker_archive(lower, [member("var/lib/.wh.dpkg")])
    assert image_packages(read_image(removed)) == ImagePackages(python=(), debian=())


# --- what changed between two images -------------------------------------------------------------


def test_version_bumps_additions_and_removals_are_named():
    a = ImagePackages(
        python=(py("foo", "1.0"), py("gone", "0.1", SITE), py("same", "3")),
        debian=(deb("libc6", "2.36-9"), deb("curl", "7.88.1-10")),
    )
    b = ImagePackages(
        python=(py("foo", "1.1"), py("new", "2.0", SITE), py("same", "3")),
        debian=(deb("libc6", "2.36-9+deb12u4"), deb("jq", "1.6-2.1")),
    )
    result = diff_packages(a, b)
    assert [(c.name, c.kind, c.a and c.a.version, c.b and c.b.version) for c in result.python] == [
        ("foo", "changed", "1.0", "1.1"),
        ("gone", "removed", "0.1", None),
        ("new", "added", None, "2.0"),
    ]
    assert [(c.name, c.kind) for c in result.debian] == [
        ("curl", "removed"),
        ("jq", "added"),
        ("libc6", "changed"),
    ]
    assert diff_packages(a, a) == PackageDiff() and diff_packages(a, a).empty


def test_names_compare_as_pip_does_and_a_package_that_moved_site_is_one_change():
    a = ImagePackages(python=(py("Typing_Extensions", "4.7.1", "usr/lib/python3.10/site-packages"),))
    b = ImagePackages(python=(py("typing-extensions", "4.8.0", SITE),))
    (change,) = diff_packages(a, b).python
    assert change.kind == "changed" and change.name == "typing-extensions"
    assert render_package_changes(diff_packages(a, b))[1] == (
        f"  ~ typing-extensions 4.7.1 -> 4.8.0  (usr/lib/python3.10/site-packages -> {SITE})"
    )


def test_a_second_copy_in_another_prefix_is_an_addition_not_a_change():
    a = ImagePackages(python=(py("six", "1.16.0"),))
    b = ImagePackages(python=(py("six", "1.16.0"), py("six", "1.15.0", SITE)))
    assert [(c.kind, c.b) for c in diff_packages(a, b).python] == [("added", py("six", "1.15.0", SITE))]


def test_multiarch_packages_are_compared_per_architecture():
    a = ImagePackages(debian=(deb("libc6", "2.36-9"), deb("libc6", "2.36-9", "i386")))
    b = ImagePackages(debian=(deb("libc6", "2.36-9+deb12u4"), deb("libc6", "2.36-9", "i386")))
    (change,) = diff_packages(a, b).debian
    assert (change.a, change.b) == (deb("libc6", "2.36-9"), deb("libc6", "2.36-9+deb12u4"))


def test_report_lines_and_json():
    result = diff_packages(
        ImagePackages(python=(py("foo", "1.0"), py("old", "1")), debian=(deb("libc6", "2.36-9"),)),
        ImagePackages(python=(py("foo", "1.1"), py("new", "2", SITE)), debian=(deb("libc6", "2.36-9"),)),
    )
    assert render_package_changes(result) == [
        "python packages: 1 changed, 1 added, 1 removed",
        f"  ~ foo 1.0 -> 1.1  ({DIST})",
        f"  + new 2  ({SITE})",
        f"  - old 1  ({DIST})",
        "debian packages: none differ",
    ]
    assert render_package_changes(result, limit=1)[2] == "  ... and 2 more"
    data = json.loads(json.dumps(package_diff_to_json(result)))
    assert data["python"][0] == {
        "name": "foo",
        "kind": "changed",
        "a": {"name": "foo", "version": "1.0", "where": DIST},
        "b": {"name": "foo", "version": "1.1", "where": DIST},
    }
    assert data["python"][1]["a"] is None and data["debian"] == []


@dataclasses.dataclass(frozen=True)
class CountingStorage:
    """Layer storage that records which layers were opened (to prove shared layers are read once)."""

    inner: LayerStorage
    opened: list[int] = dataclasses.field(default_factory=list)

    @contextlib.contextmanager
    def open_layer(self, index: int) -> Iterator[LayerReader]:
        self.opened.append(index)
        with self.inner.open_layer(index) as layer:
            yield layer

    def open_layer_tar(self, index: int) -> contextlib.AbstractContextManager[IO[bytes]]:
        return self.inner.open_layer_tar(index)

    def stored_layer_size(self, index: int) -> tuple[int, bool]:
        return self.inner.stored_layer_size(index)


def counting(source: Image) -> tuple[Image, list[int]]:
    storage = CountingStorage(source.storage)
    return dataclasses.replace(source, storage=storage), storage.opened


def test_comparing_two_images_reads_a_layer_they_share_once_and_agrees_with_separate_scans(
    docker_archive, member
):
    base = [*dist(member, DIST, "foo", "1.0"), member("var/lib/dpkg/status", dpkg_status(stanza("bb", "1")))]
    upgrade = [
        member(f"{DIST}/.wh.foo-1.0.dist-info"),
        *dist(member, DIST, "foo", "1.1"),
        member("var/lib/dpkg/status", dpkg_status(stanza("bb", "2"))),
    ]
    a, a_opened = counting(read_image(docker_archive(base, [member("etc/x", b"1")])))
    b, b_opened = counting(read_image(docker_archive(base, upgrade)))
    result = compare_image_packages(a, b)
    assert result == diff_packages(image_packages(a), image_packages(b))
    assert [(c.name, c.a and c.a.version, c.b and c.b.version) for c in result.python] == [
        ("foo", "1.0", "1.1")
    ]
    assert [(c.name, c.a and c.a.version, c.b and c.b.version) for c in result.debian] == [("bb", "1", "2")]
    assert a_opened[:2] == [0, 1] and b_opened[:1] == [1]  # layer 0 is the same in both: opened once

"""Pure parts of builder.lock.rootfs: spec validation, sources, hook text, mmdebstrap argv, dpkg status, keys."""

from __future__ import annotations

import dataclasses
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from builder.errors import StrataError
from builder.lock import rootfs
from builder.lock.rootfs import DebPackage, RootfsSpec, list_debs, list_rootfs, prune_rootfs

BOOKWORM = RootfsSpec(suite="bookworm", epoch=1700000000)

STATUS = """\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u9
Description: GNU C Library: Shared libraries
 Contains the standard libraries.
 .
 Status: not a field, a continuation line

Package: python3
Status: install ok installed
Architecture: amd64
Version: 3.11.2-1+b1

Package: removed-but-configured
Status: deinstall ok config-files
Architecture: all
Version: 1.0

Package: ca-certificates
Status: install ok installed
Architecture: all
Version: 20230311
"""


def test_packages_from_dpkg_status_keeps_installed_sorted() -> None:
    assert rootfs.packages_from_dpkg_status(STATUS) == [
        DebPackage("ca-certificates", "20230311", "all"),
        DebPackage("libc6", "2.36-9+deb12u9", "amd64"),
        DebPackage("python3", "3.11.2-1+b1", "amd64"),
    ]
    assert rootfs.packages_from_dpkg_status("") == []


def test_packages_are_plain_name_version_arch_tuples() -> None:
    (first, *_) = rootfs.packages_from_dpkg_status(STATUS)
    assert tuple(first) == ("ca-certificates", "20230311", "all")


def test_default_spec_carries_what_tensorflow_images_need() -> None:
    for package in ("python3", "python3-venv", "ca-certificates", "libgomp1"):
        assert package in BOOKWORM.packages
    assert BOOKWORM.variant == "minbase"
    assert BOOKWORM.mirror == "http://deb.debian.org/debian"


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"suite": "Bookworm;rm"}, "not a Debian suite name"),
        ({"mirror": "ftp://x"}, "not an http(s)://"),
        ({"mirror": "http://x/ y"}, "not an http(s)://"),
        ({"variant": "tiny"}, "variant 'tiny'"),
        ({"packages": ("python3", "evil pkg")}, "evil pkg"),
        ({"epoch": -1}, "negative"),
    ],
)
def test_spec_rejects_bad_values_in_one_line(changes: dict[str, object], complaint: str) -> None:
    fields = {"suite": "bookworm", "epoch": 0, **changes}
    with pytest.raises(StrataError) as info:
        RootfsSpec(**fields)  # type: ignore[arg-type]
    assert complaint in str(info.value)
    assert "\n" not in str(info.value)


def test_spec_accepts_pinned_versions_and_arch_qualifiers() -> None:
    spec = RootfsSpec(suite="bookworm", epoch=0, packages=("libc6:amd64=2.36-9+deb12u9", "python3"))
    assert spec.packages[0] == "libc6:amd64=2.36-9+deb12u9"


def test_sources_lines_with_updates_and_security() -> None:
    assert rootfs.sources_lines(BOOKWORM) == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    bare = dataclasses.replace(BOOKWORM, updates=False, security_mirror=None, components=("main", "contrib"))
    assert rootfs.sources_lines(bare) == ["deb http://deb.debian.org/debian bookworm main contrib"]


def test_mmdebstrap_argv_for_bookworm() -> None:
    argv = rootfs.mmdebstrap_argv(BOOKWORM, Path("/o/r.tar"), Path("/w/hook.sh"), Path("/c/debs"), "root")
    assert argv[:5] == [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--architectures=amd64",
        "--format=tar",
    ]
    assert "--include=python3,python3-venv,ca-certificates,libgomp1,libstdc++6" in argv
    assert "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr" in argv
    assert "--dpkgopt=path-include=/usr/share/doc/*/copyright" in argv
    # the deb cache is synced out before our hook empties /var/cache/apt
    assert argv.index("--customize-hook=sync-out /var/cache/apt/archives/ /c/debs") < argv.index(
        "--customize-hook=/w/hook.sh"
    )
    assert argv[-5:] == ["bookworm", "/o/r.tar", *rootfs.sources_lines(BOOKWORM)]


def test_mmdebstrap_argv_for_bullseye_keeps_split_usr_and_no_slim() -> None:
    spec = RootfsSpec(suite="bullseye", epoch=1, slim=False, packages=())
    argv = rootfs.mmdebstrap_argv(spec, Path("/o.tar"), Path("/h"), Path("/d"), "unshare")
    assert "--mode=unshare" in argv
    assert not [a for a in argv if a.startswith(("--hook-dir", "--dpkgopt", "--include"))]


def test_customize_script_is_valid_sh_and_covers_each_source_of_nondeterminism() -> None:
    script = rootfs.customize_script(BOOKWORM)
    assert script.startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", "-c", script], check=True)
    for target in (
        "/etc/apt/sources.list",
        "/var/lib/apt/lists",
        "/var/cache/apt",
        "/var/log/dpkg.log",
        "/var/log/apt",
        "/var/cache/ldconfig/aux-cache",
        "/etc/machine-id",
        "/etc/hostname",
        "/etc/resolv.conf",
        "/etc/shadow",
        "*.pyc",
    ):
        assert target in script, target
    assert f"\\1{1700000000 // 86400}:" in script
    assert "deb http://deb.debian.org/debian-security bookworm-security main" in script


def test_customize_script_on_a_fake_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for directory in (
        "etc/apt/sources.list.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/log/apt",
        "var/cache/ldconfig",
        "usr/lib/python3/__pycache__",
        "var/lib/dpkg",
    ):
        (root / directory).mkdir(parents=True)
    files = {
        "etc/shadow": "root:*:19675:0:99999:7:::\n_apt:*:19675:0:99999:7:::\nnobody:*::0:99999:7:::\n",
        "etc/shadow-": "old\n",
        "etc/hostname": "buildhost-42\n",
        "etc/resolv.conf": "nameserver 10.1.2.3\n",
        "etc/apt/sources.list.d/debian.sources": "Types: deb\n",
        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease": "x",
        "var/cache/apt/pkgcache.bin": "x",
        "var/cache/apt/archives/libc6.deb": "x",
        "var/log/dpkg.log": "x",
        "var/log/apt/history.log": "x",
        "var/cache/ldconfig/aux-cache": "x",
        "var/lib/dpkg/status-old": "x",
        "usr/lib/python3/__pycache__/a.cpython-311.pyc": "x",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    hook = tmp_path / "hook.sh"
    hook.write_text(rootfs.customize_script(BOOKWORM))
    hook.chmod(0o755)
    subprocess.run([str(hook), str(root)], check=True)

    days = 1700000000 // 86400
    assert (root / "etc/shadow").read_text() == (
        f"root:*:{days}:0:99999:7:::\n_apt:*:{days}:0:99999:7:::\nnobody:*::0:99999:7:::\n"
    )
    assert (root / "etc/apt/sources.list").read_text().splitlines() == rootfs.sources_lines(BOOKWORM)
    assert (root / "etc/machine-id").read_text() == ""
    assert (root / "etc/hostname").read_text() == ""
    assert (root / "etc/resolv.conf").read_text() == ""
    assert (root / "var/lib/apt/lists/partial").is_dir()
    if os.geteuid() == 0:  # chown needs root, as mmdebstrap's root mode has
        apt_uid = pwd.getpwnam("_apt").pw_uid  # the host's: apt runs on the host and chowns to its own _apt
        for partial in ("var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):
            assert ((root / partial).stat().st_uid, (root / partial).stat().st_gid) == (apt_uid, 0), partial
    leftovers = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert leftovers == [
        "etc/apt/sources.list",
        "etc/hostname",
        "etc/machine-id",
        "etc/resolv.conf",
        "etc/shadow",
    ]


def test_spec_key_is_stable_and_changes_with_any_field() -> None:
    assert rootfs.spec_key(BOOKWORM) == rootfs.spec_key(RootfsSpec(suite="bookworm", epoch=1700000000))
    variants = [
        dataclasses.replace(BOOKWORM, suite="bullseye"),
        dataclasses.replace(BOOKWORM, epoch=1700000001),
        dataclasses.replace(BOOKWORM, packages=("python3",)),
        dataclasses.replace(BOOKWORM, slim=False),
        dataclasses.replace(BOOKWORM, security_mirror=None),
    ]
    keys = {rootfs.spec_key(v) for v in variants} | {rootfs.spec_key(BOOKWORM)}
    assert len(keys) == len(variants) + 1
    assert all(len(k) == 64 for k in keys)


def test_mismatch_message_names_suite_hashes_and_what_to_do() -> None:
    changes = rootfs.package_changes(
        [DebPackage("libc6", "2.36-9+deb12u7", "amd64"), DebPackage("gone", "1", "all")],
        [DebPackage("libc6", "2.36-9+deb12u8", "amd64"), DebPackage("new", "2", "all")],
    )
    assert changes == "gone 1 -> -, libc6 2.36-9+deb12u7 -> 2.36-9+deb12u8, new - -> 2"
    message = rootfs.mismatch_message(BOOKWORM, "a" * 64, "b" * 64, changes)
    assert "bookworm" in message and "a" * 64 in message and "b" * 64 in message
    assert "Debian archive moved (point or security release)" in message
    assert "refresh the lock" in message
    assert "\n" not in message


def test_package_changes_truncates_long_lists() -> None:
    old = [DebPackage(f"p{i}", "1", "all") for i in range(8)]
    new = [DebPackage(f"p{i}", "2", "all") for i in range(8)]
    assert rootfs.package_changes(old, new, limit=2).endswith("(+6 more)")
    assert rootfs.package_changes(old, old) == ""


def test_gc_lists_each_rootfs_with_its_sidecar_pointers_and_logs_and_each_deb(tmp_path: Path) -> None:
    store = tmp_path / "rootfs"
    (store / "by-spec").mkdir(parents=True)
    (store / "logs").mkdir()
    for sha, key in (("a" * 64, "1" * 64), ("b" * 64, "2" * 64)):
        (store / f"{sha}.tar").write_bytes(b"t" * 100)
        (store / f"{sha}.json").write_text("{}")
        (store / "by-spec" / key).write_text(sha + "\n")
        (store / "logs" / f"bookworm-{key[:16]}.log").write_text("log")
    entries = {e.key: e for e in list_rootfs(tmp_path)}
    assert set(entries) == {"a" * 64, "b" * 64}
    assert sorted(p.name for p in entries["b" * 64].paths) == sorted(
        ["b" * 64 + ".tar", "b" * 64 + ".json", "2" * 64, f"bookworm-{'2' * 16}.log"]
    )
    assert entries["b" * 64].size == 100 + 2 + 65 + 3
    assert prune_rootfs([entries["b" * 64]]) == 170
    assert [e.key for e in list_rootfs(tmp_path)] == ["a" * 64]
    assert not (store / "by-spec" / ("2" * 64)).exists() and (store / "by-spec" / ("1" * 64)).exists()
    debs = tmp_path / "debs" / "bookworm-amd64"
    debs.mkdir(parents=True)
    (debs / "bash_5.2.15-2+b13_amd64.deb").write_bytes(b"d" * 9)
    (debs / "lock").write_bytes(b"")
    assert [(e.key, e.size) for e in list_debs(tmp_path)] == [("bash_5.2.15-2+b13_amd64.deb", 9)]

"""builder.lock.rootfs with the real mmdebstrap and Debian archive: reproducible bytes, cache, lock mismatch.

Two builds of a small bookworm spec run in two separate cache directories (the second one reuses the
first one's downloaded .debs, which apt re-verifies, so only the archive download is shared). Takes a
minute or two on a 2-core machine.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.errors import HostError
from builder.lock import rootfs
from builder.lock.rootfs import RootfsArtifact, RootfsSpec

pytestmark = pytest.mark.engine

EPOCH = 1700000000
SMALL = RootfsSpec(suite="bookworm", epoch=EPOCH, packages=("ca-certificates", "libgomp1"))
NOT_THE_LOCK = "0" * 64


@dataclass(frozen=True)
class TwoBuilds:
    first: RootfsArtifact
    first_cache: Path
    mismatch: HostError
    second: RootfsArtifact
    second_cache: Path


@pytest.fixture(scope="module")
def two_builds(require: Callable[[bool, str], None], tmp_path_factory: pytest.TempPathFactory) -> TwoBuilds:
    require(
        shutil.which("mmdebstrap") is not None or rootfs.host.is_root(),
        "mmdebstrap is not installed and only root may apt-install it (run scripts/setup-host.sh)",
    )
    first_cache = tmp_path_factory.mktemp("rootfs-cache-1")
    second_cache = tmp_path_factory.mktemp("rootfs-cache-2")
    first = rootfs.build_rootfs(SMALL, first_cache, environ=os.environ)
    shutil.copytree(first_cache / "debs", second_cache / "debs")
    # The second build is fresh (empty rootfs store) and is told to expect a hash it cannot produce.
    with pytest.raises(HostError) as info:
        rootfs.build_rootfs(SMALL, second_cache, expected_sha256=NOT_THE_LOCK, environ=os.environ)
    # The mismatching tar stays cached under its own hash, so this is a cache hit, not a third build.
    second = rootfs.build_rootfs(SMALL, second_cache, environ=os.environ)
    return TwoBuilds(first, first_cache, info.value, second, second_cache)


def test_two_fresh_builds_are_byte_identical(two_builds: TwoBuilds) -> None:
    first, second = two_builds.first, two_builds.second
    assert first.path.parent == two_builds.first_cache / "rootfs"
    assert second.path.parent == two_builds.second_cache / "rootfs"
    assert first.sha256 == second.sha256
    assert first.size == second.size
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.path.name == f"{first.sha256}.tar"


def test_package_list_comes_from_the_built_tar(two_builds: TwoBuilds) -> None:
    packages = two_builds.first.packages
    names = [p.name for p in packages]
    assert list(packages) == sorted(packages)
    for name in ("libgomp1", "ca-certificates", "libc6", "dpkg"):
        assert name in names
    assert "usrmerge" not in names  # merged /usr comes from mmdebstrap's hook, not the perl-heavy package
    libc6 = next(p for p in packages if p.name == "libc6")
    assert libc6.arch == "amd64" and libc6.version.startswith("2.36")
    assert packages == two_builds.second.packages


def test_tar_has_no_build_time_or_host_leftovers(two_builds: TwoBuilds) -> None:
    with tarfile.open(two_builds.first.path) as tar:
        members = {m.name: m for m in tar.getmembers()}

        def text(name: str) -> str:
            handle = tar.extractfile(members[name])
            assert handle is not None
            return handle.read().decode()

        assert text("./etc/machine-id") == ""
        assert text("./etc/hostname") == ""
        assert text("./etc/resolv.conf") == ""
        assert text("./etc/apt/sources.list").splitlines() == rootfs.sources_lines(SMALL)
        days = str(EPOCH // 86400)
        assert all(line.split(":")[2] in ("", days) for line in text("./etc/shadow").splitlines())
    assert max(m.mtime for m in members.values()) <= EPOCH
    build_dirs = ("./var/lib/apt/lists/", "./var/cache/apt/", "./var/log/apt/")
    build_files = ("./var/log/dpkg.log", "./var/cache/ldconfig/aux-cache", "./etc/shadow-")
    leftovers = [
        name
        for name, member in members.items()
        if member.isfile()
        and (
            name.endswith(".pyc")
            or name in build_files
            or (name.startswith(build_dirs) and not name.endswith("/lock"))  # apt's empty lock files stay
        )
    ]
    assert leftovers == []
    assert not [name for name in members if name.startswith("./dev/") and name != "./dev/"]


def test_expected_sha256_mismatch_names_suite_both_hashes_and_the_fix(two_builds: TwoBuilds) -> None:
    message = str(two_builds.mismatch)
    assert "rootfs for bookworm" in message
    assert f"sha256:{two_builds.second.sha256}" in message
    assert f"sha256:{NOT_THE_LOCK}" in message
    assert "the Debian archive moved (point or security release)" in message
    assert "refresh the lock" in message
    assert "\n" not in message


def test_second_call_is_a_cache_hit(two_builds: TwoBuilds) -> None:
    started = time.monotonic()
    again = rootfs.build_rootfs(SMALL, two_builds.first_cache, environ=os.environ)
    assert time.monotonic() - started < 1.0
    assert again == two_builds.first
    sidecar = two_builds.first_cache / "rootfs" / f"{again.sha256}.json"
    assert sidecar.is_file()
    # the lock's hash is found by content address even when asked with the matching expectation
    assert (
        rootfs.build_rootfs(SMALL, two_builds.first_cache, expected_sha256=again.sha256, environ=os.environ)
        == again
    )

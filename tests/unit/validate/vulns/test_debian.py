"""The Debian security status of a base lock, from InRelease files and a Packages excerpt recorded from
deb.debian.org: the signature is checked with gpgv and the host's debian-archive-keyring (offline), an edited
InRelease is refused, versions compare in Debian's order, and a frozen suite is called frozen."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.plan.lockfile import DebPackage, Lock
from validate.vulns.debian import (
    FROZEN,
    OK,
    UNAVAILABLE,
    BaseStatus,
    base_status,
    index_arch,
    parse_release,
    security_versions,
)
from validate.vulns.debian_archive import KEYRING, SecurityIndexUnavailable, verify_inrelease

DATA = Path(__file__).parent / "data"


def lock_of(*debs: tuple[str, str, str]) -> Lock:
    return Lock("base-bookworm", "hermetic", "0" * 64, debs=tuple(DebPackage(*d) for d in debs))


@pytest.fixture(scope="module")
def bookworm():
    data = (DATA / "bookworm-security.InRelease").read_bytes()
    return parse_release(data, verify_inrelease(data))


def test_recorded_inrelease_verifies_with_the_debian_keyring(bookworm):
    if not KEYRING.is_file():
        pytest.fail(f"{KEYRING} is missing: apt-get install debian-archive-keyring (scripts/setup-host.sh)")
    assert "Debian Security Archive Automatic Signing Key" in bookworm.signed_by
    assert bookworm.suite == "bookworm-security"
    assert bookworm.valid_until and not bookworm.frozen
    assert "main/binary-amd64/Packages.xz" in bookworm.hashes


def test_an_edited_inrelease_is_refused():
    data = (DATA / "bookworm-security.InRelease").read_bytes()
    edited = data.replace(b"Valid-Until:", b"Valid-Untiz:", 1)
    with pytest.raises(SecurityIndexUnavailable, match="signature does not verify"):
        verify_inrelease(edited)


def test_bullseye_security_is_frozen():
    data = (DATA / "bullseye-security.InRelease").read_bytes()
    release = parse_release(data, verify_inrelease(data))
    assert release.suite == "bullseye-security" and release.frozen
    status = base_status(lock_of(("apt", "2.2.4", "amd64")), "bullseye-security", release, b"")
    assert status.status == FROZEN
    assert "the suite is frozen (no Valid-Until" in status.describe()


def test_security_versions_read_source_packages():
    versions = security_versions((DATA / "bookworm-security-Packages").read_bytes())
    assert versions[("libssl3", "amd64")].source == "openssl"
    bsdutils = versions[("bsdutils", "amd64")]
    assert (bsdutils.source, bsdutils.source_version) == ("util-linux", "2.38.1-5+deb12u1")
    assert versions[("apt", "amd64")].source == "apt"


def test_base_status_compares_in_debian_version_order(bookworm):
    lock = lock_of(
        ("apt", "2.6.1", "amd64"),  # security has 2.6.2: an update the image lacks
        ("zlib1g", "1:1.2.13.dfsg-1", "amd64"),  # epoch kept: 1:1.2.13.dfsg-1+deb12u1 is newer
        ("libssl3", "3.0.20-1~deb12u2", "amd64"),  # ~ sorts before: 3.0.22-1~deb12u2 is newer
        ("libgnutls30", "3.7.9-2+deb12u7", "amd64"),  # the same version
        ("libc6", "2.36-9+deb12u14", "amd64"),  # newer than the suite's deb12u7 (a point release)
        ("tzdata", "2026f-0+deb12u1", "all"),  # arch all is listed in binary-amd64
        ("hello", "2.10-3", "amd64"),  # never had a security update: not in the suite
    )
    status = base_status(
        lock, "bookworm-security", bookworm, (DATA / "bookworm-security-Packages").read_bytes()
    )
    assert status.status == OK
    assert [(u.package, u.locked, u.security, u.source) for u in status.updates] == [
        ("apt", "2.6.1", "2.6.2", "apt"),
        ("libssl3", "3.0.20-1~deb12u2", "3.0.22-1~deb12u2", "openssl"),
        ("zlib1g", "1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1", "zlib"),
    ]
    assert (status.locked, status.in_suite, status.same, status.older) == (7, 6, 2, 1)
    assert status.describe().startswith(
        "bookworm-security: 3 of 7 locked packages have a newer security version"
    )
    assert status.to_json()["release"]["signed_by"] == bookworm.signed_by


def test_unavailable_is_said_with_its_reason():
    status = BaseStatus(
        "base-bookworm", "bookworm-security", UNAVAILABLE, reason="http://x/InRelease: ConnectError"
    )
    assert status.describe() == "bookworm-security: unavailable: http://x/InRelease: ConnectError"


def test_index_arch():
    assert index_arch(lock_of(("a", "1", "all"), ("b", "1", "arm64"))) == "arm64"
    assert index_arch(lock_of(("a", "1", "all"))) == "amd64"

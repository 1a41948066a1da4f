"""The Debian security suite against a base lock, pure: which locked packages have a newer security version.

Inputs are the suite's release fields (from its verified InRelease, see debian_archive.py) and its Packages index;
the base lock's `deb <name> <version> <arch>` lines are compared with the security suite's versions using Debian's
version ordering (python-debian). What can be said from the archive alone:

    newer        the security suite has a newer version of a locked package: the image lacks a security update
                 (with the source package and its version, the "fixed in")
    same         the lock already has the security version
    older        the security suite's version is older than the lock's (the fix reached a point release)
    frozen       the suite's InRelease has no Valid-Until: Debian no longer updates it (end of life); then "no
                 newer version" does not mean "not vulnerable", and the status says so

The security suite lists only packages that have had security updates; the others are simply not in it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from debian.deb822 import Packages, Release
from debian.debian_support import Version

from builder.plan.lockfile import Lock

_SOURCE = re.compile(r"^(?P<name>\S+)(?: \((?P<version>\S+)\))?$")
OK = "ok"
FROZEN = "frozen"
UNAVAILABLE = "unavailable"
NOT_APPLICABLE = "not-applicable"


@dataclass(frozen=True)
class ReleaseInfo:
    """What a suite's (verified) InRelease says: its name, dates, and the sha256 and size of each index."""

    suite: str
    date: str
    valid_until: str | None
    signed_by: str
    hashes: Mapping[str, tuple[str, int]]

    @property
    def frozen(self) -> bool:
        return self.valid_until is None


def parse_release(text: bytes, signed_by: str) -> ReleaseInfo:
    """Parse InRelease (its signature already checked by the caller)."""
    release = Release(text)
    hashes = {str(h["name"]): (str(h["sha256"]), int(h["size"])) for h in release.get("SHA256") or []}
    return ReleaseInfo(
        suite=str(release.get("Codename") or release.get("Suite") or ""),
        date=str(release.get("Date") or ""),
        valid_until=release.get("Valid-Until"),
        signed_by=signed_by,
        hashes=hashes,
    )


@dataclass(frozen=True)
class SecurityPackage:
    """The newest version of one binary package in the security suite, and its source package."""

    version: str
    source: str
    source_version: str


def security_versions(packages_text: bytes) -> dict[tuple[str, str], SecurityPackage]:
    """(name, arch) -> the newest version the Packages index lists."""
    best: dict[tuple[str, str], SecurityPackage] = {}
    for paragraph in Packages.iter_paragraphs(io.BytesIO(packages_text), use_apt_pkg=False):
        key = (str(paragraph["Package"]), str(paragraph["Architecture"]))
        version = str(paragraph["Version"])
        source = _SOURCE.match(str(paragraph.get("Source") or paragraph["Package"]))
        entry = SecurityPackage(
            version,
            source["name"] if source else str(paragraph["Package"]),
            (source["version"] if source else None) or version,
        )
        if key not in best or Version(version) > Version(best[key].version):
            best[key] = entry
    return best


@dataclass(frozen=True)
class SecurityUpdate:
    """A locked package the security suite has a newer version of."""

    package: str
    arch: str
    locked: str
    security: str
    source: str
    source_version: str

    def to_json(self) -> dict[str, str]:
        return {
            "package": self.package,
            "arch": self.arch,
            "locked": self.locked,
            "security": self.security,
            "source": self.source,
            "source_version": self.source_version,
        }


@dataclass(frozen=True)
class BaseStatus:
    """The security status of one base lock against its suite (or why it could not be determined)."""

    node: str
    suite: str
    status: str  # ok | frozen | unavailable | not-applicable
    locked: int = 0
    in_suite: int = 0
    same: int = 0
    older: int = 0
    updates: tuple[SecurityUpdate, ...] = ()
    release: ReleaseInfo | None = None
    reason: str = ""

    def describe(self) -> str:
        """One line a person reads first."""
        if self.status in (UNAVAILABLE, NOT_APPLICABLE):
            return f"{self.suite or self.node}: {self.status}: {self.reason}"
        line = (
            f"{self.suite}: {len(self.updates)} of {self.locked} locked packages have a newer security version "
            f"({self.in_suite} in the suite, {self.same} up to date, {self.older} fixed in a point release)"
        )
        if self.status == FROZEN:
            date = self.release.date if self.release else "?"
            line += (
                f"; the suite is frozen (no Valid-Until, last {date}): no newer version no longer means safe"
            )
        return line

    def to_json(self) -> dict[str, Any]:
        release = self.release
        return {
            "node": self.node,
            "suite": self.suite,
            "status": self.status,
            "summary": self.describe(),
            "locked": self.locked,
            "in_suite": self.in_suite,
            "up_to_date": self.same,
            "older_in_suite": self.older,
            "updates": [u.to_json() for u in self.updates],
            "release": None
            if release is None
            else {
                "date": release.date,
                "valid_until": release.valid_until,
                "signed_by": release.signed_by,
                "frozen": release.frozen,
            },
            "reason": self.reason,
        }


def base_status(lock: Lock, suite: str, release: ReleaseInfo, packages_text: bytes) -> BaseStatus:
    """Compare the Debian packages of a base lock with the security suite `suite`."""
    versions = security_versions(packages_text)
    updates: list[SecurityUpdate] = []
    same = older = 0
    for deb in lock.debs:
        found = versions.get((deb.name, deb.arch))
        if found is None:
            continue
        order = Version(found.version)
        if order > Version(deb.version):
            updates.append(
                SecurityUpdate(
                    deb.name, deb.arch, deb.version, found.version, found.source, found.source_version
                )
            )
        elif order == Version(deb.version):
            same += 1
        else:
            older += 1
    return BaseStatus(
        node=lock.node,
        suite=suite,
        status=FROZEN if release.frozen else OK,
        locked=len(lock.debs),
        in_suite=len(updates) + same + older,
        same=same,
        older=older,
        updates=tuple(sorted(updates, key=lambda u: (u.package, u.arch))),
        release=release,
    )


def index_arch(lock: Lock) -> str:
    """The architecture whose Packages index holds the lock's packages (`all` ones are listed in every one)."""
    arches = sorted({d.arch for d in lock.debs if d.arch != "all"})
    return arches[0] if arches else "amd64"

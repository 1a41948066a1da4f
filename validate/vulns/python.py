"""pip-audit over the wheel lock of each node: offline against an OSV advisory file, or online (PyPI or OSV).

pip-audit reads the lock's wheels as a hashed requirements file (`--require-hashes`, no pip, no resolution) and
asks a vulnerability service about each `name==version`. Offline, the service is `AdvisoryFileService`, which
answers from an advisory file (osv.py) and never touches the network. Online, pip-audit's own PyPI or OSV service
is used; a package the service cannot answer for (PyPI's per-release JSON is 404 from some networks, OSV's host may
not resolve) is reported as not audited, and the node's status says so: never "no known vulnerabilities" for a
package nobody checked.

pip-audit has no stable Python API: `pip_audit._audit`, `._dependency_source` and `._service` are private, so the
project pins pip-audit exactly (pyproject.toml); this module is the only one that imports them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from packaging.version import InvalidVersion, Version
from pip_audit import __version__ as PIP_AUDIT_VERSION
from pip_audit._audit import Auditor
from pip_audit._dependency_source import RequirementSource
from pip_audit._dependency_source.interface import DependencySourceError
from pip_audit._service import OsvService, PyPIService, ServiceError
from pip_audit._service.interface import (
    Dependency,
    ResolvedDependency,
    VulnerabilityResult,
    VulnerabilityService,
)

from builder.errors import StrataError
from builder.plan.lockfile import Lock
from validate.vulns.osv import AdvisoryFile, matches

OFFLINE = "offline"
ONLINE = "online"
# A node's audit status: every package answered / some not / none (the source could not be used).
COMPLETE = "complete"
PARTIAL = "partial"
UNAVAILABLE = "unavailable"


class AuditError(StrataError):
    """The audit itself could not run (an unreadable lock); an unavailable service is a status, not this."""


@dataclass(frozen=True)
class Source:
    """Where vulnerability data came from: an advisory file (offline) or a service (online)."""

    mode: str  # offline | online
    service: str  # advisory-file | pypi | osv
    detail: str  # the file and its sha256, or the service URL

    def to_json(self) -> dict[str, str]:
        return {
            "mode": self.mode,
            "service": self.service,
            "detail": self.detail,
            "tool": f"pip-audit {PIP_AUDIT_VERSION}",
        }

    def describe(self) -> str:
        where = "offline, advisory file" if self.mode == OFFLINE else f"online, {self.service}"
        return f"{where} {self.detail}"


def file_source(advisories: AdvisoryFile) -> Source:
    detail = f"{advisories.path} sha256:{advisories.sha256} ({len(advisories.records)} records)"
    return Source(OFFLINE, "advisory-file", detail)


@dataclass(frozen=True)
class Finding:
    """A vulnerability of one locked wheel."""

    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fixed: tuple[str, ...]
    description: str

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "id": self.id,
            "aliases": list(self.aliases),
            "fix_versions": list(self.fixed),
            "description": self.description,
        }


@dataclass(frozen=True)
class NodeAudit:
    """The audit of one node's wheel lock: what was checked, what was not and why, what was found."""

    node: str
    source: Source
    packages: int
    findings: tuple[Finding, ...] = ()
    not_audited: tuple[tuple[str, str], ...] = ()  # (package==version, reason)
    error: str = ""  # the service failed as a whole

    @property
    def status(self) -> str:
        if self.error or (self.packages and len(self.not_audited) == self.packages):
            return UNAVAILABLE
        return PARTIAL if self.not_audited else COMPLETE

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "source": self.source.to_json(),
            "status": self.status,
            "packages": self.packages,
            "audited": self.packages - len(self.not_audited) if not self.error else 0,
            "findings": [f.to_json() for f in self.findings],
            "not_audited": [{"package": p, "reason": r} for p, r in self.not_audited],
            "error": self.error,
        }


class AdvisoryFileService(VulnerabilityService):
    """A pip-audit vulnerability service answering from an OSV advisory file: no network."""

    def __init__(self, advisories: AdvisoryFile) -> None:
        self.advisories = advisories

    def query(self, spec: Dependency) -> tuple[Dependency, list[VulnerabilityResult]]:
        if spec.is_skipped() or not isinstance(spec, ResolvedDependency):
            return spec, []
        results = []
        for match in matches(self.advisories.records, spec.canonical_name, str(spec.version)):
            fixed = []
            for text in match.fixed:
                try:
                    fixed.append(Version(text))
                except InvalidVersion:
                    continue
            results.append(
                VulnerabilityResult.create(
                    ids=[match.id, *match.aliases],
                    description=match.summary or "no summary",
                    fix_versions=sorted(fixed),
                    published=self._parse_rfc3339(match.published),
                )
            )
        return spec, results


def online_service(
    name: str, cache_dir: Path, timeout: int = 15, osv_url: str | None = None
) -> tuple[VulnerabilityService, Source]:
    """pip-audit's own service `name` (pypi or osv; `osv_url` points OSV at a mirror), caching under `cache_dir`."""
    if name == "pypi":
        return PyPIService(cache_dir=cache_dir, timeout=timeout), Source(
            ONLINE, "pypi", "https://pypi.org/pypi/<name>/<version>/json"
        )
    if name == "osv":
        url = osv_url or OsvService.DEFAULT_OSV_URL
        return OsvService(cache_dir=cache_dir, timeout=timeout, osv_url=url), Source(ONLINE, "osv", url)
    raise AuditError(f"unknown vulnerability service {name!r} (pypi, osv)")


def requirement_lines(lock: Lock) -> str:
    """The lock's wheels as a hashed requirements file pip-audit reads (one `name==version --hash=...` each)."""
    return "".join(f"{w.name}=={w.version} --hash=sha256:{w.sha256}\n" for w in lock.wheels)


def audit_lock(lock: Lock, service: VulnerabilityService, source: Source) -> NodeAudit:
    """Audit the wheels of one node's lock with `service`."""
    if not lock.wheels:
        return NodeAudit(lock.node, source, 0)
    with tempfile.TemporaryDirectory(prefix="strata-audit-") as scratch:
        requirements = Path(scratch) / f"{lock.node}.txt"
        requirements.write_text(requirement_lines(lock), encoding="utf-8")
        dependencies = RequirementSource([requirements], require_hashes=True, disable_pip=True, no_deps=True)
        try:
            results = list(Auditor(service).audit(dependencies))
        except DependencySourceError as exc:
            raise AuditError(f"node {lock.node}: pip-audit cannot read its wheels ({exc})") from None
        except (ServiceError, requests.RequestException) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return NodeAudit(lock.node, source, len(lock.wheels), error=f"{source.service}: {reason[:200]}")
    return _node_audit(lock, source, results)


def _node_audit(
    lock: Lock, source: Source, results: Iterable[tuple[Dependency, list[VulnerabilityResult]]]
) -> NodeAudit:
    findings: list[Finding] = []
    skipped: list[tuple[str, str]] = []
    for dependency, vulns in results:
        if dependency.is_skipped() or not isinstance(dependency, ResolvedDependency):
            reason = getattr(dependency, "skip_reason", "") or "skipped"
            skipped.append((dependency.name, reason))
            continue
        for vuln in vulns:
            findings.append(
                Finding(
                    dependency.canonical_name,
                    str(dependency.version),
                    vuln.id,
                    tuple(sorted(vuln.aliases)),
                    tuple(str(v) for v in vuln.fix_versions),
                    vuln.description.replace("\n", " ")[:300],
                )
            )
    findings.sort(key=lambda f: (f.package, f.id))
    return NodeAudit(lock.node, source, len(lock.wheels), tuple(findings), tuple(sorted(skipped)))


@dataclass
class NodeAudits:
    """Audits each node once with one service (images share their ancestors' nodes)."""

    service: VulnerabilityService
    source: Source
    done: dict[str, NodeAudit] = field(default_factory=dict)

    def node(self, lock: Lock) -> NodeAudit:
        if lock.node not in self.done:
            self.done[lock.node] = audit_lock(lock, self.service, self.source)
        return self.done[lock.node]

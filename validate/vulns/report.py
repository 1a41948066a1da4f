"""One vulnerability report per image: the pip-audit results of every node of its chain that has wheels, and the
Debian security status of its base, with the source of each and a one-line summary that is never silently empty.

`vulnerabilities.json` (written next to the image's SBOM by `strata audit`) is this report's `to_json()`:

    {"reference": ..., "digest": ..., "node": ...,
     "summary": {"python": {"status": "complete|partial|unavailable|none", "findings": N, "packages": N,
                            "not_audited": N, "source": "offline, advisory file ... | online, pypi ..."},
                 "debian": {"status": "ok|frozen|unavailable|not-applicable", "updates": N, "suite": ...},
                 "complete": bool, "lines": ["Python: ...", "Debian: ..."]},
     "python": [<NodeAudit>...], "debian": [<BaseStatus>...]}

`complete` is true only when every package was checked by an available source and the base's suite could be read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from builder.plan.graph import LayerNode
from validate.vulns.debian import FROZEN, NOT_APPLICABLE, OK, BaseStatus
from validate.vulns.python import COMPLETE, PARTIAL, UNAVAILABLE, NodeAudit, Source

NONE = "none"  # the image has no wheels of its own or its ancestors'


@dataclass(frozen=True)
class ImageReport:
    reference: str
    digest: str
    node: str
    source: Source
    python: tuple[NodeAudit, ...]
    debian: tuple[BaseStatus, ...]

    @property
    def python_status(self) -> str:
        statuses = {a.status for a in self.python if a.packages}
        if not statuses:
            return NONE
        if statuses == {COMPLETE}:
            return COMPLETE
        return UNAVAILABLE if statuses == {UNAVAILABLE} else PARTIAL

    @property
    def debian_status(self) -> str:
        statuses = [s.status for s in self.debian]
        for status in ("unavailable", FROZEN, OK):
            if status in statuses:
                return status
        return NOT_APPLICABLE

    @property
    def findings(self) -> int:
        return len({(f.package, f.version, f.id) for a in self.python for f in a.findings})

    @property
    def complete(self) -> bool:
        return self.python_status in (COMPLETE, NONE) and self.debian_status in (OK, FROZEN, NOT_APPLICABLE)

    def lines(self) -> list[str]:
        """What a person reads: one line for the wheels, one per base."""
        packages = sum(a.packages for a in self.python)
        unchecked = sum(a.packages if a.error else len(a.not_audited) for a in self.python)
        status = self.python_status
        if status == NONE:
            python = "Python: no locked wheels in this image"
        elif status == UNAVAILABLE:
            reason = next(
                (a.error or a.not_audited[0][1] for a in self.python if a.status == UNAVAILABLE), ""
            )
            python = f"Python: NOT AUDITED, {self.source.service} could not answer for any of {packages} wheels ({reason})"
        else:
            noun = "vulnerability" if self.findings == 1 else "vulnerabilities"
            python = f"Python: {self.findings} known {noun} in {packages} wheels ({self.source.describe()})"
            if unchecked:
                python += f"; {unchecked} wheels NOT AUDITED (the source could not answer for them)"
        debian = [f"Debian: {s.describe()}" for s in self.debian] or ["Debian: no locked Debian packages"]
        return [python, *debian]

    def to_json(self) -> dict[str, Any]:
        packages = sum(a.packages for a in self.python)
        return {
            "reference": self.reference,
            "digest": self.digest,
            "node": self.node,
            "summary": {
                "python": {
                    "status": self.python_status,
                    "findings": self.findings,
                    "packages": packages,
                    "not_audited": sum(a.packages if a.error else len(a.not_audited) for a in self.python),
                    "source": self.source.describe(),
                },
                "debian": {
                    "status": self.debian_status,
                    "updates": sum(len(s.updates) for s in self.debian),
                    "suites": [s.suite for s in self.debian],
                },
                "complete": self.complete,
                "lines": self.lines(),
            },
            "python": [a.to_json() for a in self.python],
            "debian": [s.to_json() for s in self.debian],
        }


def image_report(
    reference: str,
    digest: str,
    chain: Sequence[LayerNode],
    source: Source,
    audit: Callable[[LayerNode], NodeAudit | None],
    debian: Callable[[LayerNode], BaseStatus | None],
) -> ImageReport:
    """The report of the image whose node and ancestors are `chain` (root first); `audit` and `debian` give a
    node's results (None for a node they do not apply to) and are expected to remember them across images."""
    audits = tuple(a for a in (audit(n) for n in chain) if a is not None)
    bases = tuple(s for s in (debian(n) for n in chain) if s is not None)
    return ImageReport(reference, digest, chain[-1].id, source, audits, bases)

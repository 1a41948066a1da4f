"""What every smoke check reports: a `CheckResult` (pass, fail with evidence, or not-run with a reason).

Runs inside images (stdlib only, Python 3.9+), copied beside `checks.py` and `gpu_checks.py`; the host reads the
same type back from the container's output.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PASS = "pass"
FAIL = "fail"
NOT_RUN = "not-run"
STATUSES = (PASS, FAIL, NOT_RUN)

PLAN_MARKER = "STRATA-SMOKE-PLAN "
RESULT_MARKER = "STRATA-SMOKE-RESULT "


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict. A failure carries evidence: what was expected and what was found."""

    name: str
    status: str
    detail: str = ""
    expected: str | None = None
    found: str | None = None

    @classmethod
    def passed(cls, name: str, detail: str = "", found: str | None = None) -> CheckResult:
        return cls(name, PASS, detail, None, found)

    @classmethod
    def failed(cls, name: str, expected: str, found: str, detail: str = "") -> CheckResult:
        """A failure; `detail` defaults to `expected X, found Y` so every failure reads the same way."""
        return cls(name, FAIL, detail or f"expected {expected}, found {found}", expected, found)

    @classmethod
    def not_run(cls, name: str, reason: str) -> CheckResult:
        return cls(name, NOT_RUN, reason)

    def summary(self) -> str:
        """`pass`, `fail: <evidence>` or `not-run: <reason>`, as reports print it."""
        return self.status + (": " + self.detail if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "expected": self.expected,
            "found": self.found,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        status = str(data["status"])
        if status not in STATUSES:
            raise ValueError("check {!r} has unknown status {!r}".format(data.get("name"), status))
        return cls(
            str(data["name"]),
            status,
            str(data.get("detail") or ""),
            data.get("expected"),
            data.get("found"),
        )


def run_guarded(names: tuple[str, ...], fn: Callable[[], list[CheckResult]]) -> list[CheckResult]:
    """Run a check; an exception fails every name it owns, with the exception as evidence."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a crashing check is a failing check, never a silent one
        tail = traceback.format_exc().strip().splitlines()[-1]
        return [CheckResult.failed(n, "check completes", f"raised {tail or exc}") for n in names]

"""Smoke results stored per image digest, so promotion can require a passing run of the exact image.

The digest is the image ID (the config digest `docker inspect` shows), which stays the same when the image is
pushed; the registry manifest digests known at run time are recorded as `repo_digests`.

Layout under a results directory (`settings.smoke_results_dir`: `<state root>/results/smoke/`):

    sha256:<hex>.json   the ImageReport of the latest run of that image
    sha256:<hex>.log    the container's full log of that run
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import StrataError
from validate.smoke.check_result import FAIL, NOT_RUN, PASS, CheckResult

SCHEMA = 1
DIGEST_RE = re.compile(r"^[a-z0-9]+:[a-f0-9]{32,128}$")


@dataclass
class ImageReport:
    """Every check of one image in one run. `status` is `fail` when any check failed."""

    image: str
    digest: str
    checks: list[CheckResult]
    labels: dict[str, str] = field(default_factory=dict)
    repo_digests: list[str] = field(default_factory=list)
    expect_gpu: bool = False
    gpus: str | None = None
    duration_s: float = 0.0
    started: str = ""
    log: str = ""
    log_path: str | None = None

    @property
    def status(self) -> str:
        return FAIL if self.failures else PASS

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def not_run(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == NOT_RUN]

    def check(self, name: str) -> CheckResult:
        """The check called `name`; KeyError names the checks there are."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"{self.image} has no check {name!r}; it has {[c.name for c in self.checks]}")

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in (PASS, FAIL, NOT_RUN)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "image": self.image,
            "digest": self.digest,
            "status": self.status,
            "counts": self.counts(),
            "expect_gpu": self.expect_gpu,
            "gpus": self.gpus,
            "started": self.started,
            "duration_s": round(self.duration_s, 3),
            "labels": self.labels,
            "repo_digests": self.repo_digests,
            "log_path": self.log_path,
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageReport:
        return cls(
            image=data["image"],
            digest=data["digest"],
            checks=[CheckResult.from_dict(c) for c in data["checks"]],
            labels=dict(data.get("labels") or {}),
            repo_digests=list(data.get("repo_digests") or []),
            expect_gpu=bool(data.get("expect_gpu")),
            gpus=data.get("gpus"),
            duration_s=float(data.get("duration_s") or 0.0),
            started=data.get("started") or "",
            log_path=data.get("log_path"),
        )


def result_path(results_dir: Path, digest: str) -> Path:
    """Where the result of `digest` lives: `<results_dir>/<digest>.json`."""
    if not DIGEST_RE.match(digest):
        raise StrataError(f"smoke results: {digest!r} is not an image digest like sha256:<hex>")
    return results_dir / (digest + ".json")


def save_report(results_dir: Path, report: ImageReport) -> Path:
    """Write the report and its full log atomically; returns the JSON path."""
    path = result_path(results_dir, report.digest)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        log_path = path.with_suffix(".log")
        _write_atomic(log_path, report.log)
        report.log_path = str(log_path)
        _write_atomic(path, json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise StrataError(f"smoke results: cannot write {path}: {exc.strerror}") from exc
    return path


def load_report(results_dir: Path, digest: str) -> ImageReport | None:
    """The stored report of `digest`, or None when that image was never smoke-tested here."""
    path = result_path(results_dir, digest)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StrataError(f"smoke results: {path} is unreadable: {exc}") from exc
    report = ImageReport.from_dict(data)
    if report.log_path and Path(report.log_path).exists():
        report.log = Path(report.log_path).read_text(errors="replace")
    return report


def require_pass(results_dir: Path, digest: str, expect_gpu: bool = False) -> ImageReport:
    """For promotion: the stored report if it passed (under --expect-gpu when asked), else StrataError."""
    report = load_report(results_dir, digest)
    if report is None:
        raise StrataError(f"{digest}: no smoke result in {results_dir}; run `strata smoke` first")
    if report.status != PASS:
        names = ", ".join(c.name for c in report.failures)
        raise StrataError(f"{report.image} ({digest}): smoke failed: {names}")
    if expect_gpu and not report.expect_gpu:
        raise StrataError(f"{report.image} ({digest}): smoke passed without --expect-gpu")
    return report


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)

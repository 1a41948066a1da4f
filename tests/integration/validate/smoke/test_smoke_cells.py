"""The cpu cells of the default matrix, as `strata build` makes them, pass every check that can run on this host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine


def test_cpu_cells_pass_cpu_checks_and_say_what_did_not_run(
    run_strata, cpu_cells_built: dict[str, str], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    refs = sorted(cpu_cells_built.values())
    proc = run_strata("smoke", *refs, "--format", "json", "--results-dir", str(tmp_path), "--timeout", "900")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    reports = json.loads(proc.stdout)["images"]
    reports = reports if isinstance(reports, list) else reports.get("images", reports)
    assert len(reports) == 2
    for report in reports:
        checks = {c["name"]: c for c in report["checks"]}
        for name in (
            "tf-import",
            "tf-version",
            "python-version",
            "pip-check",
            "user-uid",
            "workdir-writable",
            "keras-train-cpu",
            "secrets:private-key",
            "secrets:host-ca-bundle",
        ):
            assert checks[name]["status"] == "pass", checks[name]
        not_run = [c for c in checks.values() if c["status"] == "not-run"]
        assert not_run and all(c.get("detail") or c.get("reason") for c in not_run)
    assert len(list(tmp_path.glob("sha256:*.json"))) == 2

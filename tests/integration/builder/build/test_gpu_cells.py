"""The gpu cells (several GB of CUDA libraries each): opt-in with `pytest -m full`.

They build on this GPU-less machine; the smoke run checks everything that needs no device (TF is a CUDA build whose
versions match the labels, every CUDA library TF loads resolves and loads, ptxas/libdevice are present) and reports the
device checks as not-run; `--expect-gpu` on a GPU host turns those into hard requirements.
"""

from __future__ import annotations

import json

import pytest

from builder.plan.graph import Plan

pytestmark = [pytest.mark.full, pytest.mark.engine]


@pytest.fixture(scope="module")
def gpu_cells_built(run_strata, default_plan: Plan) -> dict[str, str]:  # type: ignore[no-untyped-def]
    proc = run_strata("build", "--only", "*-gpu", "--format", "json", timeout=4 * 3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plan = default_plan.select(["*-gpu"])
    return {cell: plan.final_node(cell).tags[0] for cell in plan.cell_ids()}


def test_gpu_cells_pass_every_check_that_needs_no_device(
    run_strata, gpu_cells_built: dict[str, str], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    proc = run_strata(
        "smoke", *sorted(gpu_cells_built.values()), "--format", "json", "--results-dir", str(tmp_path)
    )
    reports = json.loads(proc.stdout)["images"]
    for report in reports:
        checks = {c["name"]: c for c in report["checks"]}
        assert checks["tf-build-cuda"]["status"] == "pass", checks["tf-build-cuda"]
        loads = [c for name, c in checks.items() if name.startswith("cuda-lib:")]
        assert len(loads) >= 8 and all(c["status"] == "pass" for c in loads), loads
        for name in ("cuda-wheels", "xla-gpu-tools", "tf-version"):
            assert checks[name]["status"] == "pass", checks[name]
        assert all(c["status"] == "not-run" for name, c in checks.items() if name.startswith("gpu-"))
    proc = run_strata(
        "smoke", *sorted(gpu_cells_built.values()), "--expect-gpu", "--results-dir", str(tmp_path)
    )
    assert proc.returncode == 1, "with --expect-gpu a GPU-less host must fail, never pass silently"


def test_gpu_cells_reproduce(run_strata, gpu_cells_built: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    proc = run_strata("verify", "--only", "*-gpu", "--format", "json", timeout=6 * 3600)
    nodes = json.loads(proc.stdout)["nodes"]
    assert all(n["reproducible"] for n in nodes), [
        (n["id"], n["differences"][:5]) for n in nodes if not n["reproducible"]
    ]

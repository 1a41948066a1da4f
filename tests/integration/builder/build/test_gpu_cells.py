"""The gpu cells (several GB of CUDA libraries each): opt-in with `pytest -m full`.

They build on this GPU-less machine; the smoke run checks everything that needs no device (TF is a CUDA build whose
versions match the labels, every CUDA library TF loads resolves and loads, ptxas/libdevice are present) and reports the
device checks as not-run; `--expect-gpu` on a GPU host turns those into hard requirements.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import docker
import docker.errors
import pytest

from builder.matrix import compat
from builder.matrix.load import load_matrix
from builder.plan.graph import Plan, build_plan
from validate.smoke.checks import cuda_sonames
from validate.smoke.runner import SmokeOptions, smoke_image

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
        # TF 2.10's profiler asks for CUDA 11.2's CUPTI, which the 11.8 wheels lack: that one may be not-run.
        required = [c for c in loads if not (c["name"] == "cuda-lib:libcupti" and c["status"] == "not-run")]
        assert len(required) >= 14 and all(c["status"] == "pass" for c in required), loads
        for name in ("pruned-absent", "cuda-driver-requirement"):
            assert checks[name]["status"] == "pass", checks[name]
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


# Official tensorflow/tensorflow:2.13.0-gpu, uncompressed as `docker images` shows it (6.52 GB): the hermetic 2.13
# GPU framework image must be at most 4.6 GB and at most 0.7 of it.
OFFICIAL_213_GPU_BYTES = 6_520_000_000


def test_gpu_images_keep_within_their_budgets_and_the_213_target(
    engine: docker.DockerClient, gpu_cells_built: dict[str, str], default_plan: Plan
) -> None:
    plan = default_plan.select(["*-gpu"])
    sizes = {n.id: int(engine.images.get(n.cache_ref).attrs["Size"]) for n in plan.nodes}
    for n in plan.nodes:
        assert n.budget is not None and sizes[n.id] <= n.budget.max_bytes, (n.id, sizes[n.id], n.budget)
    framework = sizes["tf2.13.1-gpu-py3.11"]
    assert framework <= 4_600_000_000 and framework <= 0.7 * OFFICIAL_213_GPU_BYTES, framework
    # The cuda layer lost what TensorFlow never loads: well under the 3.50 GB it held unpruned.
    assert sizes["cuda11.8-bookworm"] < 3_000_000_000, sizes["cuda11.8-bookworm"]


@pytest.mark.parametrize("cell", ["tf2.13.1-gpu", "tf2.10.1-gpu"])
def test_tf_libraries_load_with_the_pruned_ones_absent_and_the_driver_requirement_is_the_plans(
    engine: docker.DockerClient, gpu_cells_built: dict[str, str], default_plan: Plan, cell: str
) -> None:
    """dlopen of every soname TF dlopens (no GPU needed), the pruned files gone, NVIDIA_REQUIRE_CUDA and the
    io.strata.min-driver label equal to the plan's minimum driver."""
    matrix_cell = default_plan.matrix.cell(cell)
    plan_min_driver = compat.TF_RULES[matrix_cell.tf_minor].min_driver
    options = SmokeOptions(scan_secrets=False, plan_min_driver=plan_min_driver)
    report = smoke_image(engine, gpu_cells_built[cell], options)
    checks = {c.name: c for c in report.checks}
    for lib in cuda_sonames(matrix_cell.cuda or "", matrix_cell.cudnn or "", matrix_cell.tf):
        result = checks["cuda-lib:" + lib.short]
        assert result.status == ("pass" if lib.required else result.status), result
        if lib.required:
            assert "/opt/strata/cuda/" in (result.found or ""), result
    assert checks["pruned-absent"].status == "pass", checks["pruned-absent"]
    assert "(cuda, framework)" in checks["pruned-absent"].detail
    assert checks["cuda-driver-requirement"].status == "pass", checks["cuda-driver-requirement"]
    assert checks["tf-import"].status == "pass", checks["tf-import"]
    labels = engine.images.get(gpu_cells_built[cell]).labels
    env = dict(e.split("=", 1) for e in engine.images.get(gpu_cells_built[cell]).attrs["Config"]["Env"])
    assert labels["io.strata.min-driver"] == plan_min_driver
    assert env["NVIDIA_REQUIRE_CUDA"] == f"cuda>={matrix_cell.cuda} driver>={plan_min_driver}"


def test_a_node_over_its_budget_fails_the_build_in_one_line_and_keeps_no_tag(  # type: ignore[no-untyped-def]
    run_strata, repo: Path, engine: docker.DockerClient, default_plan: Plan, tmp_path: Path
) -> None:
    """A copy of the matrix whose cuda layer prunes one file less (so its node has a new content hash and must be
    built) and whose budget for it is 1 MB: the build fails naming node, size and budget; neither the new
    content tag nor the version tag is left on the oversized image, and the real cuda image keeps its tags."""
    for name in ("layers", "locks"):
        shutil.copytree(repo / name, tmp_path / name)
    text = (repo / "matrix.yaml").read_text()
    text = text.replace("          - nvidia/cublas/lib/libnvblas.so.11\n", "", 1)
    text = text.replace("budgets:\n", 'budgets:\n  - {nodes: "cuda11.8-bookworm", max_bytes: 1000000}\n', 1)
    (tmp_path / "matrix.yaml").write_text(text)
    node = build_plan(load_matrix(tmp_path / "matrix.yaml")).node("cuda11.8-bookworm")
    real = default_plan.node("cuda11.8-bookworm")
    assert node.content_hash != real.content_hash and node.tags == real.tags
    try:
        real_id: str | None = engine.images.get(real.cache_ref).id
    except docker.errors.ImageNotFound:
        real_id = None  # the real cuda image is not built here: nothing of it to keep
    proc = run_strata(
        "build",
        "-f",
        str(tmp_path / "matrix.yaml"),
        "--only",
        "cuda11.8-bookworm",
        "--quiet",
        env={"STRATA_REGISTRY_CACHE": "off"},
        timeout=3600,
    )
    assert proc.returncode != 0, proc.stdout[-2000:]
    out = proc.stdout + proc.stderr
    line = re.search(
        r"node cuda11\.8-bookworm: image is [0-9.]+ GB \([0-9]+ bytes\), over its budget of 1\.00 MB"
        r" \(1000000 bytes, [^)]*matrix\.yaml:[0-9]+:[0-9]+\)",
        out,
    )
    assert line, out[-3000:]
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(node.cache_ref)
    if real_id is not None:  # the version tag still names the real image
        assert engine.images.get(real.tags[0]).id == real_id

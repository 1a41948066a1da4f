"""Pure pieces of the in-image checks, and the check script itself run on the host's Python."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from validate.smoke import checks
from validate.smoke.check_result import FAIL, NOT_RUN, PASS, CheckResult
from validate.smoke.checks import (
    Session,
    SmokeContext,
    check_claims,
    labels_match_tag,
    parse_tag,
    versions_agree,
)

SMOKE_DIR = Path(checks.__file__).parent
GPU_TAG = "127.0.0.1:5000/strata/tensorflow:2.13.1-gpu-cuda11.8-cudnn8.6-py3.11-bookworm"
GOOD_LABELS = {
    "io.strata.tf": "2.13.1",
    "io.strata.python": "3.11",
    "io.strata.flavor": "gpu",
    "io.strata.cuda": "11.8",
    "io.strata.cudnn": "8.6",
    "io.strata.layer": "user",
    "io.strata.cell": "tf2.13.1-gpu",
    "io.strata.content-hash": "sha256:00",
}


def test_parse_tag_reads_every_fact_and_ignores_registry_port() -> None:
    assert parse_tag(GPU_TAG) == {
        "tf": "2.13.1",
        "flavor": "gpu",
        "cuda": "11.8",
        "cudnn": "8.6",
        "python": "3.11",
        "os": "bookworm",
    }
    assert parse_tag("127.0.0.1:5000/strata/tensorflow") == {}
    assert parse_tag("strata/tensorflow:2.10.1-cpu-py3.9-bullseye") == {
        "tf": "2.10.1",
        "flavor": "cpu",
        "python": "3.9",
        "os": "bullseye",
    }


@pytest.mark.parametrize(
    ("claimed", "found", "agree"),
    [
        ("8.6", "8", True),  # build info only knows the cuDNN major
        ("8.6", "8.6.0", True),
        ("8.6", "8.9.2", False),
        ("11.8", "64_118", True),  # Windows-style build number
        ("11.2", "11.8", False),
        ("2.13.1", "2.13.0", False),
        ("", "1", False),
    ],
)
def test_versions_agree_compares_the_components_both_spell(claimed: str, found: str, agree: bool) -> None:
    assert versions_agree(claimed, found) is agree


def test_check_claims_names_each_disagreeing_source_as_evidence() -> None:
    result = check_claims(
        "tf-version", "2.13.1", {"label io.strata.tf": "2.12.0", "tag": "2.13.1"}, exact=True
    )
    assert result.status == FAIL
    assert result.expected == "2.12.0 (label io.strata.tf)"
    assert result.found == "2.13.1"
    assert result.detail == "expected 2.12.0 (label io.strata.tf), found 2.13.1"
    ok = check_claims("tf-version", "2.13.1", {"label io.strata.tf": "2.13.1", "tag": "2.13.1"}, exact=True)
    assert ok.status == PASS
    nothing = check_claims("tf-version", "2.13.1", {})
    assert nothing.status == NOT_RUN and "2.13.1" in nothing.detail


def test_labels_match_tag_fails_on_a_label_the_tag_contradicts() -> None:
    present, match = labels_match_tag(dict(GOOD_LABELS, **{"io.strata.cudnn": "8.9"}), GPU_TAG)
    assert present.status == PASS
    assert match.status == FAIL
    assert match.expected == "cudnn=8.6 (tag)" and match.found == "io.strata.cudnn=8.9"
    assert [r.status for r in labels_match_tag(GOOD_LABELS, GPU_TAG)] == [PASS, PASS]


def test_labels_present_lists_missing_labels() -> None:
    present, _ = labels_match_tag({"io.strata.tf": "2.13.1"}, GPU_TAG)
    assert present.status == FAIL
    assert "io.strata.python" in (present.expected or "") and "io.strata.layer" in (present.expected or "")


def test_library_version_decoding() -> None:
    assert checks.decode_cudart_version(11080) == "11.8"
    assert checks.decode_cudart_version(12020) == "12.2"
    assert checks.decode_cudnn_version(8600) == "8.6.0"
    assert checks.decode_cudnn_version(8907) == "8.9.7"
    assert checks.decode_cudnn_version(90100) == "9.1.0"


def test_cuda_sonames_are_what_tensorflow_dlopens_per_version() -> None:
    """Read from TF's dso_loader/dlopen checker (disassembled on the 2.10.1 and 2.13.1 wheels): eight libraries TF
    needs for any GPU, cuDNN 8's sub-libraries, CUPTI of the CUDA TF was built with; never NCCL (linked in)."""
    core = {
        "libcudart": "libcudart.so.11.0",
        "libcublasLt": "libcublasLt.so.11",
        "libcublas": "libcublas.so.11",
        "libcufft": "libcufft.so.10",
        "libcurand": "libcurand.so.10",
        "libcusolver": "libcusolver.so.11",
        "libcusparse": "libcusparse.so.11",
        "libcudnn": "libcudnn.so.8",
    }
    subs = {f"libcudnn_{s}": f"libcudnn_{s}.so.8" for s in checks.CUDNN8_SUBLIBRARIES}
    tf213 = checks.cuda_sonames("11.8", "8.6", "2.13.1")
    assert {s.short: s.soname for s in tf213} == {**core, **subs, "libcupti": "libcupti.so.11.8"}
    assert all(s.required for s in tf213)
    tf210 = {s.short: s for s in checks.cuda_sonames("11.8", "8.6", "2.10.1")}
    # TF 2.10 was built with CUDA 11.2: its profiler asks for libcupti.so.11.2, which the 11.8 wheels lack.
    assert tf210["libcupti"].soname == "libcupti.so.11.2" and not tf210["libcupti"].required
    assert {k: v.soname for k, v in tf210.items() if v.required} == {**core, **subs}
    assert not any("nccl" in s.soname for s in tf213 + list(tf210.values()))
    assert {s.short: s.soname for s in checks.cuda_sonames("12.2", "9.0")}["libcudnn"] == "libcudnn.so.9"


def test_loss_went_down_needs_finite_and_falling_losses() -> None:
    assert checks.loss_went_down([1.0, 0.5, 0.2])
    assert not checks.loss_went_down([1.0, 1.2])
    assert not checks.loss_went_down([1.0, float("nan"), 0.1])
    assert not checks.loss_went_down([0.3])


def test_promised_env_parsing_and_mismatches() -> None:
    promised = checks.parse_promised_env('{"A": "1", "B": "x"}')
    assert checks.env_mismatches(promised, {"A": "1", "B": "y"}) == [("B", "x", "y")]
    assert checks.env_mismatches(promised, {"A": "1"}) == [("B", "x", None)]
    with pytest.raises(ValueError):
        checks.parse_promised_env('["A"]')


def test_check_result_round_trip_and_unknown_status() -> None:
    result = CheckResult.failed("x", "1", "2")
    assert CheckResult.from_dict(result.to_dict()) == result
    assert result.summary() == "fail: expected 1, found 2"
    with pytest.raises(ValueError, match="unknown status"):
        CheckResult.from_dict({"name": "x", "status": "passed"})


def test_user_layer_checks_on_this_host_see_the_real_uid(tmp_path: Path) -> None:
    ctx = SmokeContext(image="i:1", labels={"io.strata.layer": "user"}, workdir=str(tmp_path))
    uid, writable = checks.check_user_layer(Session(ctx))
    if os.getuid() == 1000:
        assert uid.status == PASS
    else:
        assert uid.status == FAIL and uid.expected == "uid 1000" and uid.found == f"uid {os.getuid()}"
    assert writable.status == PASS
    framework = checks.check_user_layer(
        Session(SmokeContext(image="i:1", labels={"io.strata.layer": "cuda"}))
    )
    assert [r.status for r in framework] == [NOT_RUN, NOT_RUN]
    assert framework[0].detail == "layer is 'cuda', not 'user'"


def test_env_check_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATA_SMOKE_UNIT", "yes")
    labels = {"io.strata.env": json.dumps({"STRATA_SMOKE_UNIT": "no"})}
    (result,) = checks.check_env(Session(SmokeContext(image="i:1", labels=labels)))
    assert result.status == FAIL
    assert result.expected == "STRATA_SMOKE_UNIT=no" and result.found == "STRATA_SMOKE_UNIT=yes"


def test_cuda_library_check_really_dlopens_and_reports_the_loader_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # This host has no CUDA: every library must fail with the loader's own message, none may pass.
    monkeypatch.setenv("LD_LIBRARY_PATH", "/nonexistent-cuda/lib")
    ctx = SmokeContext(image=GPU_TAG, labels=GOOD_LABELS)
    results = checks.check_cuda_libraries(Session(ctx))
    by_name = {r.name: r for r in results}
    assert "cuda-lib:libnccl" not in by_name and "cuda-lib:libcudnn_cnn_infer" in by_name
    cudnn = by_name["cuda-lib:libcudnn"]
    assert cudnn.status == FAIL
    assert cudnn.expected == (
        "libcudnn.so.8 loadable with LD_LIBRARY_PATH=/nonexistent-cuda/lib"
        " (dlopened by TensorFlow's GPU start-up (TryDlopenCUDALibraries))"
    )
    assert "libcudnn.so.8" in (cudnn.found or "")
    assert all(r.status == FAIL for r in results)
    # A cpu image says the check did not run.
    cpu = dict(GOOD_LABELS, **{"io.strata.flavor": "cpu"})
    cpu_results = checks.check_cuda_libraries(Session(SmokeContext(image="i:1", labels=cpu)))
    assert {r.status for r in cpu_results} == {NOT_RUN}


def test_pruned_absent_passes_only_when_no_pruned_path_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "opt/strata/cuda/lib/python3.11/site-packages"
    (site / "nvidia/cusolver/lib").mkdir(parents=True)
    (site / "nvidia/cusolver/lib/libcusolver.so.11").write_bytes(b"kept")
    (site / "nvidia/cublas/include").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    patterns = ["nvidia/cusolver/lib/libcusolverMg.so.11", "nvidia/*/include"]
    labels = dict(GOOD_LABELS, **{"io.strata.pruned.cuda": json.dumps(patterns)})
    (left,) = checks.check_pruned_absent(Session(SmokeContext(image="i:1", labels=labels)))
    assert left.status == FAIL and left.found == str(site / "nvidia/cublas/include")
    (site / "nvidia/cublas/include").rmdir()
    (clean,) = checks.check_pruned_absent(Session(SmokeContext(image="i:1", labels=labels)))
    assert clean.status == PASS and "2 pruned patterns" in clean.detail
    (site / "nvidia/cusolver/lib/libcusolverMg.so.11").write_bytes(b"back")
    (again,) = checks.check_pruned_absent(Session(SmokeContext(image="i:1", labels=labels)))
    assert again.status == FAIL
    (none,) = checks.check_pruned_absent(Session(SmokeContext(image="i:1", labels=GOOD_LABELS)))
    assert none.status == NOT_RUN
    elsewhere = dict(GOOD_LABELS, **{"io.strata.pruned.framework": "[]"})
    (no_dir,) = checks.check_pruned_absent(Session(SmokeContext(image="i:1", labels=elsewhere)))
    assert no_dir.status == FAIL and "framework" in (no_dir.expected or "")


def test_driver_requirement_agrees_with_label_plan_and_cuda_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = dict(GOOD_LABELS, **{"io.strata.min-driver": "450.80.02", "io.strata.profile": "hermetic"})

    def run(env: str | None, labels: dict[str, str] = labels, plan: str | None = "450.80.02") -> CheckResult:
        if env is None:
            monkeypatch.delenv("NVIDIA_REQUIRE_CUDA", raising=False)
        else:
            monkeypatch.setenv("NVIDIA_REQUIRE_CUDA", env)
        ctx = SmokeContext(image="i:1", labels=labels, plan_min_driver=plan)
        (result,) = checks.check_driver_requirement(Session(ctx))
        return result

    assert run("cuda>=11.8 driver>=450.80.02").status == PASS
    assert run("cuda>=11.8 driver>=450.80.02", plan=None).status == PASS
    unset = run(None)
    assert unset.status == FAIL and unset.found == "NVIDIA_REQUIRE_CUDA=None"
    assert run("cuda>=11.8 driver>=470").status == FAIL
    assert run("cuda>=11.8 driver>=450.80.02", plan="470.57.02").status == FAIL
    old = dict(labels, **{"io.strata.min-driver": "418.39"})
    too_old = run("cuda>=11.8 driver>=418.39", labels=old, plan=None)
    assert too_old.status == FAIL and "450.80.02" in (too_old.expected or "")
    missing = {k: v for k, v in labels.items() if k != "io.strata.min-driver"}
    assert run(None, labels=missing).status == FAIL
    upstream = dict(missing, **{"io.strata.profile": "upstream"})
    assert run(None, labels=upstream).status == NOT_RUN
    cpu = dict(labels, **{"io.strata.flavor": "cpu"})
    assert run(None, labels=cpu).status == NOT_RUN


def test_check_files_are_python39_syntax() -> None:
    for name in ("checks.py", "gpu_checks.py", "check_result.py"):
        ast.parse((SMOKE_DIR / name).read_text(), feature_version=(3, 9))


def _python39() -> str | None:
    """A working Python 3.9 (the oldest Python an image has), from pyenv or PATH."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    candidates.append(shutil.which("python3.9") or "")
    for exe in filter(None, candidates):
        ok = subprocess.run(
            [exe, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"], capture_output=True, check=False
        )
        if ok.returncode == 0:
            return exe
    return None


def _interpreters() -> list[object]:
    py39 = _python39()
    return [
        sys.executable,
        py39
        or pytest.param("python3.9", marks=pytest.mark.skip(reason="no working Python 3.9 on this host")),
    ]


@pytest.mark.parametrize("python", _interpreters())
def test_check_script_runs_standalone_and_reports_every_planned_check(tmp_path: Path, python: str) -> None:
    # Copied alone like the runner does: no package, no host imports.
    for name in ("checks.py", "gpu_checks.py", "check_result.py"):
        shutil.copy(SMOKE_DIR / name, tmp_path / name)
    ctx = SmokeContext(
        image="x/tensorflow:2.13.1-cpu-py3.11-bookworm", labels={"io.strata.layer": "framework"}
    )
    (tmp_path / "ctx.json").write_text(ctx.to_json())
    proc = subprocess.run(
        [python, "-I", str(tmp_path / "checks.py"), str(tmp_path / "ctx.json")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line]
    assert lines[0].startswith(checks.PLAN_MARKER), proc.stderr
    planned = json.loads(lines[0][len(checks.PLAN_MARKER) :])
    results = [CheckResult.from_dict(json.loads(x[len(checks.RESULT_MARKER) :])) for x in lines[1:]]
    assert [r.name for r in results] == planned
    by_name = {r.name: r for r in results}
    has_tf = (
        subprocess.run([python, "-c", "import tensorflow"], capture_output=True, check=False).returncode == 0
    )
    if not has_tf:
        assert by_name["tf-import"].status == FAIL
        assert proc.returncode == 1
        assert by_name["gpu-visible"].summary() == "not-run: tensorflow did not import (see tf-import)"
    assert by_name["user-uid"].status == NOT_RUN


def test_xla_tools_are_found_where_xla_flags_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "cuda"
    (data_dir / "nvvm" / "libdevice").mkdir(parents=True)
    (data_dir / "nvvm" / "libdevice" / "libdevice.10.bc").write_bytes(b"BC")
    (data_dir / "bin").mkdir()
    ptxas = data_dir / "bin" / "ptxas"
    ptxas.write_text("#!/bin/sh\n")
    ptxas.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("XLA_FLAGS", f"--xla_gpu_cuda_data_dir={data_dir} --xla_gpu_autotune_level=2")
    session = Session(SmokeContext(image="i:1", labels={"io.strata.xla-gpu": "true"}))
    (found,) = checks.check_xla_gpu_tools(session)
    assert found.status == PASS
    assert found.detail == f"ptxas {ptxas}, libdevice {data_dir}/nvvm/libdevice/libdevice.10.bc"
    monkeypatch.setenv("XLA_FLAGS", f"--xla_gpu_cuda_data_dir={tmp_path / 'nothing'}")
    (missing,) = checks.check_xla_gpu_tools(session)
    if not Path("/usr/local/cuda/bin/ptxas").exists():
        assert missing.summary() == (
            "fail: expected ptxas and libdevice (io.strata.xla-gpu=true), found ptxas=missing, libdevice=missing"
        )
    unpromised = checks.check_xla_gpu_tools(
        Session(SmokeContext(image="i:1", labels={"io.strata.xla-gpu": "false"}))
    )
    assert unpromised[0].status == NOT_RUN

"""GPU checks' decisions and comparisons, which need no GPU: a GPU check never passes without running."""

from __future__ import annotations

import numpy as np
import pytest

from validate.smoke import gpu_checks
from validate.smoke.check_result import FAIL, NOT_RUN, PASS
from validate.smoke.checks import Session, SmokeContext


def test_without_gpu_checks_are_not_run_with_the_reason() -> None:
    results = gpu_checks.unrunnable(
        gpu_checks.GPU_CHECK_NAMES, gpu_checks.no_gpu_reason(None), expect_gpu=False
    )
    assert [r.name for r in results] == list(gpu_checks.GPU_CHECK_NAMES)
    assert {r.summary() for r in results} == {"not-run: no GPU visible"}


def test_with_expect_gpu_a_missing_gpu_fails_every_gpu_check() -> None:
    reason = gpu_checks.no_gpu_reason('could not select device driver "" with capabilities: [[gpu]]')
    results = gpu_checks.unrunnable(gpu_checks.GPU_CHECK_NAMES, reason, expect_gpu=True)
    assert {r.status for r in results} == {FAIL}
    assert results[0].expected == "a visible GPU (--expect-gpu)"
    assert results[0].found is not None and results[0].found.startswith("no GPU visible (the engine refused")


def test_run_gpu_checks_without_tensorflow_never_passes() -> None:
    for expect_gpu, status in ((False, NOT_RUN), (True, FAIL)):
        session = Session(SmokeContext(image="i:1", expect_gpu=expect_gpu))
        results = gpu_checks.run_gpu_checks(session)
        assert {r.status for r in results} == {status}


@pytest.mark.parametrize(
    ("visible", "gpus", "status"),
    [(2, "2", PASS), (1, "2", FAIL), (4, "all", PASS), (1, None, PASS), (0, "all", FAIL), (3, "2", FAIL)],
)
def test_gpu_count_against_request(visible: int, gpus: str | None, status: str) -> None:
    assert gpu_checks.count_outcome(visible, gpus).status == status


def test_count_failure_evidence() -> None:
    result = gpu_checks.count_outcome(1, "2")
    assert result.detail == "expected 2 GPU(s) (--gpus 2), found 1 visible"


def test_compute_capability_formatting() -> None:
    assert gpu_checks.format_capability((8, 6)) == "8.6"
    assert gpu_checks.format_capability(None) == "unknown"


def test_matmul_tolerance_accepts_tf32_noise_and_rejects_wrong_results() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((64, 32)), rng.standard_normal((32, 16))
    exact = a @ b
    tf32_like = exact * (1 + 5e-4 * rng.standard_normal(exact.shape))
    assert gpu_checks.matmul_outcome(tf32_like, exact).status == PASS
    wrong = exact.copy()
    wrong[3, 4] += 1.0
    failed = gpu_checks.matmul_outcome(wrong, exact)
    assert failed.status == FAIL and failed.expected == "max relative error <= 0.01 vs numpy"
    assert gpu_checks.matmul_outcome(exact[:2], exact).status == FAIL  # shape mismatch
    assert gpu_checks.matmul_outcome(exact * np.nan, exact).status == FAIL


def test_gradient_and_allreduce_judgements() -> None:
    assert gpu_checks.gradients_ok([0.1, 0.0])
    assert not gpu_checks.gradients_ok([0.0, 0.0])
    assert not gpu_checks.gradients_ok([float("inf")])
    assert not gpu_checks.gradients_ok([])
    assert gpu_checks.allreduce_outcome([3.0, 3.0], 2).status == PASS
    bad = gpu_checks.allreduce_outcome([1.0, 2.0], 2)
    assert bad.status == FAIL and bad.expected == "2 replica(s) each holding 3"


LOG = """2024-01-01 I tensorflow/core/platform/cpu_feature_guard.cc:182] This TensorFlow binary is optimized
2024-01-01 W tensorflow/stream_executor/platform/default/dso_loader.cc:64] Could not load dynamic library 'libcudnn.so.8'; dlerror: libcudnn.so.8: cannot open shared object file
2024-01-01 W tensorflow/core/common_runtime/gpu/gpu_device.cc:2211] Cannot dlopen some GPU libraries. Please make sure
2024-01-01 W ptx: TensorFlow was not built with CUDA kernel binaries compatible with compute capability 9.0.
"""


def test_log_scan_finds_each_fault_pattern() -> None:
    hits = gpu_checks.scan_log(LOG)
    assert len(hits) == 3
    assert "libcudnn.so.8" in hits[0]
    assert gpu_checks.scan_log("all fine\n") == []


def test_log_outcome_follows_the_gpu_decision() -> None:
    assert gpu_checks.log_outcome(LOG, gpu_ran=True, expect_gpu=False, reason="").status == FAIL
    assert gpu_checks.log_outcome("ok\n", gpu_ran=True, expect_gpu=False, reason="").status == PASS
    skipped = gpu_checks.log_outcome("ok\n", gpu_ran=False, expect_gpu=False, reason="no GPU visible")
    assert skipped.summary() == "not-run: no GPU visible"
    required = gpu_checks.log_outcome("ok\n", gpu_ran=False, expect_gpu=True, reason="no GPU visible")
    assert required.status == FAIL

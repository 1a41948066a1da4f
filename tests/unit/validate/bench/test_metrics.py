"""Throughput metrics: per device, per device-hour, start-up charged, compute index."""

from __future__ import annotations

import math

import pytest

from validate.bench.metrics import (
    DeviceKey,
    Repetition,
    compute_index,
    effective_gpu_hour_throughput,
    gpu_hour_throughput,
    samples_per_s_per_device,
    startup_seconds,
)


def result_doc(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "workload": "matmul",
        "size": "tiny",
        "device": "cpu",
        "samples_per_step": 8,
        "device_count": 1,
        "steady_median_step_s": 0.5,
        "step_times_s": [3.0, 1.0, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5],
        "warmup_steps": 3,
        "steady": True,
        "cold_start_s": 10.0,
        "time_to_first_step_s": 9.0,
        "env": {"cpu_model": "AMD EPYC", "gpu_model": None, "gpu_driver": None},
    }
    doc.update(overrides)
    return doc


def test_per_device_and_per_hour() -> None:
    assert samples_per_s_per_device(64, 0.5, 2) == 64.0
    assert gpu_hour_throughput(10.0) == 36000.0
    with pytest.raises(ValueError):
        samples_per_s_per_device(64, 0.0)


def test_startup_is_cold_start_plus_remaining_warmup_steps() -> None:
    # Cold start already covers step 0 (3.0 s); warm-up steps 1 and 2 add 1.6 s.
    assert startup_seconds(result_doc()) == pytest.approx(11.6)


def test_unsettled_run_is_charged_its_first_half_and_missing_cold_start_falls_back() -> None:
    doc = result_doc(warmup_steps=None, steady=False, cold_start_s=None)
    assert startup_seconds(doc) == pytest.approx(9.0 + 1.0 + 0.6 + 0.5)


def test_effective_hour_charges_startup_and_never_goes_negative() -> None:
    assert effective_gpu_hour_throughput(10.0, 360.0) == 32400.0
    assert effective_gpu_hour_throughput(10.0, 5000.0) == 0.0


def test_compute_index_is_the_geometric_mean_of_ratios_over_shared_workloads() -> None:
    index = compute_index({"a": 2.0, "b": 8.0, "only-here": 1.0}, {"a": 1.0, "b": 2.0, "only-there": 5.0})
    assert index == pytest.approx(math.sqrt(2.0 * 4.0))
    assert compute_index({"a": 3.0}, {"a": 3.0}) == 1.0
    with pytest.raises(ValueError, match="no workload"):
        compute_index({"a": 1.0}, {"b": 1.0})


def test_device_key_separates_gpu_models_and_drivers() -> None:
    cpu = DeviceKey.from_result(result_doc())
    gpu = DeviceKey.from_result(
        result_doc(device="gpu", env={"gpu_model": "NVIDIA A100", "gpu_driver": "535.1"})
    )
    assert cpu == DeviceKey("cpu", "AMD EPYC", "")
    assert gpu == DeviceKey("gpu", "NVIDIA A100", "535.1")


def test_repetition_derives_metrics_from_the_result() -> None:
    rep = Repetition.from_result(
        result_doc(),
        run_id="r",
        image="img:a",
        image_id="sha256:aa",
        repo_digest=None,
        repetition=0,
        order_index=0,
        started_at="2025-01-01T00:00:00+00:00",
    )
    assert rep.samples_per_s == 16.0
    assert rep.gpu_hour == 16.0 * 3600
    assert rep.effective_gpu_hour == pytest.approx(16.0 * (3600 - 11.6))


def test_each_step_statistic_reads_its_own_field() -> None:
    doc = result_doc(best_window_median_step_s=0.4, best_step_s=0.25)
    rep = Repetition.from_result(
        doc, run_id="r", image="img:a", image_id="sha256:aa", repo_digest=None, repetition=0,
        order_index=3, started_at="2025-01-01T00:00:00+00:00",
    )  # fmt: skip
    assert rep.throughput("median") == 16.0
    assert rep.throughput("best-window") == 20.0
    assert rep.throughput("best-step") == 32.0
    older = Repetition.from_result(
        result_doc(), run_id="r", image="img:a", image_id="sha256:aa", repo_digest=None, repetition=0,
        order_index=3, started_at="2025-01-01T00:00:00+00:00",
    )  # fmt: skip
    with pytest.raises(ValueError, match="repetition r/3 was recorded without best-step"):
        older.throughput("best-step")

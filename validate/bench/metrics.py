"""Throughput metrics from workload results: per device, per GPU-hour, cold start charged, compute index.

Pure functions over the JSON document `workloads.py` writes (one per repetition); no Docker here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SECONDS_PER_HOUR = 3600.0
# Per-repetition step-time statistic a throughput is computed from (fields of the workload result).
# "median": the steady-state median (default). "best-window": the smallest 5-step median, steadier on a
# host shared with other work. "best-step": the fastest steady step, the floor of the step time: on a VM whose
# vCPU is time-sliced by a busy hypervisor, it needs one uninterrupted step where best-window needs three of
# five. A slowdown that stretches every step shows in full in each.
STEP_STATISTICS = {
    "median": "steady_median_step_s",
    "best-window": "best_window_median_step_s",
    "best-step": "best_step_s",
}


def samples_per_s_per_device(samples_per_step: int, median_step_s: float, device_count: int = 1) -> float:
    """Steady-state throughput of one device.

    >>> samples_per_s_per_device(64, 0.5, 2)
    64.0
    """
    if median_step_s <= 0 or device_count < 1:
        raise ValueError("median step time must be positive and device count at least 1")
    return samples_per_step / median_step_s / device_count


def gpu_hour_throughput(samples_per_s: float) -> float:
    """Samples one device processes in an hour of steady state."""
    return samples_per_s * SECONDS_PER_HOUR


def effective_gpu_hour_throughput(samples_per_s: float, startup_s: float) -> float:
    """Samples in the first hour of a fresh container, charging start-up (cold start + warm-up) as idle.

    Warm-up samples are not credited: conservative, and it makes a slow-to-settle image pay for it.
    >>> effective_gpu_hour_throughput(10.0, 360.0)
    32400.0
    """
    return samples_per_s * max(0.0, SECONDS_PER_HOUR - startup_s)


def startup_seconds(result: Mapping[str, Any]) -> float:
    """Seconds from container start until steady state, from one workload result document.

    Cold start runs to the end of the first step; the remaining warm-up steps are added on top. A run
    that never settled is charged its whole first half (the part excluded from its median).
    """
    step_times: Sequence[float] = result["step_times_s"]
    cold = result.get("cold_start_s")
    if cold is None:  # run outside the runner: fall back to process start -> first step
        cold = result["time_to_first_step_s"]
    warm = result.get("warmup_steps")
    unsettled = len(step_times) // 2 if warm is None else warm
    return float(cold) + float(sum(step_times[1:unsettled]))


def compute_index(effective: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """Geometric mean over shared workloads of effective throughput relative to the reference image.

    >>> round(compute_index({"a": 2.0, "b": 8.0}, {"a": 1.0, "b": 2.0}), 6)
    2.828427
    """
    shared = sorted(set(effective) & set(reference))
    if not shared:
        raise ValueError("no workload was run on both the image and the reference")
    logs = [math.log(effective[w] / reference[w]) for w in shared]
    return math.exp(sum(logs) / len(logs))


@dataclass(frozen=True)
class DeviceKey:
    """Which hardware a number belongs to: a result is only comparable on the same device and driver."""

    device: str  # "cpu" or "gpu"
    model: str
    driver: str

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> DeviceKey:
        """The device a workload result was measured on."""
        env = result.get("env", {})
        if result["device"] == "gpu":
            return cls("gpu", env.get("gpu_model") or "unknown-gpu", env.get("gpu_driver") or "unknown")
        return cls("cpu", env.get("cpu_model") or "unknown-cpu", "")


@dataclass(frozen=True)
class Repetition:
    """One repetition (one fresh container) of one workload on one image, with its derived metrics."""

    run_id: str
    image: str  # the reference as the user gave it
    image_id: str  # sha256:... config digest, what the engine runs
    repo_digest: str | None  # registry digest when the image was pulled or pushed
    workload: str
    size: str
    device: DeviceKey
    repetition: int
    order_index: int  # position in the run's interleaved schedule
    started_at: str  # ISO 8601, UTC
    samples_per_s: float  # steady state, per device
    startup_s: float
    steady: bool
    result: Mapping[str, Any] = field(repr=False, compare=False)

    def throughput(self, statistic: str = "median") -> float:
        """Samples/s per device from the named per-repetition step-time statistic (see STEP_STATISTICS)."""
        if statistic == "median":
            return self.samples_per_s
        if statistic not in STEP_STATISTICS:
            raise ValueError(f"unknown statistic {statistic!r}; known: {', '.join(STEP_STATISTICS)}")
        r = self.result
        if STEP_STATISTICS[statistic] not in r:
            raise ValueError(f"repetition {self.run_id}/{self.order_index} was recorded without {statistic}")
        return samples_per_s_per_device(
            r["samples_per_step"], r[STEP_STATISTICS[statistic]], r["device_count"]
        )

    @property
    def gpu_hour(self) -> float:
        """Steady samples per device-hour."""
        return gpu_hour_throughput(self.samples_per_s)

    @property
    def effective_gpu_hour(self) -> float:
        """Samples in the first device-hour of a fresh container."""
        return effective_gpu_hour_throughput(self.samples_per_s, self.startup_s)

    @classmethod
    def from_result(
        cls,
        result: Mapping[str, Any],
        *,
        run_id: str,
        image: str,
        image_id: str,
        repo_digest: str | None,
        repetition: int,
        order_index: int,
        started_at: str,
    ) -> Repetition:
        """Wrap one workload result document with where and when it ran."""
        return cls(
            run_id=run_id,
            image=image,
            image_id=image_id,
            repo_digest=repo_digest,
            workload=result["workload"],
            size=result["size"],
            device=DeviceKey.from_result(result),
            repetition=repetition,
            order_index=order_index,
            started_at=started_at,
            samples_per_s=samples_per_s_per_device(
                result["samples_per_step"], result["steady_median_step_s"], result["device_count"]
            ),
            startup_s=startup_seconds(result),
            steady=bool(result["steady"]),
            result=result,
        )

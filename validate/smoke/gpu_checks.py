"""GPU smoke checks: run inside the image when a GPU is visible, and required with --expect-gpu.

Copied beside `checks.py` and `check_result.py`; stdlib only at import time (Python 3.9+). Without a visible GPU every check here is
`not-run: no GPU visible`, or a failure when the run was told to expect a GPU: a GPU check never passes
without having run. The pure pieces (decisions, comparisons, log scanning) are unit-tested on hosts with no GPU.
"""

from __future__ import annotations

import math
from typing import Any

if __package__:
    from validate.smoke.check_result import FAIL, NOT_RUN, CheckResult, run_guarded
else:  # inside an image the check files sit side by side, outside any package
    from check_result import FAIL, NOT_RUN, CheckResult, run_guarded  # type: ignore[no-redef]

GPU_CHECK_NAMES = (
    "gpu-visible",
    "gpu-count",
    "gpu-compute-capability",
    "gpu-matmul",
    "gpu-conv2d-mixed-float16",
    "gpu-conv2d-mixed-float16-xla",
    "gpu-mirrored-allreduce",
)
LOG_CHECK_NAME = "gpu-log-clean"  # run on the host over the container's full log

# Lines TensorFlow writes when a GPU build silently falls back or cannot use the device it was given.
LOG_FAULT_PATTERNS = (
    "not built with CUDA kernel binaries compatible",
    "Could not load dynamic library",
    "Cannot dlopen some GPU libraries",
)
MATMUL_RTOL = 1e-2  # TF32 is on by default for float32 matmul on Ampere and later: ~1e-3 relative error


def no_gpu_reason(gpu_request_error: str | None) -> str:
    """Why GPU checks could not run: always starts with `no GPU visible`."""
    if gpu_request_error:
        return f"no GPU visible (the engine refused the GPU request: {gpu_request_error})"
    return "no GPU visible"


def unrunnable(names: tuple[str, ...] | list[str], reason: str, expect_gpu: bool) -> list[CheckResult]:
    """The not-run/fail decision: without a GPU, checks are not-run, unless a GPU was expected."""
    if expect_gpu:
        return [CheckResult.failed(n, "a visible GPU (--expect-gpu)", reason) for n in names]
    return [CheckResult.not_run(n, reason) for n in names]


def requested_count(gpus: str | None) -> int | None:
    """How many GPUs a `--gpus` value asks for; None when any number will do (`all` or not given)."""
    if gpus is None or gpus == "all":
        return None
    return int(gpus)


def count_outcome(visible: int, gpus: str | None) -> CheckResult:
    want = requested_count(gpus)
    if want is None:
        if visible >= 1:
            return CheckResult.passed(
                "gpu-count", "{} GPU(s) visible, --gpus {}".format(visible, gpus or "all")
            )
        return CheckResult.failed("gpu-count", "at least 1 GPU", "0")
    if visible == want:
        return CheckResult.passed("gpu-count", f"{visible} GPU(s) visible as requested")
    return CheckResult.failed("gpu-count", f"{want} GPU(s) (--gpus {gpus})", f"{visible} visible")


def format_capability(capability: Any) -> str:
    """(8, 6) -> `8.6`; anything else as text, `unknown` when missing."""
    if isinstance(capability, (tuple, list)) and len(capability) == 2:
        return f"{capability[0]}.{capability[1]}"
    return str(capability) if capability else "unknown"


def max_relative_error(found: Any, expected: Any) -> float:
    """Largest absolute difference, relative to the largest magnitude expected."""
    import numpy as np

    f = np.asarray(found, dtype="float64")
    e = np.asarray(expected, dtype="float64")
    if f.shape != e.shape:
        return math.inf
    scale = max(float(np.max(np.abs(e))) if e.size else 0.0, 1e-30)
    return float(np.max(np.abs(f - e))) / scale if e.size else 0.0


def matmul_outcome(found: Any, expected: Any, rtol: float = MATMUL_RTOL) -> CheckResult:
    err = max_relative_error(found, expected)
    if math.isfinite(err) and err <= rtol:
        return CheckResult.passed("gpu-matmul", f"max relative error {err:.2e} <= {rtol:g} vs numpy")
    return CheckResult.failed("gpu-matmul", f"max relative error <= {rtol:g} vs numpy", f"{err:.3e}")


def gradients_ok(norms: list[float]) -> bool:
    """Every gradient finite and not all zero."""
    return bool(norms) and all(math.isfinite(n) for n in norms) and any(n > 0 for n in norms)


def allreduce_expected(replicas: int) -> float:
    """Sum over replicas of (replica id + 1)."""
    return replicas * (replicas + 1) / 2.0


def allreduce_outcome(values: list[float], replicas: int) -> CheckResult:
    want = allreduce_expected(replicas)
    if len(values) == replicas and all(abs(v - want) < 1e-6 for v in values):
        return CheckResult.passed("gpu-mirrored-allreduce", f"{replicas} replica(s) agree on {want:g}")
    return CheckResult.failed(
        "gpu-mirrored-allreduce", f"{replicas} replica(s) each holding {want:g}", str(values)
    )


def scan_log(text: str, limit: int = 20) -> list[str]:
    """Lines of a container log that show a GPU build falling back or missing a library."""
    hits = [line.strip() for line in text.splitlines() if any(p in line for p in LOG_FAULT_PATTERNS)]
    return hits[:limit]


def log_outcome(text: str, gpu_ran: bool, expect_gpu: bool, reason: str) -> CheckResult:
    """The host's verdict on the full container log; like every GPU check, only when a GPU ran."""
    if not gpu_ran:
        return unrunnable([LOG_CHECK_NAME], reason, expect_gpu)[0]
    hits = scan_log(text)
    if hits:
        return CheckResult.failed(
            LOG_CHECK_NAME, "no line matching " + " | ".join(LOG_FAULT_PATTERNS), " || ".join(hits)
        )
    return CheckResult.passed(LOG_CHECK_NAME, "no GPU fallback or missing-library lines")


# ---------------------------------------------------------------- in-image, needs TensorFlow and a GPU


def _matmul(tf: Any, device: str) -> list[CheckResult]:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 256)).astype("float32")
    b = rng.standard_normal((256, 384)).astype("float32")
    with tf.device(device):
        product = tf.matmul(tf.constant(a), tf.constant(b))
    if not product.device.upper().endswith(device.upper().lstrip("/")):
        return [CheckResult.failed("gpu-matmul", f"result placed on {device}", product.device)]
    return [matmul_outcome(product.numpy(), a.astype("float64") @ b.astype("float64"))]


def _conv_mixed(tf: Any, device: str, jit: bool) -> list[CheckResult]:
    name = "gpu-conv2d-mixed-float16" + ("-xla" if jit else "")
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with tf.device(device):
            layer = tf.keras.layers.Conv2D(8, 3, padding="same")
            x = tf.random.stateless_normal((4, 32, 32, 3), seed=(1, 2))
            layer.build(x.shape)

            @tf.function(jit_compile=jit)
            def step(inputs: Any) -> Any:
                with tf.GradientTape() as tape:
                    out = layer(inputs)
                    loss = tf.reduce_mean(tf.square(tf.cast(out, tf.float32)))
                return out, loss, tape.gradient(loss, layer.trainable_variables)

            out, loss, grads = step(x)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    norms = [float(tf.norm(tf.cast(g, tf.float32)).numpy()) for g in grads]
    if out.dtype != tf.float16:
        return [CheckResult.failed(name, "float16 activations", str(out.dtype.name))]
    if not (math.isfinite(float(loss.numpy())) and gradients_ok(norms)):
        return [
            CheckResult.failed(
                name,
                "finite loss and finite, non-zero gradients",
                f"loss={float(loss.numpy())}, grad norms={norms}",
            )
        ]
    shown = ", ".join(f"{n:.3g}" for n in norms)
    return [CheckResult.passed(name, f"forward+backward on {out.device}, grad norms {shown}")]


def _mirrored(tf: Any, devices: list[str]) -> list[CheckResult]:
    strategy = tf.distribute.MirroredStrategy(devices)

    def replica_value() -> Any:
        ctx = tf.distribute.get_replica_context()
        value = tf.cast(ctx.replica_id_in_sync_group + 1, tf.float32)
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)

    per_replica = strategy.run(tf.function(replica_value))
    values = [float(v.numpy()) for v in strategy.experimental_local_results(per_replica)]
    return [allreduce_outcome(values, strategy.num_replicas_in_sync)]


def device_workloads(tf: Any, device_type: str, count: int) -> list[CheckResult]:
    """Matmul, mixed-precision Conv2D (with and without XLA) and an all-reduce on `/<device_type>:0..count-1`.

    The GPU checks call it with "GPU"; tests call it with "CPU" to prove the TensorFlow code itself works
    on hosts without a GPU (results named gpu-* then say nothing about a GPU).
    """
    first = f"/{device_type}:0"
    results = run_guarded(("gpu-matmul",), lambda: _matmul(tf, first))
    results += run_guarded(("gpu-conv2d-mixed-float16",), lambda: _conv_mixed(tf, first, jit=False))
    results += run_guarded(("gpu-conv2d-mixed-float16-xla",), lambda: _conv_mixed(tf, first, jit=True))
    devices = [f"/{device_type.lower()}:{i}" for i in range(count)]
    results += run_guarded(("gpu-mirrored-allreduce",), lambda: _mirrored(tf, devices))
    return results


def run_gpu_checks(session: Any) -> list[CheckResult]:
    """Every GPU check, in order; see the module docstring for what happens without a GPU."""
    ctx = session.ctx
    tf = session.tf
    if tf is None:
        return unrunnable(GPU_CHECK_NAMES, "tensorflow did not import (see tf-import)", ctx.expect_gpu)
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return unrunnable(GPU_CHECK_NAMES, no_gpu_reason(ctx.gpu_request_error), ctx.expect_gpu)
    results = [
        CheckResult.passed("gpu-visible", "{} GPU(s): {}".format(len(gpus), ", ".join(g.name for g in gpus)))
    ]
    results.append(count_outcome(len(gpus), ctx.gpus))

    def capabilities() -> list[CheckResult]:
        found = []
        for g in gpus:
            details = tf.config.experimental.get_device_details(g)
            found.append(
                "{} {} sm_{}".format(
                    g.name,
                    details.get("device_name", "?"),
                    format_capability(details.get("compute_capability")),
                )
            )
        unknown = [f for f in found if f.endswith("sm_unknown")]
        if unknown:
            return [
                CheckResult.failed("gpu-compute-capability", "a compute capability per GPU", "; ".join(found))
            ]
        return [CheckResult.passed("gpu-compute-capability", "; ".join(found), found="; ".join(found))]

    results += run_guarded(("gpu-compute-capability",), capabilities)
    results += device_workloads(tf, "GPU", len(gpus))
    return results


__all__ = [
    "FAIL",
    "GPU_CHECK_NAMES",
    "LOG_CHECK_NAME",
    "NOT_RUN",
    "device_workloads",
    "run_gpu_checks",
    "scan_log",
    "unrunnable",
]

"""Benchmark workloads that run INSIDE a TensorFlow image (Python 3.9 and 3.11, TF 2.10 and 2.13).

Only the standard library, numpy and TensorFlow may be imported here: the runner copies this one file into
a fresh container for each repetition, so the image under test never has to carry Strata.

    python workloads.py --workload matmul --device cpu --size small --json-out /tmp/result.json

Each workload times training (or compute) steps on synthetic data and writes one JSON document: the per-step
times, the warm-up length, the steady-state median step time and throughput, the cold-start time and the
environment (TF build, threading and XLA settings, CPU, GPUs from nvidia-smi).

Test hook: env STRATA_BENCH_SLEEP_FRACTION=f makes every step wait f times its own duration (spinning, not
sleeping: see stall_until), so a test image built with that ENV line is a known, planted slowdown
(throughput x 1/(1+f)).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

SCHEMA = "strata.bench.workload/1"
WORKLOADS = ("resnet50", "resnet50-xla", "bert-encoder", "matmul", "input-pipeline")
SIZES = ("tiny", "small", "full")
# Env var the runner sets to time.time() just before it asks the engine for the container.
CONTAINER_START_ENV = "STRATA_BENCH_CONTAINER_START"
SLEEP_FRACTION_ENV = "STRATA_BENCH_SLEEP_FRACTION"
# Warm-up ends at the first sliding window of this many steps whose step-time CV is under the bound.
WARMUP_WINDOW = 5
WARMUP_CV_BOUND = {"cpu": 0.05, "gpu": 0.02}
DEFAULT_STEPS = {"tiny": 30, "small": 50, "full": 200}
EXIT_NO_GPU = 3
EXIT_BAD_ARGS = 4

_PROCESS_START = time.time()

Step = Callable[[], None]


class WorkloadError(Exception):
    """A workload cannot run as asked (no GPU, unknown name); reported as one line, non-zero exit."""


def coefficient_of_variation(values: list[float]) -> float:
    """Sample standard deviation over mean; 0.0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else float("inf")


def warmup_steps(step_times: list[float], window: int, cv_bound: float) -> int | None:
    """Number of leading steps before the first window of `window` steps whose CV is under `cv_bound`.

    Returns None when no window is steady (the run never warmed up).
    >>> warmup_steps([5.0, 1.0, 1.0, 1.0, 1.0, 1.0], 5, 0.05)
    1
    """
    for start in range(len(step_times) - window + 1):
        if coefficient_of_variation(step_times[start : start + window]) < cv_bound:
            return start
    return None


def best_window_median(step_times: list[float], window: int) -> float:
    """Smallest median over sliding windows of `window` steps: the speed of the quietest stretch.

    On a host shared with other work this is steadier across containers than the overall median,
    and a slowdown that stretches every step still shows in full.
    >>> best_window_median([3.0, 1.0, 1.1, 0.2, 1.0, 1.2, 4.0], 3)
    1.0
    """
    if len(step_times) < window:
        return statistics.median(step_times)
    return min(statistics.median(step_times[i : i + window]) for i in range(len(step_times) - window + 1))


def summarize_steps(
    step_times: list[float], device: str, run_delays: list[float] | None = None
) -> dict[str, Any]:
    """Warm-up length and steady-state step-time statistics from raw per-step times.

    With per-step run-queue delays (time the process's threads waited for a CPU) the summary also says how
    contended the host was: run_queue_delay_fraction = delay / wall time over the steady steps. A diagnostic
    only: delays of threads waiting at once add up (the fraction can exceed 1 with several threads), so the
    "uncontended" time (wall minus delay) is an under-estimate and is never used for verdicts.
    """
    bound = WARMUP_CV_BOUND[device]
    have_delays = run_delays is not None and len(run_delays) == len(step_times)
    uncontended = [max(t - d, 0.0) for t, d in zip(step_times, run_delays or [])] if have_delays else None
    warm = warmup_steps(step_times, WARMUP_WINDOW, bound)
    # A run that never settles still gets a median (of its second half), flagged as not steady.
    first = warm if warm is not None else len(step_times) // 2
    steady = step_times[first:]
    summary: dict[str, Any] = {
        "warmup_steps": warm,
        "warmup_s": sum(step_times[:warm]) if warm is not None else None,
        "steady": warm is not None,
        "warmup_window": WARMUP_WINDOW,
        "warmup_cv_bound": bound,
        "steady_median_step_s": statistics.median(steady),
        "best_window_median_step_s": best_window_median(steady, WARMUP_WINDOW),
        "best_step_s": min(steady),
        "steady_step_cv": coefficient_of_variation(steady),
        "steady_median_uncontended_step_s": None,
        "run_queue_delay_fraction": None,
    }
    if uncontended is not None:
        steady_uncontended = uncontended[first:]
        summary["steady_median_uncontended_step_s"] = statistics.median(steady_uncontended)
        summary["run_queue_delay_fraction"] = sum((run_delays or [])[first:]) / sum(steady)
    return summary


# ---------------------------------------------------------------- environment


def _read_cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


NVIDIA_SMI_FIELDS = (
    "name",
    "driver_version",
    "memory.total",
    "clocks.sm",
    "clocks.mem",
    "clocks.max.sm",
    "temperature.gpu",
    "power.draw",
    "pstate",
)


def nvidia_smi_gpus() -> list[dict[str, str]]:
    """One dict per GPU from `nvidia-smi --query-gpu`; empty when nvidia-smi is absent or fails."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=" + ",".join(NVIDIA_SMI_FIELDS), "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) == len(NVIDIA_SMI_FIELDS):
            gpus.append(dict(zip(NVIDIA_SMI_FIELDS, values)))
    return gpus


def environment(tf: Any) -> dict[str, Any]:
    """What a reader needs to trust or question a number: TF build, settings, CPU and GPUs."""
    try:
        build_info = {k: str(v) for k, v in dict(tf.sysconfig.get_build_info()).items()}
    except Exception:  # noqa: BLE001 - build info is best effort; older builds lack keys
        build_info = {}
    settings_env = (
        "TF_XLA_FLAGS",
        "XLA_FLAGS",
        "TF_ENABLE_ONEDNN_OPTS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
        "OMP_NUM_THREADS",
        "TF_CPP_MIN_LOG_LEVEL",
        "TF_GPU_ALLOCATOR",
        "TF_FORCE_GPU_ALLOW_GROWTH",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        SLEEP_FRACTION_ENV,
    )
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0
    gpus = nvidia_smi_gpus()
    return {
        "python": platform.python_version(),
        "tf_version": tf.__version__,
        "tf_git_version": getattr(tf.version, "GIT_VERSION", ""),
        "tf_build_info": build_info,
        "tf_built_with_cuda": bool(tf.test.is_built_with_cuda()),
        "numpy": __import__("numpy").__version__,
        "settings": {name: os.environ.get(name) for name in settings_env},
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "tf_jit_enabled": str(tf.config.optimizer.get_jit()),
        "cpu_model": _read_cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "tf_gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "gpus": gpus,
        "gpu_model": gpus[0]["name"] if gpus else None,
        "gpu_driver": gpus[0]["driver_version"] if gpus else None,
        "kernel": platform.release(),
    }


# ---------------------------------------------------------------- workloads
# Each builder returns (step, samples_per_step, details); step() runs one step and blocks until it is done.


def _resnet50(tf: Any, device: str, size: str, jit: bool) -> tuple[Step, int, dict[str, Any]]:
    batch, side = {"tiny": (2, 32), "small": (8, 64), "full": (64 if device == "cpu" else 128, 224)}[size]
    if device == "gpu":
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    model = tf.keras.applications.ResNet50(weights=None, input_shape=(side, side, 3), classes=1000)
    # compile() wraps the optimizer in a LossScaleOptimizer under mixed_float16 on both TF 2.10 and 2.13.
    model.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate=0.01),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=False),
        jit_compile=jit,
    )
    images = tf.random.uniform((batch, side, side, 3), seed=1)
    labels = tf.random.uniform((batch,), maxval=1000, dtype=tf.int32, seed=2)

    def step() -> None:
        model.train_on_batch(images, labels)  # returns the loss as numpy: the step has finished

    details = {"batch": batch, "image_side": side, "mixed_precision": device == "gpu", "jit_compile": jit}
    return step, batch, details


def _bert_encoder(tf: Any, device: str, size: str) -> tuple[Step, int, dict[str, Any]]:
    # BERT-base is 12 layers x 768 hidden x 12 heads, seq 128; smaller shapes keep CPU runs short.
    layers_n, hidden, heads, seq, batch = {
        "tiny": (1, 64, 2, 32, 4),
        "small": (2, 128, 2, 64, 8),
        "full": (12, 768, 12, 128, 8 if device == "cpu" else 32),
    }[size]
    vocab = 30522
    if device == "gpu":
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    keras = tf.keras
    tokens = keras.Input(shape=(seq,), dtype="int32")
    x = keras.layers.Embedding(vocab, hidden)(tokens)
    x = x + keras.layers.Embedding(seq, hidden)(tf.range(seq))
    for _ in range(layers_n):
        attn = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=hidden // heads)(x, x)
        x = keras.layers.LayerNormalization(epsilon=1e-12)(x + attn)
        ffn = keras.layers.Dense(hidden * 4, activation="gelu")(x)
        ffn = keras.layers.Dense(hidden)(ffn)
        x = keras.layers.LayerNormalization(epsilon=1e-12)(x + ffn)
    logits = keras.layers.Dense(vocab, dtype="float32")(x)  # masked-LM head, float32 for a stable loss
    model = keras.Model(tokens, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    ids = tf.random.uniform((batch, seq), maxval=vocab, dtype=tf.int32, seed=3)

    def step() -> None:
        model.train_on_batch(ids, ids)

    details = {"batch": batch, "layers": layers_n, "hidden": hidden, "heads": heads, "seq_len": seq}
    return step, batch, details


def _matmul(tf: Any, device: str, size: str) -> tuple[Step, int, dict[str, Any]]:
    n, chain = {"tiny": (512, 4), "small": (1024, 4), "full": (2048 if device == "cpu" else 8192, 8)}[size]
    dtype = tf.float16 if device == "gpu" else tf.float32
    a = tf.random.uniform((n, n), dtype=tf.float32, seed=4)
    b = tf.random.uniform((n, n), dtype=tf.float32, seed=5)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)

    @tf.function
    def chained(x: Any, y: Any) -> Any:
        for _ in range(chain):
            x = tf.linalg.matmul(x, y) * (1.0 / n)  # rescale so values stay finite over the chain
        return tf.reduce_sum(x)

    def step() -> None:
        chained(a, b).numpy()

    details = {"n": n, "matmuls_per_step": chain, "dtype": dtype.name, "flops_per_step": 2 * n**3 * chain}
    return step, chain, details


def _input_pipeline(tf: Any, device: str, size: str) -> tuple[Step, int, dict[str, Any]]:
    side, batch = {"tiny": (64, 64), "small": (128, 32), "full": (256, 128)}[size]
    crop = side * 7 // 8
    raw = tf.random.uniform((64, side, side, 3), maxval=255, dtype=tf.int32, seed=6)
    encoded = tf.map_fn(
        lambda im: tf.io.encode_jpeg(tf.cast(im, tf.uint8)), raw, fn_output_signature=tf.string
    )

    def decode_augment(jpeg: Any) -> Any:
        image = tf.cast(tf.io.decode_jpeg(jpeg, channels=3), tf.float32) / 255.0
        image = tf.image.random_crop(image, (crop, crop, 3))
        image = tf.image.random_flip_left_right(image)
        image = tf.image.resize(image, (side, side))
        return tf.image.per_image_standardization(image)

    dataset = (
        tf.data.Dataset.from_tensor_slices(encoded)
        .repeat()
        .map(decode_augment, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch)
        .prefetch(tf.data.AUTOTUNE)
    )
    iterator = iter(dataset)

    def step() -> None:
        next(iterator).numpy()

    return step, batch, {"batch": batch, "image_side": side, "jpeg_decode": True}


def build_workload(tf: Any, name: str, device: str, size: str) -> tuple[Step, int, dict[str, Any]]:
    """The step function, samples per step and shape details of workload `name`."""
    if name == "resnet50":
        return _resnet50(tf, device, size, jit=False)
    if name == "resnet50-xla":
        return _resnet50(tf, device, size, jit=True)
    if name == "bert-encoder":
        return _bert_encoder(tf, device, size)
    if name == "matmul":
        return _matmul(tf, device, size)
    if name == "input-pipeline":
        return _input_pipeline(tf, device, size)
    raise WorkloadError("unknown workload {!r}; known: {}".format(name, ", ".join(WORKLOADS)))


# ---------------------------------------------------------------- timing


def run_queue_delay_s() -> float | None:
    """Seconds this process's threads have spent runnable but waiting for a CPU (Linux schedstat).

    None where /proc/<pid>/task/*/schedstat is unavailable. Threads that exit take their share with them.
    """
    total = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the thread exited between listdir and open
    return total / 1e9


def steal_s(cpus: set[int]) -> float | None:
    """Seconds the hypervisor ran something else while `cpus` (this process's CPUs) wanted to run.

    The steal column of /proc/stat per CPU, in clock ticks (10 ms): a diagnostic for a whole run, too coarse
    for one step. None where the kernel does not account steal time or /proc/stat is unreadable.
    """
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    total = 0
    seen = False
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus and len(fields) > 7:
            total += int(fields[7])
            seen = True
    return total / tick if seen else None


def stall_until(deadline: float) -> None:
    """Wait until perf_counter() reaches `deadline` without giving up the CPU.

    The planted-slowdown hook spins instead of sleeping: a sleeping thread queues for a CPU again on every
    wake-up, so on a loaded host time.sleep() would plant a slowdown larger and noisier than asked for.
    """
    while time.perf_counter() < deadline:
        pass


def time_steps(step: Step, steps: int, sleep_fraction: float) -> tuple[list[float], list[float], float]:
    """Per-step wall times, per-step run-queue delays (time the process waited for a CPU) and the epoch
    time the first step finished.

    With sleep_fraction > 0 each step also stalls for that fraction of its duration (the planted-slowdown
    hook, see stall_until); the stall is part of the recorded step time, as a real slowdown would be.
    """
    times: list[float] = []
    delays: list[float] = []
    first_step_done = 0.0
    for i in range(steps):
        delay_before = run_queue_delay_s()
        start = time.perf_counter()
        step()
        if sleep_fraction > 0:
            stall_until(time.perf_counter() + (time.perf_counter() - start) * sleep_fraction)
        times.append(time.perf_counter() - start)
        delay_after = run_queue_delay_s()
        if i == 0:
            first_step_done = time.time()
        if delay_before is not None and delay_after is not None:
            delays.append(max(0.0, delay_after - delay_before))
    return times, delays, first_step_done


def process_cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    return time.process_time()


def run(name: str, device: str, size: str, steps: int, threads: int | None = None) -> dict[str, Any]:
    """Run one workload and return the result document (see module docstring)."""
    if name not in WORKLOADS:
        raise WorkloadError("unknown workload {!r}; known: {}".format(name, ", ".join(WORKLOADS)))
    if size not in SIZES:
        raise WorkloadError("unknown size {!r}; known: {}".format(size, ", ".join(SIZES)))
    if steps < WARMUP_WINDOW + 1:
        raise WorkloadError(f"--steps must be at least {WARMUP_WINDOW + 1}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import_start = time.time()
    import tensorflow as tf

    import_s = time.time() - import_start
    if threads:  # must precede the first op; 0/None keeps TF's default (all cores)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise WorkloadError(
            f"--device gpu but TensorFlow sees no GPU (built with CUDA: {tf.test.is_built_with_cuda()})"
        )
    if device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")  # a CPU benchmark must not silently use a GPU
    device_count = max(1, len(gpus)) if device == "gpu" else 1
    with tf.device("/GPU:0" if device == "gpu" else "/CPU:0"):
        step, samples_per_step, details = build_workload(tf, name, device, size)
        sleep_fraction = float(os.environ.get(SLEEP_FRACTION_ENV) or 0.0)
        cpus = os.sched_getaffinity(0)
        steal_start = steal_s(cpus)
        cpu_start, wall_start = process_cpu_seconds(), time.perf_counter()
        step_times, run_delays, first_step_done = time_steps(step, steps, sleep_fraction)
        cpu_s, wall_s = process_cpu_seconds() - cpu_start, time.perf_counter() - wall_start
        steal_end = steal_s(cpus)
    stolen = steal_end - steal_start if steal_start is not None and steal_end is not None else None
    summary = summarize_steps(step_times, device, run_delays)
    container_start = os.environ.get(CONTAINER_START_ENV)
    return {
        "schema": SCHEMA,
        "workload": name,
        "device": device,
        "size": size,
        "steps": steps,
        "threads": threads,
        # CPU seconds per wall second while timing: well under the thread count means the host was contended.
        "timed_cpu_s": cpu_s,
        "timed_cpu_utilization": cpu_s / wall_s if wall_s > 0 else None,
        # Share of the timed wall time the hypervisor gave this container's CPUs to someone else (VM hosts).
        "cpus": sorted(cpus),
        "steal_fraction": stolen / (wall_s * len(cpus)) if stolen is not None and wall_s > 0 else None,
        "samples_per_step": samples_per_step,
        "device_count": device_count,
        "details": details,
        "step_times_s": step_times,
        "step_run_queue_delay_s": run_delays,
        **summary,
        "samples_per_s_per_device": samples_per_step / summary["steady_median_step_s"] / device_count,
        "process_start": _PROCESS_START,
        "tf_import_s": import_s,
        "first_step_done": first_step_done,
        "time_to_first_step_s": first_step_done - _PROCESS_START,
        "container_start": float(container_start) if container_start else None,
        "cold_start_s": first_step_done - float(container_start) if container_start else None,
        "sleep_fraction": sleep_fraction,
        "env": environment(tf),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point inside the image."""
    parser = argparse.ArgumentParser(description="Strata benchmark workload (runs inside a TF image).")
    parser.add_argument("--workload", required=True, choices=WORKLOADS)
    parser.add_argument("--device", required=True, choices=("cpu", "gpu"))
    parser.add_argument("--size", default="small", choices=SIZES)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default by size)")
    parser.add_argument("--threads", type=int, default=None, help="TF intra/inter-op threads (default: TF's)")
    parser.add_argument("--json-out", default=None, help="write the result here (default: stdout)")
    args = parser.parse_args(argv)
    try:
        result = run(
            args.workload, args.device, args.size, args.steps or DEFAULT_STEPS[args.size], args.threads
        )
    except WorkloadError as exc:
        print(f"strata-bench: {args.workload}: {exc}", file=sys.stderr)
        return EXIT_NO_GPU if "GPU" in str(exc) else EXIT_BAD_ARGS
    text = json.dumps(result, indent=1, sort_keys=True)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

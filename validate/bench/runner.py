"""Run benchmark workloads in images: one fresh container per repetition, interleaved in a seeded order.

    run = run_benchmarks(docker.from_env(), ["img:a", "img:b"], ["matmul"], repeats=5, device="cpu",
                         out_dir=Path("results"), seed=42)

The workload script (workloads.py) is the payload of a validate.container run: copied into each container at
run time, so images never carry it; its result file is read back from the container.
Each repetition's JSON lands under out_dir/<run id>/ and in the ledger (out_dir/ledger.sqlite by default).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import docker
import docker.errors

from builder.errors import StrataError
from validate.bench import workloads as workloads_module
from validate.bench.ledger import Ledger, RunInfo
from validate.bench.metrics import Repetition
from validate.container.payload import Payload
from validate.container.runner import ContainerError, ContainerOutcome, ContainerSpec, run_container

SCRIPT_DIR = "/opt/strata-bench"
SCRIPT_NAME = "workloads.py"
SCRIPT_PATH = f"{SCRIPT_DIR}/{SCRIPT_NAME}"
RESULT_PATH = "/tmp/strata-bench-result.json"
DEFAULT_TIMEOUT_S = 1800.0
LOG_TAIL_LINES = 5


class BenchError(StrataError):
    """A benchmark repetition could not run or produced no result; names image, workload and repetition."""


@dataclass(frozen=True)
class BenchImage:
    """An image as the engine knows it: the user's reference, its config digest and registry digest."""

    ref: str
    image_id: str
    repo_digest: str | None
    labels: dict[str, str]


@dataclass(frozen=True)
class BenchRun:
    """What `run_benchmarks` did: the run record, every repetition, and where the files are."""

    info: RunInfo
    images: list[BenchImage]
    repetitions: list[Repetition]
    run_dir: Path
    ledger_path: Path


def resolve_image(client: docker.DockerClient, ref: str) -> BenchImage:
    """Look an image up in the engine (no pull: benchmarks run what was built)."""
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise BenchError(f"{ref}: image not found in the engine (build or pull it first)") from None
    except docker.errors.APIError as exc:
        raise BenchError(f"{ref}: the engine could not inspect it ({exc.explanation})") from None
    repo_digests = image.attrs.get("RepoDigests") or []
    return BenchImage(ref, image.id, repo_digests[0] if repo_digests else None, dict(image.labels or {}))


def interleaved_schedule(
    images: Sequence[str], workloads: Sequence[str], repeats: int, seed: int
) -> list[tuple[str, str, int]]:
    """(image, workload, repetition) in run order: each round runs every pair once, shuffled.

    Shuffling within rounds spreads slow drift (thermal, other tenants) evenly over images.
    """
    rng = random.Random(seed)
    order: list[tuple[str, str, int]] = []
    for repetition in range(repeats):
        round_pairs = [(image, workload) for workload in workloads for image in images]
        rng.shuffle(round_pairs)
        order.extend((image, workload, repetition) for image, workload in round_pairs)
    return order


_CPUSET = re.compile(r"[0-9]{1,4}(-[0-9]{1,4})?(,[0-9]{1,4}(-[0-9]{1,4})?){0,63}")


def check_cpuset(cpuset: str, cpu_count: int) -> None:
    """Refuse a CPU list the engine would reject or that names a CPU this host lacks ("1", "0-3", "0,2").

    >>> check_cpuset("0-1", 2)
    >>> check_cpuset("2", 2)
    Traceback (most recent call last):
    ...
    validate.bench.runner.BenchError: bench run: --cpuset '2' names CPU 2; the engine has CPUs 0-1
    """
    if not _CPUSET.fullmatch(cpuset):
        raise BenchError(f"bench run: --cpuset {cpuset!r} is not a CPU list such as 1, 0-3 or 0,2")
    for part in cpuset.split(","):
        low, _, high = part.partition("-")
        if high and int(high) < int(low):
            raise BenchError(f"bench run: --cpuset {cpuset!r} has a descending range {part}")
        top = int(high or low)
        if top >= cpu_count:
            raise BenchError(
                f"bench run: --cpuset {cpuset!r} names CPU {top}; the engine has CPUs 0-{cpu_count - 1}"
            )


def workload_script() -> bytes:
    """The in-image workload script, read once per run so every repetition runs the same code."""
    return Path(workloads_module.__file__).read_bytes()


def repetition_spec(
    image: BenchImage,
    workload: str,
    *,
    device: str,
    size: str,
    steps: int | None,
    timeout_s: float,
    threads: int | None,
    python: str,
    script: bytes,
    requested_at: float,
    cpuset: str | None = None,
) -> ContainerSpec:
    """One repetition's container: the workload script as payload, its JSON result read back; GPUs for gpu.

    requested_at (epoch seconds) reaches the workload, which charges the time since then as cold start.
    cpuset pins the container to those host CPUs (Docker's --cpuset-cpus), None lets it run anywhere.
    """
    command = [python, SCRIPT_PATH, "--workload", workload, "--device", device, "--size", size]
    command += ["--json-out", RESULT_PATH] + (["--steps", str(steps)] if steps else [])
    command += ["--threads", str(threads)] if threads else []
    return ContainerSpec(
        image=image.image_id,
        command=command,
        timeout_s=timeout_s,
        payload=Payload(SCRIPT_DIR, {SCRIPT_NAME: script}),
        environment={workloads_module.CONTAINER_START_ENV: repr(requested_at)},
        gpus="all" if device == "gpu" else None,
        labels={"io.strata.bench": "1"},
        result_files=[RESULT_PATH],
        cpuset=cpuset,
    )


def repetition_result(where: str, outcome: ContainerOutcome, timeout_s: float) -> dict[str, Any]:
    """The repetition's result document, or a BenchError saying why there is none."""
    if outcome.gpu_refused is not None:
        message = outcome.gpu_refused
        if "device driver" in message or "gpu" in message.lower():
            raise BenchError(f"{where}: --device gpu but the engine cannot give GPUs ({message})")
        raise BenchError(f"{where}: the engine refused ({message})")
    if outcome.timed_out:
        raise BenchError(f"{where}: timed out after {timeout_s:.0f}s")
    if outcome.exit_code != 0:
        tail = " | ".join(outcome.log.strip().splitlines()[-LOG_TAIL_LINES:]) or "no output"
        if outcome.exit_code == workloads_module.EXIT_NO_GPU:
            raise BenchError(f"{where}: --device gpu but the container sees no GPU ({tail})")
        raise BenchError(f"{where}: exited {outcome.exit_code}: {tail}")
    data = outcome.files.get(RESULT_PATH)
    if data is None:
        raise BenchError(f"{where}: exited 0 but wrote no {RESULT_PATH}")
    result: dict[str, Any] = json.loads(data)
    result["engine_started_at"] = outcome.started_at
    return result


def run_repetition(
    client: docker.DockerClient,
    image: BenchImage,
    workload: str,
    repetition: int,
    *,
    device: str,
    size: str,
    steps: int | None,
    timeout_s: float,
    threads: int | None = None,
    python: str = "python3",
    script: bytes | None = None,
    cpuset: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Run one workload once in a fresh container; return its result document and start time (ISO)."""
    where = f"{image.ref}: workload {workload} repetition {repetition}"
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    spec = repetition_spec(
        image,
        workload,
        device=device,
        size=size,
        steps=steps,
        timeout_s=timeout_s,
        threads=threads,
        python=python,
        script=script or workload_script(),
        requested_at=time.time(),
        cpuset=cpuset,
    )
    try:
        outcome = run_container(client, spec)
    except ContainerError as exc:
        raise BenchError(f"{where}: the engine refused ({exc.explanation})") from None
    return repetition_result(where, outcome, timeout_s), started_at


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-80:]


def run_benchmarks(
    client: docker.DockerClient,
    images: Sequence[str],
    workloads: Sequence[str],
    repeats: int,
    device: str,
    out_dir: Path,
    seed: int,
    *,
    size: str = "small",
    steps: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ledger_path: Path | None = None,
    threads: int | None = None,
    python: str = "python3",
    progress: Callable[[str], None] | None = None,
    cpuset: str | None = None,
) -> BenchRun:
    """Benchmark every image on every workload `repeats` times, interleaved, and record everything.

    Repetitions already finished stay in the ledger and on disk if a later one fails.
    """
    if not images:
        raise BenchError("bench run: no images given")
    if len(set(images)) != len(images):
        raise BenchError("bench run: an image is listed twice; each image is benchmarked once per round")
    unknown = [w for w in workloads if w not in workloads_module.WORKLOADS]
    if unknown:
        known = ", ".join(workloads_module.WORKLOADS)
        raise BenchError(f"bench run: unknown workload {unknown[0]!r}; known: {known}")
    if repeats < 1:
        raise BenchError("bench run: --repeats must be at least 1")
    if cpuset is not None:
        check_cpuset(cpuset, int(client.info().get("NCPU") or 1))  # the engine's CPUs, not this process's
    resolved = {ref: resolve_image(client, ref) for ref in images}
    created = datetime.now(timezone.utc)
    run_id = f"{created:%Y%m%dT%H%M%SZ}-s{seed}"
    schedule = interleaved_schedule(images, workloads, repeats, seed)
    info = RunInfo(
        run_id,
        created.isoformat(timespec="seconds"),
        device,
        size,
        repeats,
        seed,
        list(images),
        list(workloads),
        schedule,
    )
    script = workload_script()
    run_dir = out_dir / run_id
    (run_dir / "repetitions").mkdir(parents=True, exist_ok=True)
    ledger_path = ledger_path or out_dir / "ledger.sqlite"
    run_doc = {
        "run_id": run_id,
        "created_at": info.created_at,
        "device": device,
        "size": size,
        "steps": steps,
        "threads": threads,
        "cpuset": cpuset,
        "repeats": repeats,
        "seed": seed,
        "workloads": list(workloads),
        "workload_script_sha256": hashlib.sha256(script).hexdigest(),
        "images": [vars(resolved[ref]) for ref in images],
        "schedule": [list(entry) for entry in schedule],
    }
    (run_dir / "run.json").write_text(json.dumps(run_doc, indent=1))
    done: list[Repetition] = []
    with Ledger.open(ledger_path) as ledger:
        ledger.record_run(info)
        for index, (ref, workload, repetition) in enumerate(schedule):
            image = resolved[ref]
            if progress:
                progress(f"[{index + 1}/{len(schedule)}] {ref} {workload} repetition {repetition}")
            result, started_at = run_repetition(
                client,
                image,
                workload,
                repetition,
                device=device,
                size=size,
                steps=steps,
                timeout_s=timeout_s,
                threads=threads,
                python=python,
                script=script,
                cpuset=cpuset,
            )
            name = f"{index:03d}-{_safe(ref)}-{workload}-r{repetition}.json"
            (run_dir / "repetitions" / name).write_text(json.dumps(result, indent=1, sort_keys=True))
            rep = Repetition.from_result(
                result,
                run_id=run_id,
                image=ref,
                image_id=image.image_id,
                repo_digest=image.repo_digest,
                repetition=repetition,
                order_index=index,
                started_at=started_at,
            )
            ledger.add(rep)
            done.append(rep)
    return BenchRun(info, list(resolved.values()), done, run_dir, ledger_path)

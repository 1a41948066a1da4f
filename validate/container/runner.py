"""Run one command in a fresh container of an image, bounded in time, and always remove the container.

    outcome = run_container(client, ContainerSpec(
        image="sha256:...", command=["python3", "/opt/x/run.py"], timeout_s=600,
        payload=Payload("/opt/x", {"run.py": source}), gpus="all", result_files=["/tmp/result.json"]))
    if outcome.gpu_refused: ...          # the engine could not give GPUs; nothing ran
    elif outcome.timed_out: ...          # killed after timeout_s; logs are what it printed until then
    else: outcome.exit_code, outcome.stdout, outcome.files["/tmp/result.json"]

Pure pieces (device requests, the timeout rule, the wait's status) sit at the top; the engine code follows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from builder.errors import StrataError
from validate.container.payload import Payload, file_from_archive, payload_archive

# What `container.wait(timeout=...)` raises when the container outlives the timeout.
WAIT_TIMEOUTS = (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError)
REMOVE_ATTEMPTS = 5
REMOVE_BACKOFF_S = 1.0


class ContainerError(StrataError):
    """The engine refused a step of the run (create, copy in, start, wait, read back); callers add the image."""

    def __init__(self, step: str, explanation: str) -> None:
        self.step = step
        self.explanation = explanation
        super().__init__(f"cannot {step}: {explanation}")


@dataclass(frozen=True)
class ContainerSpec:
    """What to run: the image, its command, and what the container gets (payload, GPUs, environment, user)."""

    image: str  # an id or a reference in the local engine (no pull)
    command: Sequence[str]
    timeout_s: float  # always bounded: the container is killed after this many seconds
    entrypoint: Sequence[str] | None = None  # None: the image's own
    payload: Payload | None = None  # put in after create, before start; never baked into an image
    environment: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None  # None: the image's USER
    gpus: str | None = None  # "all", a count ("2"), or None for no GPU request
    labels: Mapping[str, str] = field(default_factory=dict)  # to find (and clean up) our containers
    result_files: Sequence[str] = ()  # absolute paths read back with get_archive once the command stopped
    cpuset: str | None = None  # host CPUs the container may run on ("1", "0-3"); None: any


@dataclass(frozen=True)
class ContainerOutcome:
    """What came back: the exit code (None if killed or never started), both logs, and the result files."""

    exit_code: int | None = None
    timed_out: bool = False
    stdout: str = ""
    log: str = ""  # stdout and stderr as the engine interleaved them
    files: Mapping[str, bytes] = field(default_factory=dict)  # the result_files that existed
    started_at: str | None = None  # the engine's State.StartedAt
    gpu_refused: str | None = None  # the engine's answer when it refused the GPUs asked for


# ---------------------------------------------------------------- pure


def device_requests(gpus: str | None) -> list[docker.types.DeviceRequest]:
    """The engine's device requests for `gpus`: None asks for none, "all" for every GPU, "2" for two."""
    if gpus is None:
        return []
    if gpus == "all":
        count = -1
    elif gpus.isdigit() and int(gpus) > 0:
        count = int(gpus)
    else:
        raise StrataError(f"GPUs to request: a positive count or 'all', not {gpus!r}")
    return [docker.types.DeviceRequest(count=count, capabilities=[["gpu"]])]


def bounded_timeout(timeout_s: float) -> float:
    """The timeout, if it bounds the run: a finite number of seconds above zero (no run waits forever)."""
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise StrataError(f"a container timeout takes a finite number of seconds > 0, not {timeout_s!r}")
    return timeout_s


def exit_code_of(status: Mapping[str, Any]) -> int:
    """The exit code from the engine's wait answer; -1 when it gave none."""
    return int(status.get("StatusCode", -1))


# ---------------------------------------------------------------- engine


def run_container(client: docker.DockerClient, spec: ContainerSpec) -> ContainerOutcome:
    """Create, put the payload in, start, wait at most spec.timeout_s, collect; the container is always removed.

    A refused GPU request comes back as `gpu_refused` (nothing ran); any other refusal raises ContainerError.
    """
    timeout_s = bounded_timeout(spec.timeout_s)
    requested = device_requests(spec.gpus)
    archive = payload_archive(spec.payload) if spec.payload is not None else None
    try:
        container = client.containers.create(
            spec.image,
            command=list(spec.command),
            entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
            environment=dict(spec.environment) or None,
            user=spec.user,
            network_mode="none",  # nothing run here needs the network; nothing should leak in or out
            labels=dict(spec.labels),
            device_requests=requested or None,
            cpuset_cpus=spec.cpuset,
        )
    except docker.errors.APIError as exc:
        if requested:
            return ContainerOutcome(gpu_refused=_explained(exc))
        raise ContainerError("create a container", _explained(exc)) from None
    try:
        return _run_created(container, spec, archive, bool(requested), timeout_s)
    finally:
        _remove(container)


def _run_created(
    container: Any, spec: ContainerSpec, archive: bytes | None, gpus_requested: bool, timeout_s: float
) -> ContainerOutcome:
    if archive is not None:
        try:
            container.put_archive("/", archive)
        except docker.errors.APIError as exc:
            raise ContainerError("copy the payload into a container", _explained(exc)) from None
    try:
        container.start()
    except docker.errors.APIError as exc:
        if gpus_requested:
            return ContainerOutcome(gpu_refused=_explained(exc))
        raise ContainerError("start a container", _explained(exc)) from None
    exit_code, timed_out = _wait(container, timeout_s)
    try:
        stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        log = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        files = {
            path: data for path in spec.result_files if (data := _read_file(container, path)) is not None
        }
        container.reload()  # attrs were read at create time; StartedAt is set once it ran
    except docker.errors.APIError as exc:
        raise ContainerError("read back from a container", _explained(exc)) from None
    return ContainerOutcome(
        exit_code=exit_code,
        timed_out=timed_out,
        stdout=stdout,
        log=log,
        files=files,
        started_at=(container.attrs.get("State") or {}).get("StartedAt"),
    )


def _wait(container: Any, timeout_s: float) -> tuple[int | None, bool]:
    """(exit code, timed out); a container still running after timeout_s is killed."""
    try:
        status = container.wait(timeout=timeout_s)
    except WAIT_TIMEOUTS:
        try:
            container.kill()
        except docker.errors.APIError:
            pass  # it exited between the timeout and the kill; removal still cleans it up
        return None, True
    except docker.errors.APIError as exc:
        raise ContainerError("wait for a container", _explained(exc)) from None
    return exit_code_of(status), False


def _read_file(container: Any, path: str) -> bytes | None:
    try:
        stream, _ = container.get_archive(path)
    except docker.errors.NotFound:
        return None  # the command did not write it; the caller says what that means
    return file_from_archive(b"".join(stream))


def _remove(container: Any) -> None:
    """Force-remove the container; a removal the engine refuses for a moment (a kill still in flight) is retried."""
    for attempt in range(REMOVE_ATTEMPTS):
        try:
            container.remove(force=True)
            return
        except docker.errors.NotFound:
            return  # already gone; nothing of ours is left behind
        except (docker.errors.APIError, *WAIT_TIMEOUTS):
            if attempt == REMOVE_ATTEMPTS - 1:
                raise ContainerError(
                    "remove a container", f"container {container.id[:12]} is still there"
                ) from None
            time.sleep(REMOVE_BACKOFF_S * (attempt + 1))


def _explained(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)

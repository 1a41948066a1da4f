"""Run the smoke checks inside images with the Docker engine, and scan every layer for secrets.

The check code is copied into a created container (put_archive) at run time, never baked into an image.
Pure pieces (parsing the container's output, deciding what a timeout means) sit at the top; the functions
that talk to the engine follow.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from builder.engine.client import engine_client
from builder.errors import StrataError
from builder.settings import Settings
from validate.smoke import check_result, gpu_checks, secret_scan
from validate.smoke import checks as smoke_checks
from validate.smoke.check_result import PASS, PLAN_MARKER, RESULT_MARKER, CheckResult
from validate.smoke.checks import SmokeContext
from validate.smoke.results import ImageReport, save_report

SMOKE_DIR = "/tmp/strata-smoke"
DEFAULT_TIMEOUT_S = 900.0
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The image's venv first, then whatever python the image has; `sh` is the one thing every image carries.
PYTHON_LAUNCHER = (
    "for p in /opt/venv/bin/python python3 python; do "
    'if command -v "$p" >/dev/null 2>&1; then exec "$p" "$@"; fi; done; '
    'echo "strata smoke: no python in the image" >&2; exit 127'
)


@dataclass(frozen=True)
class SmokeOptions:
    """How to run: GPUs to request, how long to wait, where results go, whether to scan layers."""

    expect_gpu: bool = False
    gpus: str | None = None  # "all" or a count; --expect-gpu alone requests all
    timeout_s: float = DEFAULT_TIMEOUT_S
    results_dir: Path | None = None  # settings.smoke_results_dir; None: not saved
    scan_secrets: bool = True
    host_ca_bundle: Path = HOST_CA_BUNDLE

    @property
    def gpu_request(self) -> str | None:
        return self.gpus or ("all" if self.expect_gpu else None)


@dataclass
class ContainerRun:
    """What came back from one container: its plan, the results it printed, and its full log."""

    planned: list[str] = field(default_factory=list)
    results: list[CheckResult] = field(default_factory=list)
    log: str = ""
    exit_code: int | None = None
    timed_out: bool = False
    gpu_request_error: str | None = None


# ---------------------------------------------------------------- pure


def parse_output(stdout: str) -> tuple[list[str], list[CheckResult], list[str]]:
    """(planned names, results, malformed lines) from the checks' stdout markers."""
    planned: list[str] = []
    results: list[CheckResult] = []
    bad: list[str] = []
    for line in stdout.splitlines():
        try:
            if line.startswith(PLAN_MARKER):
                planned = [str(n) for n in json.loads(line[len(PLAN_MARKER) :])]
            elif line.startswith(RESULT_MARKER):
                results.append(CheckResult.from_dict(json.loads(line[len(RESULT_MARKER) :])))
        except (ValueError, KeyError, TypeError):
            bad.append(line[:200])
    return planned, results, bad


def complete_results(run: ContainerRun, timeout_s: float) -> list[CheckResult]:
    """The container's results, with every planned check that never reported failed, saying why."""
    reported = {r.name for r in run.results}
    missing = [n for n in run.planned if n not in reported]
    if run.timed_out:
        why = f"timed out after {timeout_s:g} s"
    else:
        why = f"the check never reported; container exited {run.exit_code}"
    results = list(run.results) + [CheckResult.failed(n, "a result", why, why) for n in missing]
    if not run.planned:
        tail = " | ".join(run.log.strip().splitlines()[-5:]) or "(empty log)"
        if run.timed_out:
            results.append(CheckResult.failed("smoke-run", "the checks start and report", why, why))
        else:
            found = f"exit {run.exit_code}, no plan printed: {tail}"
            results.append(CheckResult.failed("smoke-run", "the checks start and report", found))
    return results


def gpu_ran(results: list[CheckResult]) -> bool:
    return any(r.name == "gpu-visible" and r.status == PASS for r in results)


def context_archive(ctx: SmokeContext) -> bytes:
    """A tar of the check code and the run's context, readable by any uid (the user layer runs as 1000)."""
    buf = io.BytesIO()
    sources = {
        "checks.py": Path(smoke_checks.__file__).read_bytes(),
        "gpu_checks.py": Path(gpu_checks.__file__).read_bytes(),
        "check_result.py": Path(check_result.__file__).read_bytes(),
        "context.json": ctx.to_json().encode(),
    }
    with tarfile.open(fileobj=buf, mode="w") as tar:
        top = tarfile.TarInfo(SMOKE_DIR.lstrip("/"))
        top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
        tar.addfile(top)
        for name, data in sources.items():
            info = tarfile.TarInfo("{}/{}".format(SMOKE_DIR.lstrip("/"), name))
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def device_requests(gpus: str | None) -> list[docker.types.DeviceRequest]:
    if gpus is None:
        return []
    count = -1 if gpus == "all" else int(gpus)
    return [docker.types.DeviceRequest(count=count, capabilities=[["gpu"]])]


# ---------------------------------------------------------------- engine


def connect(settings: Settings) -> docker.DockerClient:
    """A client for the engine, or a one-line HostError."""
    return engine_client(settings, timeout=60, what="smoke: the Docker engine")


def run_checks_in_container(
    client: docker.DockerClient, image_id: str, ctx: SmokeContext, timeout_s: float
) -> ContainerRun:
    """Create a container, copy the checks in, run them, keep the full log; the container is always removed."""
    run = ContainerRun()
    container, gpu_error = _start(client, image_id, ctx, device_requests(ctx.gpus))
    if container is None:  # the engine could not give GPUs: run the rest, GPU checks report why
        run.gpu_request_error = gpu_error
        ctx = replace(ctx, gpu_request_error=gpu_error)
        container, _ = _start(client, image_id, ctx, [])
    try:
        try:
            status = container.wait(timeout=timeout_s)
            run.exit_code = int(status.get("StatusCode", -1))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            run.timed_out = True
            try:
                container.kill()
            except docker.errors.APIError:
                pass  # it may have exited between the timeout and the kill
        stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        run.log = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    finally:
        container.remove(force=True)
    run.planned, run.results, bad = parse_output(stdout)
    if bad:
        run.results.append(
            CheckResult.failed("smoke-output", "well-formed result lines", " | ".join(bad[:3]))
        )
    return run


def _start(
    client: docker.DockerClient, image_id: str, ctx: SmokeContext, requests_: list[docker.types.DeviceRequest]
) -> tuple[Any, str | None]:
    """Create, copy the checks in and start; (None, engine's answer) when only the GPU request failed."""
    try:
        container = client.containers.create(
            image_id,
            entrypoint=["/bin/sh", "-c", PYTHON_LAUNCHER, "strata-smoke"],
            command=[f"{SMOKE_DIR}/checks.py", f"{SMOKE_DIR}/context.json"],
            detach=True,
            network_disabled=True,
            labels={"io.strata.smoke": ctx.image},
            device_requests=requests_ or None,
        )
    except docker.errors.APIError as exc:
        raise StrataError(f"smoke: {ctx.image}: cannot create a container: {exc.explanation or exc}") from exc
    try:
        container.put_archive("/", context_archive(ctx))
        container.start()
    except docker.errors.APIError as exc:
        container.remove(force=True)
        if requests_:
            return None, str(exc.explanation or exc)
        raise StrataError(f"smoke: {ctx.image}: cannot start a container: {exc.explanation or exc}") from exc
    return container, None


def scan_image_secrets(client: docker.DockerClient, image: Any, host_ca_bundle: Path) -> list[CheckResult]:
    """Stream `docker save` of the image through the secret scanner."""
    scanner = secret_scan.SecretScanner(secret_scan.read_host_bundle(host_ca_bundle))
    diff_ids = list(image.attrs.get("RootFS", {}).get("Layers", []))
    try:
        chunks: Iterable[bytes] = client.api.get_image(image.id)
        result = scanner.scan_saved(chunks, diff_ids)
    except (tarfile.TarError, docker.errors.APIError, requests.exceptions.RequestException) as exc:
        # A scan that stopped part way proves nothing: every secret check fails, saying why.
        return [
            CheckResult.failed(name, "a complete scan of every layer", f"the scan stopped: {exc}")
            for name in secret_scan.CHECK_NAMES.values()
        ]
    return secret_scan.secret_checks(result, str(host_ca_bundle))


def smoke_image(client: docker.DockerClient, reference: str, options: SmokeOptions) -> ImageReport:
    """Every smoke check of one image: labels vs tag, in-container checks, log scan, secret scan."""
    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound as exc:
        raise StrataError(
            f"smoke: image {reference} is not in the local engine (build or pull it first)"
        ) from exc
    except docker.errors.APIError as exc:
        raise StrataError(f"smoke: cannot inspect {reference}: {exc.explanation or exc}") from exc
    started = time.monotonic()
    labels = dict(image.labels or {})
    ctx = SmokeContext(
        image=reference,
        labels=labels,
        workdir=(image.attrs.get("Config") or {}).get("WorkingDir") or "",
        expect_gpu=options.expect_gpu,
        gpus=options.gpu_request,
    )
    results = smoke_checks.labels_match_tag(labels, reference)
    run = run_checks_in_container(client, image.id, ctx, options.timeout_s)
    results += complete_results(run, options.timeout_s)
    reason = gpu_checks.no_gpu_reason(run.gpu_request_error)
    results.append(gpu_checks.log_outcome(run.log, gpu_ran(results), options.expect_gpu, reason))
    if options.scan_secrets:
        results += scan_image_secrets(client, image, options.host_ca_bundle)
    else:
        results += [
            CheckResult.not_run(n, "secret scan turned off for this run")
            for n in secret_scan.CHECK_NAMES.values()
        ]
    report = ImageReport(
        image=reference,
        digest=image.id,
        checks=results,
        labels=labels,
        repo_digests=list(image.attrs.get("RepoDigests") or []),
        expect_gpu=options.expect_gpu,
        gpus=options.gpu_request,
        duration_s=time.monotonic() - started,
        started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        log=run.log,
    )
    if options.results_dir is not None:
        save_report(options.results_dir, report)
    return report


def smoke_images(
    client: docker.DockerClient,
    images: list[str],
    expect_gpu: bool = False,
    gpus: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    results_dir: Path | None = None,
    scan_secrets: bool = True,
) -> list[ImageReport]:
    """Smoke-test each image in turn; results are saved per digest under `results_dir` (None: not saved).

    Example: `smoke_images(docker.from_env(), ["strata/tensorflow:2.13.1-cpu-py3.11-bookworm"])`
    """
    options = SmokeOptions(
        expect_gpu=expect_gpu,
        gpus=gpus,
        timeout_s=timeout_s,
        results_dir=results_dir,
        scan_secrets=scan_secrets,
    )
    return [smoke_image(client, ref, options) for ref in images]

"""Run the smoke checks inside images with the Docker engine, and scan every layer for secrets.

The check code is the payload of a validate.container run: copied into a created container at run time,
never baked into an image. Pure pieces (the payload, parsing the container's output, deciding what a timeout
means) sit at the top; the functions that talk to the engine follow.
"""

from __future__ import annotations

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
from validate.container.payload import Payload
from validate.container.runner import ContainerError, ContainerSpec, run_container
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
    plan_min_driver: str | None = None  # the plan's minimum driver for the image (checked against its label)

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


def check_payload(ctx: SmokeContext) -> Payload:
    """The check code and the run's context, put into the container under SMOKE_DIR."""
    return Payload(
        SMOKE_DIR,
        {
            "checks.py": Path(smoke_checks.__file__).read_bytes(),
            "gpu_checks.py": Path(gpu_checks.__file__).read_bytes(),
            "check_result.py": Path(check_result.__file__).read_bytes(),
            "context.json": ctx.to_json().encode(),
        },
    )


def check_spec(image_id: str, ctx: SmokeContext, timeout_s: float) -> ContainerSpec:
    """The checks' container: the image's python runs checks.py with the context; GPUs as ctx asks."""
    return ContainerSpec(
        image=image_id,
        entrypoint=["/bin/sh", "-c", PYTHON_LAUNCHER, "strata-smoke"],
        command=[f"{SMOKE_DIR}/checks.py", f"{SMOKE_DIR}/context.json"],
        timeout_s=timeout_s,
        payload=check_payload(ctx),
        gpus=ctx.gpus,
        labels={"io.strata.smoke": ctx.image},
    )


# ---------------------------------------------------------------- engine


# The secret scan streams `docker save` of the whole image through this client: on a busy engine the first
# bytes of a multi-GB image take minutes, and a read timeout there fails every secret check.
ENGINE_READ_TIMEOUT_S = 900


def connect(settings: Settings) -> docker.DockerClient:
    """A client for the engine, or a one-line HostError."""
    return engine_client(settings, timeout=ENGINE_READ_TIMEOUT_S, what="smoke: the Docker engine")


def run_checks_in_container(
    client: docker.DockerClient, image_id: str, ctx: SmokeContext, timeout_s: float
) -> ContainerRun:
    """Run the checks in a fresh container and keep the full log; the container is always removed."""
    try:
        outcome = run_container(client, check_spec(image_id, ctx, timeout_s))
        gpu_error = outcome.gpu_refused
        if gpu_error is not None:  # the engine could not give GPUs: run the rest, GPU checks report why
            ctx = replace(ctx, gpu_request_error=gpu_error)
            outcome = run_container(client, replace(check_spec(image_id, ctx, timeout_s), gpus=None))
    except ContainerError as exc:
        raise StrataError(f"smoke: {ctx.image}: {exc}") from exc
    run = ContainerRun(
        log=outcome.log, exit_code=outcome.exit_code, timed_out=outcome.timed_out, gpu_request_error=gpu_error
    )
    run.planned, run.results, bad = parse_output(outcome.stdout)
    if bad:
        run.results.append(
            CheckResult.failed("smoke-output", "well-formed result lines", " | ".join(bad[:3]))
        )
    return run


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
        plan_min_driver=options.plan_min_driver,
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

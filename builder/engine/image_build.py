"""Run one image build on the Docker engine, through BuildKit (CLI) or the legacy builder (SDK).

The only module of the build path that starts builds; every line of output goes to the node's log file.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from builder.engine.caps import BuilderChoice
from builder.errors import BuildError

_ERROR_HINTS = (
    (re.compile(r"no space left on device", re.I), "disk full (no space left on device)"),
    (re.compile(r"THESE PACKAGES DO NOT MATCH THE HASHES", re.I), "a wheel does not match its locked sha256"),
    (
        re.compile(r"Could not find a version that satisfies|No matching distribution found", re.I),
        "a locked wheel is missing from the wheelhouse",
    ),
)


@dataclass(frozen=True)
class BuildRequest:
    node_id: str
    context: Path
    tag: str
    build_args: dict[str, str]
    log_path: Path
    environ: Mapping[str, str]  # the docker CLI's environment (BuildKit builds): settings.environ
    no_cache: bool = False  # ignore the engine's build cache (reproducibility checks)
    append_log: bool = False  # add to the log (after the node's install stage output) instead of starting it


def summarize_failure(log_text: str) -> str:
    """The most useful single line of a failed build log (pure; unit-tested)."""
    for pattern, hint in _ERROR_HINTS:
        if pattern.search(log_text):
            return hint
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.search(r"error|failed|did not complete|returned a non-zero code", ln, re.I):
            return ln[-240:]
    return lines[-1][-240:] if lines else "no output"


def build_image(
    client: docker.DockerClient,
    choice: BuilderChoice,
    req: BuildRequest,
    on_line: Callable[[str], None] | None = None,
) -> str:
    """Build `req` and return the resulting image id; BuildError names the node and the log on failure."""
    req.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(req.log_path, "a" if req.append_log else "w", encoding="utf-8") as log:
        log.write(f"# strata build {req.node_id} via {choice.kind} ({choice.cli or 'docker SDK'})\n")
        log.flush()
        try:
            if choice.kind == "legacy":
                ok = _build_legacy(client, req, log, on_line)
            else:
                ok = _build_cli(choice, req, log, on_line)
        except docker.errors.DockerException as exc:
            log.write(f"\nERROR: {exc}\n")
            ok = False
    if not ok:
        text = req.log_path.read_text(encoding="utf-8", errors="replace")
        raise BuildError(f"node {req.node_id} failed: {summarize_failure(text)} (log: {req.log_path})")
    try:
        return str(client.images.get(req.tag).id)
    except docker.errors.ImageNotFound:
        raise BuildError(
            f"node {req.node_id}: build reported success but {req.tag} is missing (log: {req.log_path})"
        ) from None


def _build_cli(
    choice: BuilderChoice, req: BuildRequest, log: Any, on_line: Callable[[str], None] | None
) -> bool:
    assert choice.cli is not None
    cmd = [choice.cli, *(["buildx", "build", "--load"] if choice.kind == "buildx" else ["build"])]
    cmd += [
        "--network",
        "host",
        "--progress",
        "plain",
        "--tag",
        req.tag,
        "--file",
        str(req.context / "Dockerfile"),
    ]
    if req.no_cache:
        cmd.append("--no-cache")
    for key, value in sorted(req.build_args.items()):
        cmd += ["--build-arg", f"{key}={value}"]
    cmd.append(str(req.context))
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=choice.build_env(req.environ),
        bufsize=1,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            log.write(line)
            if on_line:
                on_line(line.rstrip())
        return proc.wait() == 0
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C, an exception): never leave a docker build behind
            proc.kill()
            proc.wait()


def _build_legacy(
    client: docker.DockerClient, req: BuildRequest, log: Any, on_line: Callable[[str], None] | None
) -> bool:
    stream = client.api.build(
        path=str(req.context),
        dockerfile="Dockerfile",
        tag=req.tag,
        buildargs=req.build_args,
        network_mode="host",
        rm=True,
        forcerm=True,
        nocache=req.no_cache,
        decode=True,
    )
    ok = True
    for chunk in stream:
        if "stream" in chunk:
            text = str(chunk["stream"])
            log.write(text)
            if on_line and text.strip():
                on_line(text.rstrip())
        if "error" in chunk:
            log.write(f"ERROR: {chunk['error']}\n")
            ok = False
    return ok

"""Resolve Python requirements with pip's installation report, inside the image's own base (its Python, its glibc).

Resolving on the host with `--python-version` is not enough: pip then evaluates environment markers with the host's
interpreter, so a Python 3.9 image would miss `importlib-metadata; python_version < "3.10"`. So resolution runs in a
container of the node's base image with a pinned, hash-checked pip wheel mounted in (bullseye's own pip predates
`--report`). Touches the network (PyPI); the host CA bundle is mounted read-only for that run, never built into a layer.
Of the host's pip configuration only its package indexes are used (settings.package_index and
extra_package_indexes, read by the CLI: a PyPI mirror); find-links, constraints and the rest are ignored. A file:
index is mounted read-only at its own path. Locked URLs may then name the mirror: the sha256 is the identity.

pip's output of each resolution is kept as <state root>/logs/lock/<node>.log; when pip cannot resolve, the error
shows its explanation of the conflict (which requirement asks for what), trimmed to a few lines, and names that log.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from builder.engine.client import BUILD_TIMEOUT_SECONDS, engine_client
from builder.engine.host import ensure_engine
from builder.errors import StrataError
from builder.lock.fetch import fetch_wheels, wheel_path
from builder.lock.indexes import file_index_root
from builder.plan.graph import LayerNode, Plan
from builder.plan.lockfile import PinnedWheel
from builder.settings import Settings

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class ResolutionFailed(StrataError):
    """pip could not resolve a node's requirements (conflicting pins, no such release); names pip's full output."""


# How many of pip's "X depends on Y" lines a resolution error shows (the requests of the node and its parents' pins
# are always shown); the rest are counted, and in the log.
CONFLICT_LINES = 4
_CONFLICT_HEADER = "The conflict is caused by:"


# The pip that resolves inside images: pinned and verified like any other input.
PIP_WHEEL = PinnedWheel(
    name="pip",
    version="24.2",
    sha256="2cd581cf58ab7fcfca4ce8efa6dcacd0de5bf8d0a3eb9ec927e07405f4d9e2a2",
    url="https://files.pythonhosted.org/packages/d4/55/90db48d85f7689ec6f81c0db0622d704306c5284850383c090e6c7195a5c/"
    "pip-24.2-py3-none-any.whl",
)


def in_image_command(
    report: str,
    requirements: str,
    constraints: str | None,
    ca: str | None,
    index_url: str | None = None,
    extra_index_urls: Sequence[str] = (),
) -> list[str]:
    """The pip command run inside the base image (pure; unit-tested)."""
    cmd = [
        "python3",
        f"/strata/{PIP_WHEEL.filename}/pip",
        "install",
        "--isolated",
        "--disable-pip-version-check",
        "--no-cache-dir",
        # Not --quiet: pip logs its explanation of a conflict at info level, and the log is kept.
        "--progress-bar",
        "off",
        "--dry-run",
        "--ignore-installed",
        "--only-binary=:all:",
        "--report",
        report,
        "-r",
        requirements,
    ]
    if constraints:
        cmd += ["-c", constraints]
    if ca:
        cmd += ["--cert", ca]
    if index_url:
        cmd += ["--index-url", index_url]
    for extra in extra_index_urls:
        cmd += ["--extra-index-url", extra]
    return cmd


def resolve_in_image(
    client: Any,
    image: str,
    requirements: list[str],
    constraints: dict[str, str],
    cache: Path,
    what: str,
    environ: Mapping[str, str],
    index_url: str | None = None,
    extra_index_urls: Sequence[str] = (),
    log_dir: Path | None = None,
) -> list[PinnedWheel]:
    """Resolve in a container of `image` (the node's base): markers and wheel tags are the image's own.

    `index_url` replaces PyPI and `extra_index_urls` are searched too, as pip's options of the same names. pip's
    output is written to `log_dir/<what>.log` (when given) and named in the error if pip fails.
    """
    indexes = ([index_url] if index_url else []) + list(extra_index_urls)
    fetch_wheels(cache, [PIP_WHEEL], repair=True, environ=environ, indexes=indexes)
    pip_wheel = wheel_path(cache, PIP_WHEEL)
    with tempfile.TemporaryDirectory(prefix="strata-resolve-") as tmp:
        work = Path(tmp)
        (work / "requirements.in").write_text("\n".join(requirements) + "\n", encoding="utf-8")
        has_constraints = bool(constraints)
        if has_constraints:
            (work / "constraints.txt").write_text(
                "".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())), encoding="utf-8"
            )
        volumes = {
            str(work): {"bind": "/work", "mode": "rw"},
            str(pip_wheel.parent): {"bind": "/strata", "mode": "ro"},
        }
        for index in indexes:
            if index.startswith("file:"):
                root = file_index_root(index)
                volumes[root] = {"bind": root, "mode": "ro"}
        ca = None
        if os.path.exists(CA_BUNDLE):
            volumes[CA_BUNDLE] = {"bind": "/run/strata-ca.crt", "mode": "ro"}
            ca = "/run/strata-ca.crt"
        cmd = in_image_command(
            "/work/report.json",
            "/work/requirements.in",
            "/work/constraints.txt" if has_constraints else None,
            ca,
            index_url,
            extra_index_urls,
        )
        container = client.containers.run(
            image,
            cmd,
            volumes=volumes,
            network_mode="host",
            user="0",
            entrypoint=[],
            detach=True,
            environment={"PIP_CONFIG_FILE": "/dev/null", "PYTHONDONTWRITEBYTECODE": "1"},
        )
        try:
            status = container.wait(timeout=1800)
            logs = container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)
        log = _keep_log(log_dir, what, logs)
        if status.get("StatusCode") != 0:
            raise resolution_error(what, image, logs, status.get("StatusCode"), log)
        data = json.loads((work / "report.json").read_text(encoding="utf-8"))
    return [_pinned(item, what) for item in data.get("install", [])]


def _pinned(item: dict, what: str) -> PinnedWheel:
    meta = item["metadata"]
    info = item["download_info"]
    sha = info.get("archive_info", {}).get("hashes", {}).get("sha256") or ""
    if not sha:
        hash_field = info.get("archive_info", {}).get("hash", "")
        sha = hash_field.split("=", 1)[1] if hash_field.startswith("sha256=") else ""
    if not sha:
        raise StrataError(f"{what}: index gave no sha256 for {meta['name']} {meta['version']}")
    return PinnedWheel(name=meta["name"], version=meta["version"], sha256=sha, url=info["url"])


def resolution_error(what: str, image: str, logs: str, status: object, log: Path | None) -> ResolutionFailed:
    """The error of a failed resolution (pure): pip's conflict explanation when it gave one, else its last error,
    and where its full output is.

    Example: `cannot resolve requirements for tf2.13.1-cpu-py3.11 (in strata/base:h-1f2e):
    conflicting requirements:\\n    tensorflow-cpu 2.13.1 depends on numpy<=1.24.3 and >=1.22\\n    The user
    requested (constraint) numpy==2.0.0\\n  pip's full output: .strata/logs/lock/tf2.13.1-cpu-py3.11.log`
    """
    conflict = conflict_explanation(logs)
    reason = (
        "conflicting requirements:\n" + "\n".join(f"    {line}" for line in conflict)
        if conflict
        else _last_error(logs) or f"pip exited {status}"
    )
    where = f"\n  pip's full output: {log}" if log else ""
    return ResolutionFailed(f"cannot resolve requirements for {what} (in {image}): {reason}{where}")


def _keep_log(log_dir: Path | None, what: str, logs: str) -> Path | None:
    if log_dir is None:
        return None
    path = log_dir / (re.sub(r"[^A-Za-z0-9._-]", "_", what) + ".log")
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(logs, encoding="utf-8")
    except OSError:
        return None  # the resolution's result does not depend on its log
    return path


def conflict_explanation(log: str, limit: int = CONFLICT_LINES) -> list[str]:
    """pip's "The conflict is caused by:" lines from `log` (pip's output), trimmed (pure).

    The requests (of the node's requirements, and "(constraint)" for its parents' pins) are always kept; of the
    "X depends on Y" lines, the first `limit`, then how many more there are. Empty when pip explained no conflict.
    Example: ["tensorflow-cpu 2.13.1 depends on numpy<=1.24.3 and >=1.22",
    "The user requested (constraint) numpy==2.0.0"].
    """
    lines = log.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == _CONFLICT_HEADER) + 1
    except StopIteration:
        return []
    causes: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            break
        causes.append(re.sub(r"\s+", " ", line.strip()))
    requested = [c for c in causes if c.startswith("The user requested")]
    depends = [c for c in causes if not c.startswith("The user requested")]
    shown = depends[:limit] + (
        [f"... and {len(depends) - limit} more (see the log)"] if len(depends) > limit else []
    )
    return shown + requested


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "notice" not in ln]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    return (errors[-1] if errors else (lines[-1] if lines else "")).removeprefix("ERROR: ")[:300]


class InImageResolver:
    """`WheelResolver` that runs pip inside each node's base image, built first when the engine lacks it.

    `base_image(engine, plan, base_node)` returns the engine reference of a base node's image (building it if
    needed); the CLI passes the build step's function, so locking never imports the build orchestration.
    The engine is connected on the first resolution: locking only base nodes needs no engine.
    """

    def __init__(self, settings: Settings, base_image: Callable[[Any, Plan, LayerNode], str]) -> None:
        self.settings = settings
        self.base_image = base_image
        self._engine: Any = None

    def resolve(
        self, plan: Plan, node: LayerNode, requirements: Sequence[str], constraints: Mapping[str, str]
    ) -> list[PinnedWheel]:
        if self._engine is None:
            ensure_engine(self.settings, auto_start=True).close()
            self._engine = engine_client(self.settings, BUILD_TIMEOUT_SECONDS)
        base = plan.node(node.id)
        while base.parent:
            base = plan.node(base.parent)
        image = self.base_image(self._engine, plan, base)
        return resolve_in_image(
            self._engine,
            image,
            list(requirements),
            dict(constraints),
            self.settings.cache_dir,
            node.id,
            self.settings.environ,
            self.settings.package_index,
            self.settings.extra_package_indexes,
            log_dir=self.settings.lock_logs_dir,
        )

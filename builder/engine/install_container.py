"""Run a node's install stage in a container of its parent image, and keep the container's files for the graft.

`builder.plan.install_stage` explains why: pip writes the installed tree once, into the container's own overlay
directory on this host, and the canonical layer is written from there; no build cache record or raw image of that
size is left to delete. The RUN lines are the rendered Dockerfile's, run as BuildKit runs them: `/bin/sh -c` with
the parent's environment, user and working directory, the stage's ARGs as environment variables, the host network
(the wheelhouse is served on loopback), the lock copied in first. Each is passed to the shell as an argument, never
spliced into another command line.

Only for a local engine on overlay2 with native diffs whose storage this process can read (`local_overlay`); any
other engine builds the Dockerfile as it is.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from builder.engine.image_build import summarize_failure
from builder.errors import BuildError, StrataError
from builder.plan.install_stage import InstallStage

INSTALL_LABEL = (
    "io.strata.install-stage"  # on every install container: its node; `strata gc` removes leftovers
)
# Runs each argument with /bin/sh -c, in order, stopping at the first that fails (with its exit status).
_RUN_EACH = 'for step in "$@"; do /bin/sh -c "$step" || exit $?; done'


def local_overlay(client: Any) -> bool:
    """Whether containers' files can be read here: a local overlay2 engine with native diffs and readable storage."""
    try:
        info = client.info()
    except docker.errors.DockerException:
        return False
    status = dict(info.get("DriverStatus") or [])
    root = Path(info.get("DockerRootDir") or "/var/lib/docker") / "overlay2"
    return (
        info.get("Driver") == "overlay2"
        and status.get("Native Overlay Diff") == "true"
        and root.is_dir()
        and os.access(root, os.R_OK | os.X_OK)
    )


@dataclass(frozen=True)
class InstallContainer:
    """A finished install container: its id and its own files (overlay upper directory) on this host."""

    client: Any
    container_id: str
    upper: Path

    def path(self, inside: str) -> Path:
        """Where the container's file `inside` (absolute) is on this host, if the container wrote it.

        No directory on the way may be a symbolic link: one the container made would point into this host's tree.
        """
        path = self.upper
        for part in [p for p in inside.split("/") if p][:-1]:
            path = path / part
            if path.is_symlink():
                raise StrataError(
                    f"install container {self.container_id[:12]}: {inside} passes a symbolic link"
                )
        return self.upper / inside.lstrip("/")

    def remove(self) -> None:
        """Remove the container and its files; gone already is fine."""
        try:
            self.client.api.remove_container(self.container_id, force=True)
        except docker.errors.NotFound:
            pass


def run_install_stage(
    client: Any,
    node_id: str,
    parent_ref: str,
    stage: InstallStage,
    context_files: Mapping[str, bytes],
    build_args: Mapping[str, str],
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
    binds: Sequence[tuple[str, str]] = (),
) -> InstallContainer:
    """Run `stage` on `parent_ref`; `context_files` maps the build context's file names to their bytes.

    `binds` (directory on this host, path in the container) are mounted read-only: a parent's installed trees over
    the empty directories of its stand-in image, while the parent is still being canonicalized.
    A failing RUN line is a BuildError naming the node, the likeliest cause and the log; the container is then gone.
    """
    copies = []
    for source, destination in stage.context_copies:
        if source not in context_files:
            raise StrataError(f"node {node_id}: the install stage copies {source}, which the context lacks")
        copies.append((destination, context_files[source]))
    environment = [f"{name}={build_args[name]}" for name in stage.args if name in build_args]
    created = client.api.create_container(
        parent_ref,
        entrypoint=["/bin/sh", "-c", _RUN_EACH],
        command=["strata-install", *stage.runs],
        environment=environment,
        labels={INSTALL_LABEL: node_id},
        host_config=client.api.create_host_config(
            network_mode="host", binds={host: {"bind": inside, "mode": "ro"} for host, inside in binds}
        ),
    )
    container = InstallContainer(client, str(created["Id"]), Path())
    try:
        if copies and not client.api.put_archive(container.container_id, "/", _copies_tar(copies)):
            raise StrataError(f"node {node_id}: the engine refused the install stage's files")
        client.api.start(container.container_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(f"# strata build {node_id}: install stage in container {container.container_id[:12]}\n")
            _follow(client, container.container_id, log, on_line)
        status = int(client.api.wait(container.container_id).get("StatusCode", -1))
        if status != 0:
            text = log_path.read_text(encoding="utf-8", errors="replace")
            raise BuildError(
                f"node {node_id} failed: {summarize_failure(text)} (install stage exit {status}; log: {log_path})"
            )
        driver = client.api.inspect_container(container.container_id).get("GraphDriver") or {}
        upper = Path(str((driver.get("Data") or {}).get("UpperDir") or ""))
        if driver.get("Name") != "overlay2" or not upper.is_absolute() or not upper.is_dir():
            raise StrataError(f"node {node_id}: the install container's files are not readable on this host")
        return InstallContainer(client, container.container_id, upper)
    except BaseException:
        container.remove()
        raise


def stage_exports(
    container: InstallContainer, stage: InstallStage, staged: Path, node_id: str
) -> list[tuple[str, str]]:
    """Fill the stand-in's `staged/` directory from what the install stage left; return the grafts.

    Each exported directory becomes an empty directory of the same mode (its tree is grafted in later: the returned
    pairs are (destination in the image, directory on this host)); each exported file is copied as it is.
    """
    grafts: list[tuple[str, str]] = []
    for source, destination in stage.exports:
        real = container.path(source)
        target = staged / source.lstrip("/")
        try:
            info = os.lstat(real)
        except OSError:
            raise BuildError(f"node {node_id}: the install stage left no {source} to copy") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        if stat.S_ISDIR(info.st_mode):
            target.mkdir(exist_ok=True)
            os.chmod(target, stat.S_IMODE(info.st_mode))
            grafts.append((destination, str(real)))
        elif stat.S_ISREG(info.st_mode):
            shutil.copy2(real, target)
        else:
            raise BuildError(
                f"node {node_id}: the install stage's {source} is neither a file nor a directory"
            )
    return grafts


def _copies_tar(copies: list[tuple[str, bytes]]) -> bytes:
    """A tar putting each (absolute path, bytes) in place as BuildKit's COPY would: root-owned, mode 0644."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for destination, data in copies:
            info = tarfile.TarInfo(destination.lstrip("/"))
            info.size, info.mode, info.uid, info.gid = len(data), 0o644, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _follow(client: Any, container_id: str, log: Any, on_line: Callable[[str], None] | None) -> None:
    pending = b""
    for chunk in client.api.logs(container_id, stream=True, follow=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            log.write(line + "\n")
            if on_line:
                on_line(line)
    if pending:
        line = pending.decode("utf-8", "replace")
        log.write(line + "\n")
        if on_line:
            on_line(line)

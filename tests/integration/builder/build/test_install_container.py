"""Install stages run in a container of the parent image (builder/plan/install_stage.py), on the real engine.

A throwaway copy of the default matrix (tests/integration/conftest.py: throwaway_matrix) whose user layer differs
by one deterministic RUN is built twice: once with the install stage inside the engine's build of the Dockerfile
(STRATA_INSTALL_STAGE=build, what plain `docker build` does), once in a container. The image IDs must be equal,
and the container way must leave no container, raw image or build cache record behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import pytest

from builder.engine.build_records import list_build_records
from builder.engine.install_container import INSTALL_LABEL
from builder.plan.graph import LayerNode, Plan

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[4]
CELL = "tf2.13.1-cpu"
ThrowawayMatrix = Callable[[list[str], str, Callable[[Path, str], object]], tuple[Path, str, Plan]]


def run(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env={
            **os.environ,
            "STRATA_HOME": str(home),
            "STRATA_REGISTRY_CACHE": "off",
            "GITHUB_STEP_SUMMARY": "",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=1800,
    )


def add_step(step: str) -> Callable[[Path, str], None]:
    """An edit of the user template adding the RUN `step` to its final stage ({ns} becomes the namespace)."""

    def edit(root: Path, namespace: str) -> None:
        template = root / "layers" / "user" / "Dockerfile.j2"
        template.write_text(template.read_text() + f"RUN {step.format(ns=namespace)}\n")

    return edit


def user_node(plan: Plan) -> LayerNode:
    [node] = [n for n in plan.nodes if n.layer == "user"]
    return node


def leftovers(engine: docker.DockerClient, node: LayerNode, marker: str) -> list[str]:
    """What a build of `node` must not leave: install containers, its raw image, build records naming `marker`."""
    found = [
        c.name for c in engine.containers.list(all=True, filters={"label": f"{INSTALL_LABEL}={node.id}"})
    ]
    try:
        engine.images.get(f"strata-build/{node.id}:{node.content_hash[:16]}")
        found.append("raw image")
    except docker.errors.ImageNotFound:
        pass
    return found + [r.id for r in list_build_records(engine) if marker in r.description]


def test_the_install_stage_in_a_container_gives_the_image_of_the_dockerfile(
    tmp_path: Path,
    engine: docker.DockerClient,
    cpu_cells_built: dict[str, str],
    throwaway_matrix: ThrowawayMatrix,
) -> None:
    root, _, plan = throwaway_matrix(
        [CELL], "install", add_step("echo install-probe-{ns} > /home/user/probe")
    )
    node = user_node(plan)
    matrix = str(root / "matrix.yaml")
    log = root / "build" / "logs" / f"{node.id}.log"

    in_build = run("build", "-f", matrix, "--only", CELL, "--format", "json", home=tmp_path / "h1",
                   env={"STRATA_INSTALL_STAGE": "build"})  # fmt: skip
    assert in_build.returncode == 0, in_build.stderr[-3000:]
    assert {o["node"]: o["status"] for o in json.loads(in_build.stdout)["nodes"]}[node.id] == "built"
    from_dockerfile = engine.images.get(node.cache_ref).id
    assert "install stage in container" not in log.read_text()
    for ref in (node.cache_ref, *node.tags):
        engine.images.remove(ref)

    in_container = run("build", "-f", matrix, "--only", CELL, "--format", "json", home=tmp_path / "h2")
    assert in_container.returncode == 0, in_container.stderr[-3000:]
    assert {o["node"]: o["status"] for o in json.loads(in_container.stdout)["nodes"]}[node.id] == "built"
    text = log.read_text()
    # One log: pip's output from the container, then the stand-in build's, which ran the final stage's RUN.
    assert text.startswith(f"# strata build {node.id}: install stage in container ")
    assert text.index("Successfully installed") < text.index("COPY staged/ /") < text.rindex("install-probe-")
    assert engine.images.get(node.cache_ref).id == from_dockerfile
    probe = engine.containers.run(node.cache_ref, ["cat", "/home/user/probe"], entrypoint=[], remove=True)
    assert probe.decode().startswith("install-probe-install-")
    assert leftovers(engine, node, "install-probe-") == []


def test_a_failing_install_stage_is_one_line_naming_node_and_log_and_leaves_nothing(
    tmp_path: Path,
    engine: docker.DockerClient,
    cpu_cells_built: dict[str, str],
    throwaway_matrix: ThrowawayMatrix,
) -> None:
    def failing_install(root: Path, namespace: str) -> None:
        # The user layer's install stage gets one more RUN, which fails; other layers render as before.
        macros = root / "layers" / "_macros.j2"
        text = macros.read_text()
        start = text.index("{% macro install_stage(")
        body = text[start : text.index("{%- endmacro %}", start) + len("{%- endmacro %}")]
        failing = body.replace("install_stage(", "install_stage_failing(", 1).replace(
            "{% if prune %}",
            f'RUN echo "install-fails-{namespace}: error: this stage fails on purpose" >&2 && exit 3\n{{% if prune %}}',
            1,
        )
        macros.write_text(text + "\n" + failing + "\n")
        template = root / "layers" / "user" / "Dockerfile.j2"
        template.write_text(
            template.read_text().replace("strata.install_stage(", "strata.install_stage_failing(", 1)
        )

    root, _, plan = throwaway_matrix([CELL], "install-fails", failing_install)
    node = user_node(plan)
    failed = run("build", "-f", str(root / "matrix.yaml"), "--only", CELL, home=tmp_path / "home")
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if node.id in line and "failed" in line]
    assert errors, failed.stderr[-3000:]
    log = root / "build" / "logs" / f"{node.id}.log"
    assert "install-fails-install-fails-" in errors[0] and "install stage exit 3" in errors[0]
    assert str(log) in errors[0]
    assert "install-fails-" in log.read_text()
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(node.cache_ref)
    assert leftovers(engine, node, "install-fails-") == []


def test_gc_removes_the_stopped_install_containers_a_killed_run_leaves_and_no_running_one(
    tmp_path: Path,
    engine: docker.DockerClient,
    cpu_cells_built: dict[str, str],
    throwaway_matrix: ThrowawayMatrix,
) -> None:
    root, _, plan = throwaway_matrix([CELL], "install-gc", add_step("true"))
    node = user_node(plan)
    parent = plan.node(node.parent or "").cache_ref
    labels = {INSTALL_LABEL: node.id}
    # What a run killed after its install stage leaves: a stopped container whose files are the installed tree.
    stopped = engine.containers.create(parent, ["sh", "-c", "head -c 300000 /dev/zero > /opt/left"], entrypoint=[],
                                       labels=labels)  # fmt: skip
    stopped.start()
    assert stopped.wait()["StatusCode"] == 0
    live = engine.containers.create(parent, ["sleep", "120"], entrypoint=[], labels=labels)
    live.start()
    try:
        matrix = str(root / "matrix.yaml")
        dry = run(
            "gc", "-f", matrix, "--keep-build-cache", "--dry-run", "--format", "json", home=tmp_path / "home"
        )
        assert dry.returncode == 0, dry.stderr
        planned = json.loads(dry.stdout)["categories"]["install containers"]
        assert planned["count"] >= 1 and planned["bytes"] >= 300000, planned
        stopped.reload()  # a dry run removes nothing

        gc = run("gc", "-f", matrix, "--keep-build-cache", "--format", "json", home=tmp_path / "home")
        assert gc.returncode == 0, gc.stderr
        assert json.loads(gc.stdout)["categories"]["install containers"]["bytes"] >= 300000
        with pytest.raises(docker.errors.NotFound):
            stopped.reload()
        live.reload()
        assert live.status == "running"
    finally:
        live.remove(force=True)
        try:
            stopped.remove(force=True)
        except docker.errors.NotFound:
            pass

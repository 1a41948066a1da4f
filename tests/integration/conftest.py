"""Shared integration fixtures: the real engine and the cpu cells of the default matrix built by Strata itself.

Building is idempotent (content-hash build avoidance), so every test module that asks for the images pays for the
build at most once per machine; CI builds them once per run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from builder.matrix.load import load_matrix
from builder.plan.graph import Plan, build_plan

REPO = Path(__file__).resolve().parents[2]
CPU_CELLS = "*-cpu"


def strata(
    *args: str, env: dict[str, str] | None = None, timeout: int = 3600, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """Run the real `strata` CLI as a user would (a fresh process), capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        # A test's runs are not the job's builds: they stay out of GitHub's job summary unless a test asks.
        env={**os.environ, "GITHUB_STEP_SUMMARY": "", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def run_strata():  # type: ignore[no-untyped-def]
    """The `strata` CLI as a fresh process: run_strata("build", "--only", "tf2.13.1-cpu")."""
    return strata


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def engine(connect_engine: Callable[[float], docker.DockerClient]) -> docker.DockerClient:
    """The local Docker engine (a missing one fails under CI and skips elsewhere: tests/conftest.py)."""
    return connect_engine(900)


@pytest.fixture(scope="session")
def default_plan() -> Plan:
    return build_plan(load_matrix(REPO / "matrix.yaml"))


@pytest.fixture(scope="session")
def cpu_cells_built(engine: docker.DockerClient, default_plan: Plan) -> dict[str, str]:
    """Build the cpu cells with `strata build` and return {cell id: final image reference}."""
    proc = strata("build", "--only", CPU_CELLS, "--format", "json")
    assert proc.returncode == 0, f"strata build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    outcomes = json.loads(proc.stdout)["nodes"]
    assert {o["status"] for o in outcomes} <= {"built", "cached", "pulled"}, outcomes
    plan = default_plan.select([CPU_CELLS])
    return {cell: plan.final_node(cell).tags[0] for cell in plan.cell_ids()}


@pytest.fixture
def throwaway_matrix(
    tmp_path: Path, engine: docker.DockerClient, default_plan: Plan
) -> Iterator[Callable[[list[str], str, Callable[[Path, str], object]], tuple[Path, str, Plan]]]:
    """make(cells, tag, edit): a copy of the repository's matrix in a namespace of its own (`<tag>-<random>`), its
    user template changed by `edit(root, namespace)`, the parents of the user nodes of `cells` (the default matrix's
    cpu images, same content hashes) tagged in; returns (root, image prefix, plan). Its images go afterwards."""
    prefixes: list[str] = []

    def make(cells: list[str], tag: str, edit: Callable[[Path, str], object]) -> tuple[Path, str, Plan]:
        namespace = f"{tag}-{uuid.uuid4().hex[:10]}"
        root = tmp_path / f"repo-{namespace}"
        root.mkdir()
        for name in ("layers", "locks"):
            shutil.copytree(REPO / name, root / name)
        text = (REPO / "matrix.yaml").read_text()
        assert "  namespace: strata\n" in text
        (root / "matrix.yaml").write_text(
            text.replace("  namespace: strata\n", f"  namespace: {namespace}\n")
        )
        edit(root, namespace)
        plan = build_plan(load_matrix(root / "matrix.yaml")).select(cells)
        for node in plan.nodes:
            if node.layer != "user":
                assert node.content_hash == default_plan.node(node.id).content_hash
                image = engine.images.get(default_plan.node(node.id).cache_ref)
                for ref in (node.cache_ref, *node.tags):
                    image.tag(*ref.rsplit(":", 1))
        prefix = f"{plan.matrix.model.registry.address}/{namespace}/"
        prefixes.append(prefix)
        return root, prefix, plan

    yield make
    for image in engine.images.list():
        for ref in image.tags:
            if ref.startswith(tuple(prefixes)):
                try:
                    engine.images.remove(ref, noprune=False)
                except docker.errors.APIError:
                    pass

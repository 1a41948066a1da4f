"""Real builds of the default matrix's cpu cells on the real engine (no mocks)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import docker
import pytest

from builder.lock.fetch import wheel_path
from builder.plan.graph import Plan
from builder.settings import resolve_settings

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[4]


@pytest.fixture
def strata(run_strata):  # type: ignore[no-untyped-def]
    return run_strata


def _run(
    engine: docker.DockerClient, image: str, *cmd: str, user: str | None = None, timeout: int = 300
) -> str:
    """Run a command in a fresh container, bounded in time; the container is always removed."""
    container = engine.containers.run(
        image, list(cmd), detach=True, user=user, entrypoint=[], network_mode="none"
    )
    try:
        container.wait(timeout=timeout)
        return container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)


def test_each_cpu_cell_imports_tensorflow_matching_its_label(
    engine: docker.DockerClient, cpu_cells_built: dict[str, str]
) -> None:
    assert set(cpu_cells_built) == {"tf2.13.1-cpu", "tf2.10.1-cpu"}
    for cell, ref in cpu_cells_built.items():
        labels = engine.images.get(ref).labels
        assert labels["io.strata.cell"] == cell
        version = (
            _run(engine, ref, "python", "-c", "import tensorflow as tf; print(tf.__version__)")
            .strip()
            .splitlines()[-1]
        )
        assert version == labels["io.strata.tf"] == cell.removeprefix("tf").removesuffix("-cpu")


def test_final_images_carry_no_wheels_caches_or_compilers(
    engine: docker.DockerClient, cpu_cells_built: dict[str, str]
) -> None:
    # Debian's pip (ensurepip in python3-venv, and bullseye's venvs) imports its vendored libraries from
    # <prefix>/share/python-wheels at run time: those are part of pip, not build leftovers.
    probe = (
        "import os, shutil\n"
        "bad = [os.path.join(d, f) for top in ('/opt', '/usr', '/root', '/home', '/tmp', '/var')\n"
        "       for d, _, files in os.walk(top) for f in files if f.endswith('.whl')\n"
        "       if not d.endswith('/share/python-wheels')]\n"
        "bad += [p for p in ('/root/.cache/pip', '/home/user/.cache/pip', '/tmp/strata') if os.path.exists(p)]\n"
        "bad += [c for c in ('gcc', 'cc', 'g++', 'clang') if shutil.which(c)]\n"
        "print('LEFTOVERS', bad)\n"
    )
    for ref in cpu_cells_built.values():
        out = _run(engine, ref, "python", "-c", probe)
        assert "LEFTOVERS []" in out, f"{ref}: {out}"


def test_user_layer_runs_as_uid_1000_with_writable_workdir(
    engine: docker.DockerClient, cpu_cells_built: dict[str, str]
) -> None:
    for ref in cpu_cells_built.values():
        config = engine.images.get(ref).attrs["Config"]
        assert config["User"] == "1000:1000"
        assert set(config["ExposedPorts"]) == {"8888/tcp", "6006/tcp"}
        out = _run(engine, ref, "sh", "-c", "id -u; touch probe && echo writable; pwd")
        assert out.split() == ["1000", "writable", "/home/user/work"], out


def test_pip_sees_one_consistent_environment(
    engine: docker.DockerClient, cpu_cells_built: dict[str, str]
) -> None:
    for ref in cpu_cells_built.values():
        out = _run(engine, ref, "pip", "check")
        assert "No broken requirements found" in out, f"{ref}: {out}"


def test_rebuild_with_nothing_changed_builds_no_node(strata, cpu_cells_built: dict[str, str]) -> None:
    proc = strata("build", "--only", "*-cpu", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    outcomes = json.loads(proc.stdout)["nodes"]
    assert outcomes and all(o["status"] == "cached" for o in outcomes), outcomes


def test_images_are_canonical_and_labelled_with_their_content_hash(
    engine: docker.DockerClient, cpu_cells_built: dict[str, str], default_plan: Plan
) -> None:
    for node in default_plan.select(["*-cpu"]).nodes:
        image = engine.images.get(node.cache_ref)
        assert image.labels["io.strata.content-hash"] == node.content_hash
        assert image.attrs["Created"].startswith("2023-11-14T22:13:20"), image.attrs["Created"]
        assert node.tags[0] in image.tags


def test_tampered_wheel_is_refused_with_a_clear_message(
    strata, engine: docker.DockerClient, cpu_cells_built: dict[str, str], default_plan: Plan
) -> None:
    node = default_plan.node("user-example-tf2.13.1-cpu")
    assert node.lock is not None
    wheel = node.lock.wheels[0]
    path = wheel_path(resolve_settings(os.environ, REPO / "matrix.yaml").cache_dir, wheel)
    # The node's image may have come from the engine or a registry without its wheels ever being fetched here.
    fetched = strata("fetch", "--only", node.id)
    assert fetched.returncode == 0, fetched.stderr
    assert path.is_file(), f"strata fetch did not store {wheel.filename} at {path}"
    backup = path.with_suffix(".orig")
    shutil.copy2(path, backup)
    for ref in (node.cache_ref, *node.tags):
        engine.images.remove(ref)
    try:
        with open(path, "r+b") as f:  # flip one byte in the middle: same size, different content
            f.seek(path.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))
        proc = strata(
            "build", "--only", node.id, env={"STRATA_REGISTRY_CACHE": "off"}
        )  # no pull from a registry
        assert proc.returncode != 0
        message = proc.stderr.strip().splitlines()[-1]
        assert (
            message.startswith("strata: wheelhouse: ")
            and wheel.filename in message
            and "tampered or truncated" in message
        ), message
        assert "Traceback" not in proc.stderr
    finally:
        shutil.move(backup, path)
    proc = strata("build", "--only", node.id, "--format", "json", env={"STRATA_REGISTRY_CACHE": "off"})
    assert proc.returncode == 0, proc.stderr
    assert {o["node"]: o["status"] for o in json.loads(proc.stdout)["nodes"]}[node.id] == "built"


def test_independent_nodes_rebuilt_in_parallel_give_the_same_images(
    strata, engine: docker.DockerClient, cpu_cells_built: dict[str, str], default_plan: Plan
) -> None:
    nodes = [default_plan.node(f"user-example-tf{version}-cpu") for version in ("2.13.1", "2.10.1")]
    before = {node.id: engine.images.get(node.cache_ref).id for node in nodes}
    for node in nodes:
        for ref in (node.cache_ref, *node.tags):
            engine.images.remove(ref)
    proc = strata(
        "build",
        "--only",
        "user-example-*-cpu",
        "--jobs",
        "2",
        "--format",
        "json",
        env={"STRATA_REGISTRY_CACHE": "off"},
    )
    assert proc.returncode == 0, proc.stderr
    statuses = {o["node"]: o["status"] for o in json.loads(proc.stdout)["nodes"]}
    assert {node.id: statuses[node.id] for node in nodes} == {node.id: "built" for node in nodes}
    assert {node.id: engine.images.get(node.cache_ref).id for node in nodes} == before


def test_failing_run_step_names_node_and_log(strata, tmp_path: Path, cpu_cells_built: dict[str, str]) -> None:
    shutil.copy(REPO / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(REPO / "layers", tmp_path / "layers")
    shutil.copytree(REPO / "locks", tmp_path / "locks")
    template = tmp_path / "layers" / "user" / "Dockerfile.j2"
    template.write_text(template.read_text() + "RUN echo planted failure && exit 3\n")
    proc = strata(
        "build",
        "-f",
        str(tmp_path / "matrix.yaml"),
        "--only",
        "user-example-tf2.13.1-cpu",
        "--quiet",
        env={"STRATA_HOME": str(REPO / ".strata")},
    )
    assert proc.returncode == 1
    log = tmp_path / "build" / "logs" / "user-example-tf2.13.1-cpu.log"
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("strata: ")]
    assert errors and "node user-example-tf2.13.1-cpu failed" in errors[-1] and str(log) in errors[-1], (
        proc.stderr
    )
    assert "planted failure" in log.read_text()
    assert "Traceback" not in proc.stderr


def test_missing_daemon_is_one_line(strata, tmp_path: Path) -> None:
    proc = strata("build", "--only", "tf2.13.1-cpu", env={"DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"})
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("strata: Docker engine not reachable at unix://"), (
        proc.stderr
    )

"""`strata gc` on the real engine: a throwaway node built by Strata, made unreachable, is removed, and nothing else.

The throwaway matrix is the default one in a namespace of its own, with the user layer's template extended by one
RUN: its parents are the default matrix's cpu images (same content hashes) tagged into that namespace, so only
the user node builds. The engine is shared with other builds, so gc runs with --keep-build-cache here (other
checkouts' Strata builds leave records that look like this one's); that the build removed its own records is
checked instead, and the recognition of records gc removes is tested on a real listing in
tests/unit/builder/engine/test_build_records.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import pytest

from builder.engine.build_records import list_build_records
from builder.plan.graph import Plan
from builder.plan.retention import RAW_MIN_AGE_SECONDS

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[3]
CELL = "tf2.13.1-cpu"
OTHER_CELL = "tf2.10.1-cpu"
USER_NODE = "user-example-tf2.13.1-cpu"
# make(cells, tag, edit) -> (root, image prefix, plan): the throwaway_matrix fixture of tests/integration/conftest.py
ThrowawayMatrix = Callable[[list[str], str, Callable[[Path, str], object]], tuple[Path, str, Plan]]


def run(*args: str, home: Path, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env={
            **os.environ,
            "STRATA_HOME": str(home),
            "STRATA_REGISTRY_CACHE": "off",
            "GITHUB_STEP_SUMMARY": "",
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def refs_outside(engine: docker.DockerClient, prefix: str) -> dict[str, str]:
    return {
        ref: image.id for image in engine.images.list() for ref in image.tags if not ref.startswith(prefix)
    }


def report(stdout: str) -> dict[str, tuple[int, str]]:
    """{category: (count, bytes text)} from gc's summary lines."""
    lines = {}
    for line in stdout.splitlines():
        if line.startswith("  "):
            name, count, number, unit = line.strip().rsplit(None, 3)
            lines[name] = (int(count), f"{number} {unit}")
    return lines


@pytest.fixture
def throwaway(throwaway_matrix: ThrowawayMatrix) -> tuple[Path, str, Plan]:
    return throwaway_matrix([CELL], "gc", lambda root, namespace: set_probe(root, namespace, 1))


@pytest.fixture
def throwaway_both_cells(throwaway_matrix: ThrowawayMatrix) -> tuple[Path, str, Plan]:
    return throwaway_matrix(
        [CELL, OTHER_CELL], "discard", lambda root, namespace: set_probe(root, namespace, 1)
    )


def set_probe(root: Path, namespace: str, n: int) -> str:
    """The user template of `root`, ending with a RUN unique to this test (and to `n`) that adds 100 kB of its own;
    returns that RUN's text."""
    template = (REPO / "layers" / "user" / "Dockerfile.j2").read_text()
    probe = f"echo gc-probe-{namespace}-{n} && head -c 100000 /dev/urandom > /home/user/gc-probe"
    (root / "layers" / "user" / "Dockerfile.j2").write_text(f"{template}RUN {probe}\n")
    return probe


def test_gc_removes_exactly_the_unreachable_node(
    tmp_path: Path,
    engine: docker.DockerClient,
    cpu_cells_built: dict[str, str],
    throwaway: tuple[Path, str, Plan],
) -> None:
    root, prefix, plan = throwaway
    namespace = prefix.rstrip("/").rsplit("/", 1)[1]
    home = tmp_path / "home"
    matrix = str(root / "matrix.yaml")
    # gc collects raw leftovers of the matrix's nodes older than an hour: none may belong to anybody else here.
    hashes = {n.content_hash for n in plan.nodes}
    leftovers = [
        summary["RepoTags"]
        for summary in engine.api.images()
        if any(t.startswith(("strata-build/", "strata-verify/")) for t in summary.get("RepoTags") or ())
        and (summary.get("Labels") or {}).get("io.strata.content-hash") in hashes
        and time.time() - summary["Created"] >= RAW_MIN_AGE_SECONDS
    ]
    assert not leftovers, (
        f"raw build images of the default matrix lie around; gc would take them: {leftovers}"
    )

    built = run("build", "-f", matrix, "--only", USER_NODE, "--format", "json", home=home)
    assert built.returncode == 0, built.stderr[-3000:]
    statuses = {o["node"]: o["status"] for o in json.loads(built.stdout)["nodes"]}
    assert statuses[USER_NODE] == "built" and set(statuses.values()) == {"built", "cached"}, statuses
    old = engine.images.get(plan.node(USER_NODE).cache_ref)
    # BuildKit ran the probe step, and the build took its records with it (stage and all).
    log = (root / "build" / "logs" / f"{USER_NODE}.log").read_text()
    assert f"gc-probe-{namespace}-1" in log
    assert not [r for r in list_build_records(engine) if f"gc-probe-{namespace}-1" in r.description]

    # Unreachable now: the user layer changed. Plus a wheel no lock names and a killed run's wheelhouse.
    set_probe(root, namespace, 2)
    (home / "cache" / "wheels" / ("f" * 64)).mkdir(parents=True)
    (home / "cache" / "wheels" / ("f" * 64) / "orphan-1.0-py3-none-any.whl").write_bytes(b"x" * 1000)
    (root / "build" / "wheelhouse" / "session-killed").mkdir(parents=True)
    locked_wheels = {w.sha256 for w in plan.node(USER_NODE).lock.wheels}  # type: ignore[union-attr]

    dry = run("gc", "-f", matrix, "--keep-build-cache", "--dry-run", home=home)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("strata gc: would free")
    assert engine.images.get(old.id)  # a dry run deletes nothing
    assert (home / "cache" / "wheels" / ("f" * 64)).is_dir()

    others_before = refs_outside(engine, prefix)
    gc = run("gc", "-f", matrix, "--keep-build-cache", home=home)
    others_after = refs_outside(engine, prefix)
    assert gc.returncode == 0, gc.stderr
    lines, planned = report(gc.stdout), report(dry.stdout)
    assert gc.stdout.startswith("strata gc: freed")
    # Its parents stay, and every other layer of it is the default matrix's user image's (a reproducible build):
    # removing it frees the probe's 100 kB.
    assert lines["images"] == (1, "100.0 kB"), gc.stdout
    assert lines["wheels"] == (1, "1.0 kB") and lines["scratch"][0] == 1, gc.stdout
    assert lines["build cache"] == (0, "0 B")
    assert {k: v[0] for k, v in lines.items()} == {k: v[0] for k, v in planned.items()}
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(old.id)
    # The parents in the namespace are nodes of the matrix: kept. Nothing outside the namespace changed.
    for node in plan.nodes:
        if node.id != USER_NODE:
            assert engine.images.get(node.cache_ref)
    assert not set(others_before) - set(others_after), set(others_before) - set(others_after)
    assert {p.name for p in (home / "cache" / "wheels").iterdir()} == locked_wheels
    assert not (root / "build" / "wheelhouse" / "session-killed").exists()


def test_one_run_building_two_nodes_removes_both_raw_images_and_their_records(
    tmp_path: Path,
    engine: docker.DockerClient,
    cpu_cells_built: dict[str, str],
    throwaway_both_cells: tuple[Path, str, Plan],
) -> None:
    # The raw images of a run are discarded in one batch when it ends (builder/build/orchestrate.py): both user
    # nodes build at once here, and neither leaves its raw image or a build cache record behind.
    root, prefix, plan = throwaway_both_cells
    namespace = prefix.rstrip("/").rsplit("/", 1)[1]
    users = [n for n in plan.nodes if n.layer == "user"]
    assert len(users) == 2
    built = run(
        "build", "-f", str(root / "matrix.yaml"), "--only", CELL, "--only", OTHER_CELL, "--format", "json",
        home=tmp_path / "home",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    statuses = {o["node"]: o["status"] for o in json.loads(built.stdout)["nodes"]}
    assert {statuses[n.id] for n in users} == {"built"}, statuses
    for node in users:
        assert f"gc-probe-{namespace}-1" in (root / "build" / "logs" / f"{node.id}.log").read_text()
        assert engine.images.get(node.cache_ref)
        with pytest.raises(docker.errors.ImageNotFound):
            engine.images.get(f"strata-build/{node.id}:{node.content_hash[:16]}")
    assert not [r for r in list_build_records(engine) if f"gc-probe-{namespace}-1" in r.description]

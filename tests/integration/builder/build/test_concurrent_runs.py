"""Two real `strata build` runs started at once on one state root: one waits for the other, both succeed, and the
images are those the first build made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from builder.plan.graph import Plan
from builder.state_lock import read_holder

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[4]
CELL = "tf2.13.1-cpu"


def start_build(home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "build", "--only", CELL, "--quiet"],
        cwd=REPO,
        env={**os.environ, "STRATA_HOME": str(home), "STRATA_REGISTRY_CACHE": "off"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_builds_at_once_take_turns_and_both_succeed(
    tmp_path: Path, engine: docker.DockerClient, cpu_cells_built: dict[str, str], default_plan: Plan
) -> None:
    nodes = default_plan.select([CELL]).nodes
    before = {n.id: engine.images.get(n.cache_ref).id for n in nodes}
    home = tmp_path / "home"
    runs = [start_build(home), start_build(home)]
    try:
        # Hold whichever run took the lock still (SIGSTOP) until the other says it waits: the runs overlap
        # however fast a cached build is.
        deadline = time.monotonic() + 120
        while (holder := read_holder(home / "lock").pid) not in {r.pid for r in runs}:
            assert time.monotonic() < deadline, "neither run took the lock"
            assert all(r.poll() is None for r in runs), [r.communicate() for r in runs]
            time.sleep(0.01)
        first = next(r for r in runs if r.pid == holder)
        second = next(r for r in runs if r is not first)
        os.kill(first.pid, signal.SIGSTOP)
        try:
            time.sleep(8)  # the other run starts, plans, and reaches the lock
        finally:
            os.kill(first.pid, signal.SIGCONT)
        outputs = [r.communicate(timeout=600) for r in (first, second)]
    finally:
        for r in runs:
            if r.poll() is None:
                r.kill()
                r.wait()
    (out1, err1), (out2, err2) = outputs
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    waiting = (
        f"strata: waiting for the other strata run (pid {first.pid}: strata build --only {CELL} --quiet)"
    )
    assert err2.splitlines().count(waiting) == 1, err2
    assert "waiting for the other strata run" not in err1, err1
    assert {n.id: engine.images.get(n.cache_ref).id for n in nodes} == before
    assert read_holder(home / "lock").pid is None  # released: the file names nobody

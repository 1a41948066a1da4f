"""`strata lock` on requirements pip cannot satisfy, with the real engine, the node's base image and PyPI: the error
shows pip's conflict explanation instead of "ResolutionImpossible", exits 1, and keeps pip's full output under the
state root, named in the error."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.engine

NODE = "tf2.13.1-cpu-py3.11"


def test_an_unresolvable_framework_layer_shows_pips_conflict(
    cpu_cells_built: dict[str, str], run_strata: Callable[..., Any], repo: Path, tmp_path: Path
) -> None:
    # A copy of the checkout whose TF 2.13 framework layer asks for numpy 2 (TF 2.13.1 needs numpy<=1.24.3).
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(repo / "matrix.yaml", checkout / "matrix.yaml")
    shutil.copytree(repo / "layers", checkout / "layers")
    shutil.copytree(repo / "locks", checkout / "locks")
    (checkout / "layers" / "framework" / "requirements-tf2.13.in").write_text(
        "numpy==2.0.0\n", encoding="utf-8"
    )
    state = tmp_path / "state"

    proc = run_strata(
        "lock",
        "-f",
        str(checkout / "matrix.yaml"),
        "--only",
        NODE,
        env={"STRATA_HOME": str(state)},
        timeout=1800,
    )

    log = state / "logs" / "lock" / f"{NODE}.log"
    assert proc.returncode == 1, proc.stderr
    # Progress lines (`#1 12:00:00 base-bookworm unchanged ...`) come first on stderr; the error ends it.
    stderr = proc.stderr.strip().splitlines()
    [start] = [i for i, line in enumerate(stderr) if line.startswith("strata: ")]
    lines = stderr[start:]
    assert all(line.startswith("#") for line in stderr[:start]), proc.stderr
    assert lines[0].startswith(f"strata: cannot resolve requirements for {NODE} (in ")
    assert lines[0].endswith("): conflicting requirements:")
    assert lines[1:] == [
        "    tensorflow-cpu 2.13.1 depends on numpy<=1.24.3 and >=1.22",
        "    The user requested numpy==2.0.0",
        f"  pip's full output: {log}",
    ]
    assert "ResolutionImpossible" in log.read_text(encoding="utf-8")  # the whole of pip's output is kept

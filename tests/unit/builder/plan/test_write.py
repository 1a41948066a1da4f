"""Rendered Dockerfiles are written only inside --out, atomically, and nothing is written when a target is wrong."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from builder.errors import StrataError
from builder.matrix.load import load_matrix
from builder.plan.graph import Plan, build_plan
from builder.plan.write import write_dockerfiles

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def plan() -> Plan:
    return build_plan(load_matrix(REPO / "matrix.yaml"))


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): (
            f"-> {os.readlink(p)}" if p.is_symlink() else p.read_text() if p.is_file() else "/"
        )
        for p in sorted(root.rglob("*"))
    }


def test_writes_one_dockerfile_per_node_and_replaces_old_ones(plan: Plan, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / plan.nodes[0].id).mkdir(parents=True)
    (out / plan.nodes[0].id / "Dockerfile").write_text("old\n")
    written = write_dockerfiles(plan, out)
    assert written == [out / n.id / "Dockerfile" for n in plan.nodes]
    assert all(p.read_text() == n.dockerfile for p, n in zip(written, plan.nodes))
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["Dockerfile"] * len(
        plan.nodes
    )  # no temp files


def test_a_node_directory_that_is_a_symlink_is_refused_before_anything_is_written(
    plan: Plan, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / plan.nodes[-1].id).symlink_to(outside)
    before = _tree(tmp_path)
    with pytest.raises(StrataError, match="not a directory of its own"):
        write_dockerfiles(plan, out)
    assert _tree(tmp_path) == before


def test_a_dockerfile_symlink_is_replaced_by_a_file_and_its_target_left_alone(
    plan: Plan, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    out = tmp_path / "out"
    (out / plan.nodes[0].id).mkdir(parents=True)
    (out / plan.nodes[0].id / "Dockerfile").symlink_to(victim)
    write_dockerfiles(plan, out)
    assert victim.read_text() == "keep\n"
    assert not (out / plan.nodes[0].id / "Dockerfile").is_symlink()


@pytest.mark.parametrize("node_id", ["../escaped", "x/../../escaped", "..", "a\nb", "/abs", ""])
def test_a_node_id_that_is_not_one_plain_name_is_refused(node_id: str, tmp_path: Path) -> None:
    nodes = [
        SimpleNamespace(id="base-ok", dockerfile="FROM scratch\n"),
        SimpleNamespace(id=node_id, dockerfile="x"),
    ]
    fake: Any = SimpleNamespace(nodes=nodes)  # a plan value with just what writing reads
    out = tmp_path / "out"
    with pytest.raises(StrataError) as info:
        write_dockerfiles(fake, out)
    assert "\n" not in str(info.value)
    assert _tree(tmp_path) == {"out": "/"}

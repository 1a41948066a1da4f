"""The rendered Dockerfiles of the default matrix are reviewed as golden files.

When a change to matrix.yaml or layers/ is intended, regenerate them and review the diff:
    strata render --out tests/golden/hermetic && strata render --profile upstream --out tests/golden/upstream
"""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.matrix.load import load_matrix
from builder.plan.graph import build_plan

REPO = Path(__file__).resolve().parents[4]
GOLDEN = REPO / "tests" / "golden"
UPDATE = "strata render --out tests/golden/hermetic && strata render --profile upstream --out tests/golden/upstream"


@pytest.mark.parametrize("profile", ["hermetic", "upstream"])
def test_rendered_dockerfiles_match_golden_files(profile: str) -> None:
    plan = build_plan(load_matrix(REPO / "matrix.yaml", profile))
    rendered = {n.id: n.dockerfile for n in plan.nodes}
    golden = {p.parent.name: p.read_text() for p in (GOLDEN / profile).glob("*/Dockerfile")}
    assert sorted(golden) == sorted(rendered), f"node set changed; regenerate with: {UPDATE}"
    changed = [node for node in rendered if rendered[node] != golden[node]]
    assert not changed, f"rendering changed for {', '.join(changed)}; if intended, regenerate with: {UPDATE}"

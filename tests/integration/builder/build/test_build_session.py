"""The build session's canonicalizing worker processes, against the real engine: errors come back whole."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest

from builder.build.orchestrate import BuildSession, canonicalizer_pool
from builder.errors import StrataError
from builder.plan.graph import Plan
from builder.settings import resolve_settings

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[4]


def test_a_failure_in_a_worker_process_names_the_node(
    engine: docker.DockerClient, default_plan: Plan
) -> None:
    node = default_plan.node("user-example-tf2.13.1-cpu")
    # Only the engine and the plan are used to canonicalize; builder, server and directories are not.
    session = BuildSession(default_plan, engine, resolve_settings(os.environ), None, None, REPO, REPO)  # type: ignore[arg-type]
    with canonicalizer_pool(1) as pool:
        session.canonicalizers = pool
        with pytest.raises(StrataError) as raised:
            session.canonicalize("strata-build/no-such-raw-image:0", node)
    message = str(raised.value)
    assert message.startswith(f"node {node.id}: canonicalizing: "), message
    assert "strata-build/no-such-raw-image:0" in message and "not in the Docker engine" in message, message
    assert "\n" not in message

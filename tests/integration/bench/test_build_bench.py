"""bench/build.py against the real `strata build`: its no-op phase reads every node from the events file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from builder.events import NodeFinished, read_events

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[3]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_build_integration", REPO / "bench" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load()


def test_no_op_phase_reads_statuses_and_times_from_strata_events(
    cpu_cells_built: dict[str, str], tmp_path: Path
) -> None:
    nodes = bench.plan_nodes("*-cpu")
    results = bench.Results(only="*-cpu", nodes=nodes, logs=tmp_path)
    timeline = bench.noop_build(results, "*-cpu", "*-cpu", nodes)
    assert timeline is not None and results.notes == []
    assert timeline.statuses() == {n.id: "cached" for n in nodes}
    # Every node's event, in plan order, placed on the bench's clock inside the run it came from.
    events = list(read_events(tmp_path / "strata-noop-*-cpu.events.jsonl"))
    assert [e.node for e in events if isinstance(e, NodeFinished)] == [n.id for n in nodes]
    ends = [timeline.nodes[n.id].end for n in nodes]
    assert all(end is not None and 0.0 < end < timeline.total for end in ends), (ends, timeline.total)

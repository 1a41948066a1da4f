"""The in-image workload script: Python 3.9-compatible, stdlib + numpy + TF only, and its pure timing logic."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from validate.bench import workloads
from validate.bench.workloads import (
    coefficient_of_variation,
    run_queue_delay_s,
    steal_s,
    summarize_steps,
    time_steps,
    warmup_steps,
)

SCRIPT = Path(workloads.__file__)


def test_script_parses_as_python_3_9() -> None:
    ast.parse(SCRIPT.read_text(), feature_version=(3, 9))


def test_script_imports_only_stdlib_numpy_and_tensorflow() -> None:
    tree = ast.parse(SCRIPT.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    not_allowed = {
        r for r in roots - {"numpy", "tensorflow", "__future__"} if r not in sys.stdlib_module_names
    }
    assert not_allowed == set()
    # Runtime __import__("...") calls count too.
    dynamic = {
        n.args[0].value
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and getattr(n.func, "id", "") == "__import__"
        and isinstance(n.args[0], ast.Constant)
    }
    assert dynamic <= {"numpy"}


def test_warmup_ends_at_the_first_steady_window() -> None:
    times = [5.0, 2.0, 1.2, 1.0, 1.0, 1.01, 0.99, 1.0, 1.0]
    assert warmup_steps(times, 5, 0.05) == 3
    assert warmup_steps([1.0, 2.0] * 5, 5, 0.05) is None


def test_summary_of_a_run_that_never_settles_uses_its_second_half() -> None:
    times = [1.0, 3.0] * 6
    summary = summarize_steps(times, "cpu")
    assert summary["steady"] is False and summary["warmup_steps"] is None
    assert summary["steady_median_step_s"] == 2.0
    settled = summarize_steps([4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], "cpu")
    assert settled["warmup_steps"] == 1 and settled["warmup_s"] == 4.0
    assert settled["steady_median_step_s"] == 1.0 and settled["steady_step_cv"] == 0.0


class FakeClock:
    """perf_counter for time_steps: a step advances it by its work; each read while stalling by a tick."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        self.now += 1e-6
        return self.now


def test_sleep_fraction_hook_stretches_each_step_by_that_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(workloads.time, "perf_counter", clock.perf_counter)

    def step() -> None:
        clock.now += 0.02  # 20 ms of work

    plain, delays, _ = time_steps(step, 5, 0.0)
    slowed, _, first_done = time_steps(step, 5, 0.5)
    assert first_done > 0
    assert len(delays) == 5 and all(d >= 0 for d in delays)
    assert all(t == pytest.approx(0.02, abs=1e-5) for t in plain)
    assert all(t == pytest.approx(0.03, abs=1e-5) for t in slowed)  # stalled for half the step, not asleep


def test_run_queue_delay_reads_linux_schedstat() -> None:
    delay = run_queue_delay_s()
    assert delay is not None and delay >= 0.0


def test_steal_time_is_read_per_cpu_from_proc_stat() -> None:
    stolen = steal_s({0})
    assert stolen is not None and stolen >= 0.0
    assert steal_s({100_000}) is None  # no such CPU: nothing to report, not zero


def test_the_fastest_steady_step_is_summarized() -> None:
    summary = summarize_steps([4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 1.2], "cpu")
    assert summary["warmup_steps"] == 1 and summary["best_step_s"] == 0.9


def test_contention_is_summarized_from_run_queue_delays() -> None:
    times = [2.0] + [1.0] * 9
    summary = summarize_steps(times, "cpu", [0.0] + [0.25] * 9)
    assert summary["warmup_steps"] == 1
    assert summary["run_queue_delay_fraction"] == pytest.approx(0.25)
    assert summary["steady_median_uncontended_step_s"] == pytest.approx(0.75)
    assert summarize_steps(times, "cpu")["run_queue_delay_fraction"] is None


def test_cv_of_short_lists() -> None:
    assert coefficient_of_variation([2.0]) == 0.0
    assert coefficient_of_variation([1.0, 1.0, 1.0]) == 0.0


def test_bad_arguments_exit_non_zero_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        workloads.main(["--workload", "matmul", "--device", "cpu", "--steps", "2"]) == workloads.EXIT_BAD_ARGS
    )
    assert capsys.readouterr().err.strip() == "strata-bench: matmul: --steps must be at least 6"

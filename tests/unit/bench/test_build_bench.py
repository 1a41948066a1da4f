"""The pure helpers of bench/build.py: baseline Dockerfiles, BuildKit step times, `strata build` timelines read
from the events `strata build --events FILE` writes, and the alternating rounds' statistics and report."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType

import pytest

from builder.events import (
    BuilderChosen,
    Event,
    FetchDone,
    FetchProgress,
    JsonLinesWriter,
    NodeCanonicalizing,
    NodeFinished,
    NodeOutput,
    NodeStarted,
    NodeStatus,
    NodeStep,
)

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "tests" / "golden" / "hermetic"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_build", REPO / "bench" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load()


@pytest.mark.parametrize("node", ["tf2.13.1-cpu-py3.11", "tools-tf2.10.1-cpu", "user-example-tf2.13.1-cpu"])
def test_baseline_dockerfile_installs_from_the_index_with_hashes(node: str) -> None:
    original = (GOLDEN / node / "Dockerfile").read_text()
    text, rewritten = bench.baseline_dockerfile(original, "/run/secrets/ca.crt")
    assert rewritten == 1
    assert "--no-index" not in text and '--find-links "${WHEELHOUSE_URL}"' not in text
    assert "--require-hashes" in text
    assert "RUN --mount=type=secret,id=ca,target=/run/secrets/ca.crt SOURCE_DATE_EPOCH=" in text
    assert "pip install --cert /run/secrets/ca.crt " in text
    # Everything but the install instruction (and the comment before it) is the rendered Dockerfile.
    assert [
        ln for ln in text.splitlines() if "pip" not in ln and "bench baseline" not in ln and "--" not in ln
    ] == [ln for ln in original.splitlines() if "pip" not in ln and "--" not in ln]


def test_baseline_dockerfile_leaves_base_nodes_alone() -> None:
    original = (GOLDEN / "base-bookworm" / "Dockerfile").read_text()
    assert bench.baseline_dockerfile(original) == (original, 0)


def test_baseline_dockerfile_refuses_an_install_it_does_not_understand() -> None:
    odd = 'RUN pip install --no-index --no-index --find-links "${WHEELHOUSE_URL}" --require-hashes -r x\n'
    with pytest.raises(ValueError, match="expected one '--no-index', found 2"):
        bench.baseline_dockerfile(odd)


BUILDKIT_LOG = """\
#1 [internal] load build definition from Dockerfile
#1 DONE 0.1s
#7 [install 2/3] COPY requirements.lock /tmp/strata/requirements.lock
#7 DONE 0.2s
#8 [install 3/3] RUN SOURCE_DATE_EPOCH=1700000000 pip install --no-cache-dir -r /tmp/strata/requirements.lock
#8 sha256:abc
#8 3.1 Processing ./tensorflow_cpu-2.13.1.whl
#8 DONE 81.5s
#9 [stage-1 2/3] COPY --from=install /opt/strata/framework /opt/strata/framework
#9 DONE 12.0s
#10 [stage-1 1/3] FROM base
#10 CACHED
#11 exporting to image
#11 exporting layers 30.1s done
#11 DONE 30.4s
"""


def test_buildkit_steps_and_their_summary() -> None:
    steps = bench.buildkit_steps(BUILDKIT_LOG)
    assert [s.number for s in steps] == [1, 7, 8, 9, 10, 11]
    assert steps[2].name.startswith("[install 3/3] RUN SOURCE_DATE_EPOCH")
    assert steps[4].seconds is None  # cached
    summary = bench.summarize_steps(steps)
    assert summary == bench.StepSummary(install=81.5, export=30.4, other=pytest.approx(12.3))


def test_summarize_steps_without_timings_is_unknown() -> None:
    assert bench.summarize_steps(bench.buildkit_steps("Step 1/3 : FROM x\n")) == bench.StepSummary(
        None, None, None
    )


STARTED = datetime(2024, 5, 1, 17, 0, 0, tzinfo=timezone.utc)


def _at(seconds: float) -> datetime:
    return STARTED + timedelta(seconds=seconds)


def _through_a_file(tmp_path: Path, events: list[Event]) -> list[Event]:
    """The events as the bench reads them: written by `strata --events` (the same writer), read back."""
    path = tmp_path / "events.jsonl"
    with JsonLinesWriter(path) as write:
        for event in events:
            write(event)
    return bench.run_events(path)


def test_strata_timeline_splits_nodes_into_phases(tmp_path: Path) -> None:
    events = [
        BuilderChosen("buildkit-cli", "/usr/bin/docker embeds BuildKit", time=_at(1.5)),
        FetchProgress(100_000_000, "tensorflow.whl", time=_at(20.0)),
        FetchDone(12, 300_000_000, 0, time=_at(40.0)),
        NodeStarted("base-bookworm", time=_at(40.5)),
        NodeStep("base-bookworm", "#5 [1/2] ADD rootfs.tar /", time=_at(41.2)),
        NodeCanonicalizing("base-bookworm", time=_at(49.5)),
        NodeFinished("base-bookworm", NodeStatus.BUILT, 19.4, 139_800_000, time=_at(59.9)),
        NodeStarted("tf2.13.1-cpu-py3.11", time=_at(61.0)),
        NodeOutput("tf2.13.1-cpu-py3.11", "#8 3.1 Processing ./tensorflow_cpu-2.13.1.whl", time=_at(80.0)),
        NodeCanonicalizing("tf2.13.1-cpu-py3.11", time=_at(150.0)),
        NodeFinished("tf2.13.1-cpu-py3.11", NodeStatus.BUILT, 139.0, time=_at(199.0)),
    ]
    timeline = bench.strata_timeline(
        _through_a_file(tmp_path, events), ["base-bookworm", "tf2.13.1-cpu-py3.11"], 201.0, STARTED
    )
    assert timeline.builder == "buildkit-cli (/usr/bin/docker embeds BuildKit)"
    assert timeline.wheelhouse == "12 downloaded (300 MB), 0 reused"
    assert timeline.fetch_seconds == pytest.approx(38.5)
    base = timeline.nodes["base-bookworm"]
    assert (base.status, base.context_seconds) == (NodeStatus.BUILT, 0.0)  # context is inside the engine step
    assert base.engine_seconds == pytest.approx(9.0) and base.canonicalize_seconds == pytest.approx(10.4)
    tf = timeline.nodes["tf2.13.1-cpu-py3.11"]
    assert tf.engine_seconds == pytest.approx(89.0) and tf.canonicalize_seconds == pytest.approx(49.0)
    assert timeline.first_node_at == pytest.approx(40.5) and timeline.last_node_end == pytest.approx(199.0)
    assert timeline.errors == []


def test_strata_timeline_of_a_run_that_died_ends_nodes_at_the_next_start(tmp_path: Path) -> None:
    events = [
        NodeStarted("a", time=_at(2.0)),
        NodeStarted("b", time=_at(5.0)),
        NodeFinished(
            "b",
            NodeStatus.FAILED,
            4.0,
            message="node b failed: disk full (log: build/logs/b.log)",
            time=_at(9.0),
        ),
    ]
    timeline = bench.strata_timeline(_through_a_file(tmp_path, events), ["a", "b"], 10.0, STARTED)
    assert timeline.nodes["a"].end == pytest.approx(5.0) and timeline.nodes["b"].end == pytest.approx(9.0)
    assert timeline.nodes["a"].canonicalize_seconds is None and timeline.nodes["a"].status is None
    assert timeline.statuses()["b"] is NodeStatus.FAILED
    assert timeline.errors == ["node b failed: disk full (log: build/logs/b.log)"]


def test_no_op_nodes_are_cached_and_other_nodes_events_are_ignored(tmp_path: Path) -> None:
    events = [
        NodeFinished("base-bookworm", NodeStatus.CACHED, size=139_800_000, time=_at(1.9)),
        NodeFinished("base-bullseye", NodeStatus.PULLED, time=_at(1.95)),  # not one of the selected nodes
    ]
    timeline = bench.strata_timeline(_through_a_file(tmp_path, events), ["base-bookworm"], 2.0, STARTED)
    assert timeline.statuses() == {"base-bookworm": NodeStatus.CACHED}
    assert timeline.first_node_at is None and timeline.builder == "" and timeline.fetch_seconds is None


def test_a_run_that_wrote_no_event_file_has_no_events(tmp_path: Path) -> None:
    assert bench.run_events(tmp_path / "never-written.jsonl") == []


def test_progress_lines_are_echoed_but_not_the_summary_table() -> None:
    assert bench.progress_line("[17:00:01] strata builder: legacy (no buildx)      progress.py:113")
    assert bench.progress_line("           base-bookworm building                 progress.py:113")
    assert not bench.progress_line("                        strata build                        ")
    assert not bench.progress_line("│ base-bookworm │ built  │ 19.4s    │ 139.8 MB │")
    assert not bench.progress_line("   ")


def test_ratio_table_and_failure_line() -> None:
    assert bench.ratio(30.0, 60.0) == "0.50" and bench.ratio(1.0, 0.0) == "-"
    table = bench.format_table(["phase", "s"], [["cold", "12.5"], ["no-op", "1.9"]])
    assert table.splitlines() == ["phase     s", "-----  ----", "cold   12.5", "no-op   1.9"]
    assert bench.failure_line("#8 3.0 ok\nERROR: failed to solve: exit code 1\n#9 done\n") == (
        "ERROR: failed to solve: exit code 1"
    )


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["/usr/bin/python3", "-m", "cli.main", "build", "--only", "*-cpu"], "build"),
        (
            [
                "/root/.pyenv/versions/3.11.7/bin/python3.11",
                "/root/.pyenv/versions/3.11.7/bin/strata",
                "verify",
            ],
            "verify",
        ),
        (["/work/main/.venv/bin/strata", "lock", "--check"], "lock"),
        (["/work/main/.venv/bin/strata", "plan", "--format", "json"], None),
        (["python3", "bench/build.py", "--only", "*-cpu"], None),
        (["/usr/bin/docker", "build", "--tag", "strata-build/x:1", "."], None),
    ],
)
def test_strata_command_finds_runs_that_race_with_the_bench(argv: list[str], command: str | None) -> None:
    assert bench.strata_command(argv) == command


def test_plan_changes_names_new_hashes_and_added_or_removed_nodes() -> None:
    before = [("base", "h1"), ("tf", "h2"), ("gone", "h3")]
    after = [("base", "h1"), ("tf", "h9"), ("new", "h4")]
    assert bench.plan_changes(before, after) == ["gone", "new", "tf"]
    assert bench.plan_changes(before, before) == []


def test_processes_the_bench_started_are_not_other_runs() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert bench._is_ours(child.pid)
        assert not bench._is_ours(1)
    finally:
        child.kill()
        child.wait()


def test_busy_core_seconds_counts_work_but_not_idle_waiting_or_stolen_time() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice (guest time is already in user)
    line = "cpu  1000 50 400 9000 300 10 40 700 200 0\ncpu0 500 25 200 4500 150 5 20 350 100 0\n"
    assert bench.busy_core_seconds(line, 100) == pytest.approx(15.0)
    earlier = bench.busy_core_seconds("cpu  900 50 350 8000 300 10 40 100 0 0\n", 100)
    assert bench.busy_core_seconds(line, 100) - earlier == pytest.approx(1.5)


def test_the_machine_is_busier_after_doing_work() -> None:
    before = bench.machine_busy_seconds()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert bench.machine_busy_seconds() - before >= 0.25


def test_three_rounds_alternate_the_sides_as_the_docstring_says() -> None:
    assert bench.round_schedule(3) == [
        (0, "strata"),
        (0, "baseline"),
        (1, "baseline"),
        (1, "strata"),
        (2, "strata"),
        (2, "baseline"),
    ]
    assert "S B B S S B" in (bench.__doc__ or "")


def test_a_schedule_without_baseline_is_strata_rounds_only() -> None:
    assert bench.round_schedule(2, with_baseline=False) == [(0, "strata"), (1, "strata")]


def test_a_schedule_needs_at_least_one_round() -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        bench.round_schedule(0)


def test_median_of_odd_and_even_counts() -> None:
    assert bench.median([5.0, 1.0, 3.0]) == 3.0
    assert bench.median([10.0, 1.0, 4.0, 2.0]) == 3.0
    with pytest.raises(ValueError, match="no values"):
        bench.median([])


def test_spread_skips_rounds_that_were_not_measured() -> None:
    s = bench.spread([110.0, None, 90.0, 100.0])
    assert (s.median, s.low, s.high) == (100.0, 90.0, 110.0)
    assert s.relative_percent == pytest.approx(20.0)
    assert bench.spread([None, None]) is None


def test_spread_of_one_run_is_zero() -> None:
    s = bench.spread([42.0])
    assert (s.median, s.low, s.high, s.relative_percent) == (42.0, 42.0, 42.0, 0.0)
    assert bench.percent_text(s) == "0.0%" and bench.range_text(s) == "42.0-42.0"


def test_paired_ratios_pair_rounds_and_leave_gaps() -> None:
    assert bench.paired_ratios([40.0, 60.0, None], [100.0, 120.0, 90.0]) == [0.4, 0.5, None]


def test_the_median_round_is_the_lower_middle_of_the_measured_rounds() -> None:
    assert bench.median_round([300.0, 100.0, 200.0]) == 2
    assert bench.median_round([400.0, 100.0, None, 200.0]) == 3  # a failed round is not a candidate
    assert bench.median_round([400.0, 100.0, None, 200.0, 300.0]) == 3  # even count: the lower middle
    assert bench.median_round([]) is None


def test_verdict_compares_the_ratio_with_the_target() -> None:
    assert bench.verdict(0.5, 0.5) == "PASS (0.50 <= 0.5)"
    assert bench.verdict(1.04, 1.0) == "FAIL (1.04 > 1)"
    assert bench.verdict(None, 1.0) == "n/a"
    assert bench.verdict(0.3, None) == "-"


def test_summary_row_of_three_rounds() -> None:
    quantity = bench.Quantity("cold", (45.0, 55.0, 50.0), (100.0, 90.0, 120.0), target=0.5)
    row = dict(zip(bench.SUMMARY_HEADER, bench.summary_row(quantity)))
    assert row["quantity"] == "cold"
    assert row["S median"] == "50.0" and row["B median"] == "100.0"
    assert row["ratio"] == "0.50" and row["verdict"] == "PASS (0.50 <= 0.5)"
    assert row["paired ratios"] == "0.45 0.61 0.42" and row["paired min-max"] == "0.42-0.61"
    assert bench.summary_row(quantity)[2:4] == ["45.0-55.0", "20.0%"]  # strata min-max, (max-min)/median
    assert bench.summary_row(quantity)[5:7] == ["90.0-120.0", "30.0%"]
    assert row["target"] == "<= 0.5"


def test_summary_row_fails_a_target_the_medians_miss() -> None:
    row = bench.summary_row(bench.Quantity("busy core-s", (130.0,), (100.0,), target=1.0))
    assert row[-1] == "FAIL (1.30 > 1)" and row[-3] == "1.30-1.30"
    assert bench.summary_row(bench.Quantity("x", (None,), (100.0,)))[7:] == ["-", "-", "-", "", "-"]


def _plan_node(node_id: str, layer: str, parent: str | None) -> object:
    return bench.PlanNode(node_id, layer, parent, "0" * 64, f"strata-cache/{node_id}:x", (), True)


NODES = [_plan_node("base-bookworm", "base", None), _plan_node("tf-cpu", "framework", "base-bookworm")]


def _strata_round(index: int, total: float, base_end: float, cpu: float, failed: str = "") -> object:
    timeline = bench.StrataTimeline(total=total, builder="buildkit-cli (test)", builder_at=1.0)
    timeline.nodes = {
        "base-bookworm": bench.NodeTimes(
            start=2.0, build=2.0, canonicalize=8.0, end=base_end, status=NodeStatus.BUILT
        ),
        "tf-cpu": bench.NodeTimes(
            start=base_end, build=base_end, canonicalize=total - 5, end=total - 1, status=NodeStatus.BUILT
        ),
    }
    return bench.StrataRound(index, timeline=timeline, failed=failed, cpu=cpu)


def _baseline_round(index: int, base: float, tf: float, cpu: float) -> object:
    nodes = {
        "base-bookworm": bench.BaselineNode(seconds=base, status=NodeStatus.BUILT),
        "tf-cpu": bench.BaselineNode(seconds=tf, status=NodeStatus.BUILT),
    }
    return bench.BaselineRound(index, f"run{index}", nodes=nodes, total=base + tf, cpu=cpu)


def _two_rounds(tmp_path: Path) -> object:
    results = bench.Results(only="*-cpu", nodes=NODES, logs=tmp_path, repeat=2)
    # Round 1 ran S B, round 2 B S (the order does not matter for the figures, only for drift).
    results.strata_rounds = [_strata_round(0, 60.0, 12.0, 100.0), _strata_round(1, 40.0, 12.0, 80.0)]
    results.baseline_rounds = [_baseline_round(0, 20.0, 80.0, 100.0), _baseline_round(1, 20.0, 80.0, 120.0)]
    return results


def test_round_figures_without_the_base_nodes(tmp_path: Path) -> None:
    results = _two_rounds(tmp_path)
    strata, baseline = bench.figures_by_round(results)
    assert strata[0] == bench.RoundFigures(cold=60.0, without_base=50.0, busy=100.0)  # base ran 2 s to 12 s
    assert baseline[1] == bench.RoundFigures(cold=100.0, without_base=80.0, busy=120.0)


def test_report_of_two_rounds_shows_medians_ratios_and_verdicts(tmp_path: Path) -> None:
    results = _two_rounds(tmp_path)
    [cold, without_base, busy] = [
        dict(zip(bench.SUMMARY_HEADER, bench.summary_row(q))) for q in bench.quantities(results)
    ]
    assert (cold["S median"], cold["B median"], cold["ratio"]) == (
        "50.0",
        "100.0",
        "0.50",
    )
    assert cold["paired ratios"] == "0.60 0.40" and cold["verdict"] == "PASS (0.50 <= 0.5)"
    assert cold["S median"] == "50.0" and cold["S min-max"] == "40.0-60.0" and cold["S spread"] == "40.0%"
    assert (cold["B min-max"], cold["B spread"]) == ("100.0-100.0", "0.0%")
    assert (without_base["ratio"], without_base["target"], without_base["verdict"]) == (
        "0.50",
        "",
        "-",
    )
    assert (busy["S median"], busy["B median"], busy["ratio"]) == (
        "90.0",
        "110.0",
        "0.82",
    )
    assert busy["verdict"] == "PASS (0.82 <= 1)"
    text = bench.report(results)
    assert "'*-cpu': 2 of 2 round(s) run, sides alternating (S B B S)" in text
    assert "PASS (0.50 <= 0.5)" in text and "PASS (0.82 <= 1)" in text
    lines = text.splitlines()
    first = lines.index("per round (raw figures):") + 3  # after the header and its underline
    round_lines = [ln.split() for ln in lines[first : first + 2]]
    assert round_lines == [
        ["1", "S", "B", "60.0", "50.0", "100.0", "100.0", "80.0", "100.0", "0.60", "1.00", "ok"],
        ["2", "B", "S", "40.0", "30.0", "80.0", "100.0", "80.0", "120.0", "0.40", "0.67", "ok"],
    ]
    # The breakdown comes from the (lower) median round of each side: strata round 2 (40 s), baseline round 1.
    assert "fixed costs (s), round 2 (median total of 2):" in text
    assert "per node (s), strata round 2 (median total of 2), baseline round 1 (median total of 2):" in text


def test_a_failed_round_is_reported_and_left_out_of_the_medians(tmp_path: Path) -> None:
    results = bench.Results(only="*-cpu", nodes=NODES, logs=tmp_path, repeat=3)
    results.strata_rounds = [_strata_round(0, 60.0, 12.0, 100.0)]
    results.baseline_rounds = [_baseline_round(0, 20.0, 80.0, 100.0), _baseline_round(1, 20.0, 100.0, 90.0)]
    results.strata_rounds.append(
        _strata_round(1, 30.0, 12.0, 50.0, failed="exit 1: node tf-cpu failed: disk full")
    )
    results.failed = "round 2/3 strata failed: exit 1: node tf-cpu failed: disk full"
    cold = bench.summary_row(bench.quantities(results)[0])
    assert cold[1:3] == ["60.0", "60.0-60.0"] and cold[4] == "110.0"  # strata: round 1 only; baseline: both
    assert cold[7:10] == ["0.55", "0.60 -", "0.60-0.60"] and cold[-1] == "FAIL (0.55 > 0.5)"
    text = bench.report(results)
    assert "strata FAILED: exit 1: node tf-cpu failed: disk full" in text
    assert "stopped early: round 2/3 strata failed" in text
    assert "2 of 3 round(s) run" in text


def test_repeat_must_be_a_whole_number_of_at_least_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.repeat_count("3") == 3
    assert bench.main(["--repeat", "0"]) == 2
    assert capsys.readouterr().err == "bench: --repeat must be at least 1, got 0\n"
    assert bench.main(["--repeat", "two"]) == 2
    assert capsys.readouterr().err == "bench: --repeat wants a whole number of rounds, got 'two'\n"


def test_targets_are_half_the_baseline_time_and_no_more_cpu() -> None:
    assert (bench.COLD_TARGET_RATIO, bench.BUSY_TARGET_RATIO, bench.DEFAULT_REPEAT) == (0.5, 1.0, 3)


def test_a_failed_baseline_round_names_the_node_that_failed_not_its_skipped_children(tmp_path: Path) -> None:
    failed = bench.BaselineRound(0, "run0", total=30.0, cpu=20.0)
    failed.nodes = {
        "base-bookworm": bench.BaselineNode(
            seconds=30.0, status=NodeStatus.FAILED, message="ERROR: no space"
        ),
        "tf-cpu": bench.BaselineNode(status=NodeStatus.SKIPPED, message="parent base-bookworm failed"),
    }
    assert failed.failed == "base-bookworm: ERROR: no space"
    assert bench.baseline_figures(failed, {"base-bookworm"}) == bench.RoundFigures(None, None, None)
    results = bench.Results(only="*-cpu", nodes=NODES, logs=tmp_path, repeat=1)
    results.strata_rounds = [_strata_round(0, 60.0, 12.0, 100.0)]
    results.baseline_rounds = [failed]
    [row] = bench.round_rows(results)
    assert row[1:3] == ["S B", "60.0"] and row[5] == "-" and row[8] == "-"
    assert row[-1] == "baseline FAILED: base-bookworm: ERROR: no space"


def test_strata_only_rounds_have_no_ratios(tmp_path: Path) -> None:
    results = bench.Results(only="*-cpu", nodes=NODES, logs=tmp_path, repeat=2, skip_baseline=True)
    results.strata_rounds = [_strata_round(0, 60.0, 12.0, 100.0), _strata_round(1, 50.0, 12.0, 90.0)]
    assert [(r[1], r[2], r[-1]) for r in bench.round_rows(results)] == [
        ("S", "60.0", "ok"),
        ("S", "50.0", "ok"),
    ]
    cold = bench.summary_row(bench.quantities(results)[0])
    assert cold[1] == "55.0" and cold[7] == "-" and cold[-1] == "n/a"

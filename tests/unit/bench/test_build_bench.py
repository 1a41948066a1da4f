"""The pure helpers of bench/build.py: baseline Dockerfiles, BuildKit step times, `strata build` timelines."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

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


def test_strata_timeline_splits_nodes_into_phases() -> None:
    lines = [
        (
            1.5,
            "[17:00:01] strata builder: buildkit-cli (/usr/bin/docker embeds BuildKit)       progress.py:48",
        ),
        (
            40.0,
            "           strata wheelhouse: 12 downloaded (300 MB), 0 reused                     progress.py:48",
        ),
        (
            40.5,
            "[17:00:40] base-bookworm preparing context                                      progress.py:48",
        ),
        (
            41.0,
            "           base-bookworm building                                               progress.py:48",
        ),
        (
            41.2,
            "           base-bookworm #5 [1/2] ADD rootfs.tar /                              progress.py:48",
        ),
        (
            50.0,
            "[17:00:50] base-bookworm canonicalizing                                         progress.py:48",
        ),
        (
            60.0,
            "[17:01:00] tf2.13.1-cpu-py3.11 preparing context                                progress.py:48",
        ),
        (
            61.0,
            "           tf2.13.1-cpu-py3.11 building                                         progress.py:48",
        ),
        (
            150.0,
            "           tf2.13.1-cpu-py3.11 canonicalizing                                  progress.py:48",
        ),
        (200.0, "                        strata build"),
        (200.0, "┃ node                ┃ status ┃ duration ┃ size     ┃"),
        (200.0, "│ base-bookworm       │ built  │ 19.4s    │ 139.8 MB │"),
        (200.0, "│ tf2.13.1-cpu-py3.11 │ built  │ 139.0s   │ 1.3 GB   │"),
    ]
    timeline = bench.strata_timeline(lines, ["base-bookworm", "tf2.13.1-cpu-py3.11"], 201.0)
    assert timeline.builder.startswith("buildkit-cli")
    assert timeline.wheelhouse == "12 downloaded (300 MB), 0 reused"
    assert timeline.fetch_seconds == pytest.approx(38.5)
    base = timeline.nodes["base-bookworm"]
    assert (base.status, base.context_seconds, base.engine_seconds) == ("built", 0.5, 9.0)
    assert base.canonicalize_seconds == pytest.approx(9.9)  # ends at start + its summary duration
    tf = timeline.nodes["tf2.13.1-cpu-py3.11"]
    assert tf.engine_seconds == 89.0 and tf.canonicalize_seconds == pytest.approx(49.0)
    assert timeline.first_node_at == 40.5 and timeline.last_node_end == pytest.approx(199.0)


def test_strata_timeline_without_summary_ends_nodes_at_the_next_start() -> None:
    lines = [
        (1.0, "a preparing context"),
        (2.0, "a building"),
        (5.0, "b preparing context"),
        (9.0, "strata: node b failed: disk full (log: build/logs/b.log)"),
    ]
    timeline = bench.strata_timeline(lines, ["a", "b"], 10.0)
    assert timeline.nodes["a"].end == 5.0 and timeline.nodes["b"].end == 10.0
    assert timeline.nodes["a"].canonicalize_seconds is None
    assert timeline.errors == ["strata: node b failed: disk full (log: build/logs/b.log)"]


def test_no_op_summary_rows_are_cached() -> None:
    lines = [(1.9, "│ base-bookworm │ cached │ -        │ 139.8 MB │")]
    timeline = bench.strata_timeline(lines, ["base-bookworm"], 2.0)
    assert timeline.statuses() == {"base-bookworm": "cached"}


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


def test_strata_timeline_starts_a_node_at_building_when_no_context_event() -> None:
    lines = [
        (2.0, "           base-bookworm building                 progress.py:48"),
        (14.0, "[18:04:58] base-bookworm canonicalizing          progress.py:48"),
        (22.0, "│ base-bookworm │ built  │ 20.0s    │ 139.8 MB │"),
    ]
    times = bench.strata_timeline(lines, ["base-bookworm"], 22.5).nodes["base-bookworm"]
    assert (times.context_seconds, times.engine_seconds, times.canonicalize_seconds) == (0.0, 12.0, 8.0)


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

"""The progress lines people read: rendered from typed events, word for word what `strata` always printed."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pytest

from builder.events import (
    BuilderChosen,
    Event,
    FetchDone,
    FetchProgress,
    NodeCanonicalizing,
    NodeFinished,
    NodeOutput,
    NodeRebuilding,
    NodeStarted,
    NodeStatus,
    NodeStep,
    NodeVerified,
    PushFinished,
    PushMismatch,
    PushReading,
    PushStatus,
    PushUploading,
)
from cli.progress import BuildReporter, FetchMeter, Reporter, build_message, push_message

LONG_STEP = "#8 [install 3/3] RUN " + "pip install x " * 20


@pytest.mark.parametrize(
    ("event", "quiet_line", "verbose_line"),
    [
        (BuilderChosen("buildkit-cli", "probe ok"), "builder: buildkit-cli (probe ok)", None),
        (FetchProgress(212_400_000, "a.whl"), "wheelhouse: 212 MB fetched (now a.whl)", None),
        (FetchDone(12, 300_400_000, 3), "wheelhouse: 12 downloaded (300 MB), 3 reused", None),
        (NodeStarted("n"), "building", None),
        (NodeCanonicalizing("n"), "canonicalizing", None),
        (NodeStep("n", LONG_STEP), LONG_STEP[:160], LONG_STEP),
        (NodeOutput("n", "#8 3.1 Processing x.whl"), None, "#8 3.1 Processing x.whl"),
        (NodeRebuilding("n", 1, 2), None, "rebuild 1/2 from scratch"),
        (NodeFinished("n", NodeStatus.BUILT, 41.23, 812_400_000), "built 41.2s 812.4 MB", None),
        (NodeFinished("n", NodeStatus.CACHED), "cached", None),
        (
            NodeFinished("n", NodeStatus.FAILED, 2.0, message="RUN pip: exit 1"),
            "failed 2.0s RUN pip: exit 1",
            None,
        ),
    ],
)
def test_build_lines(event: Event, quiet_line: str | None, verbose_line: str | None) -> None:
    assert build_message(event) == quiet_line
    assert build_message(event, verbose=True) == (verbose_line or quiet_line)


def test_push_lines() -> None:
    assert push_message(PushMismatch("n", "sha256:c", "sha256:e")) == (
        "registry content tag holds config sha256:c, engine has sha256:e"
    )
    assert push_message(PushReading("n")) == "reading its layers from the engine"
    assert (
        push_message(PushUploading("n", "127.0.0.1:5000/strata/base"))
        == "pushing to 127.0.0.1:5000/strata/base"
    )
    assert push_message(PushFinished("n", PushStatus.SKIPPED, 0.04, "r:t")) == "skipped in 0.0s"


def test_plain_lines_are_numbered_timestamped_unwrapped_and_name_no_source_file() -> None:
    out = io.StringIO()
    reporter = BuildReporter("plain", stream=out)
    at = datetime(2026, 12, 2, 8, 14, 3, tzinfo=timezone.utc)
    long_step = "#8 [install 3/3] RUN " + "pip install x " * 9
    for event in (
        BuilderChosen("legacy", "no buildx", time=at),
        NodeStarted("base", time=at),
        NodeStarted("base", time=at),
        NodeStarted("tf2.13.1-cpu-py3.11", time=at),
        NodeStep("tf2.13.1-cpu-py3.11", long_step, time=at),
        NodeFinished("tf2.13.1-cpu-py3.11", NodeStatus.BUILT, 41.2, time=at),
    ):
        reporter.event(event)
    assert out.getvalue().splitlines() == [
        "#0 08:14:03 strata builder: legacy (no buildx)",
        "#1 08:14:03 base building",
        "#2 08:14:03 tf2.13.1-cpu-py3.11 building",
        f"#2 08:14:03 tf2.13.1-cpu-py3.11 {long_step}",
        "#2 08:14:03 tf2.13.1-cpu-py3.11 built 41.2s",
    ]
    assert ".py:" not in out.getvalue()


def test_quiet_reporter_prints_nothing() -> None:
    out = io.StringIO()
    with BuildReporter("quiet", stream=out) as reporter:
        reporter.event(NodeStarted("base"))
    assert out.getvalue() == ""


def test_live_view_counts_nodes_bytes_and_time_left() -> None:
    out = io.StringIO()
    reporter = Reporter("tty", total=2, message=push_message, title="push", stream=out)
    with reporter:
        reporter.event(PushUploading("base", "127.0.0.1:5000/strata/base"))
        reporter.event(PushFinished("base", PushStatus.PUSHED, 3.0, "r:t", bytes_uploaded=120_000_000))
        overall = reporter._progress.tasks[0] if reporter._progress else None
        assert overall is not None and overall.completed == 1
        line = reporter.overall()
        assert "1/2 nodes done" in line and "120.0 MB transferred" in line and "left" in line
    assert "base pushed in 3.0s, 120.0 MB uploaded" in out.getvalue()


def test_fetch_meter_names_each_file_and_its_bytes() -> None:
    out = io.StringIO()
    with FetchMeter("plain", stream=out, step=100) as meter:
        meter("a.whl", 60)
        meter("b.whl", 30)
        meter("a.whl", 60)
    meter.finish()
    lines = [line.split(" ", 2)[2] for line in out.getvalue().splitlines()]
    assert lines == [
        "strata fetching a.whl",
        "strata fetching b.whl",
        "strata 150 B fetched",
        "strata fetched a.whl 120 B",
        "strata fetched b.whl 30 B",
    ]
    assert meter.files == {"a.whl": 120, "b.whl": 30}


def test_verify_live_view_counts_a_node_done_when_it_is_verified_not_when_its_build_ends() -> None:
    reporter = BuildReporter("tty", total=1, stream=io.StringIO(), verify=True)
    with reporter:
        reporter.event(NodeFinished("base", NodeStatus.CACHED))
        assert reporter.overall().startswith("0/1 nodes done")
        reporter.event(NodeVerified("base", True, ("sha256:a", "sha256:a")))
        assert reporter.overall().startswith("1/1 nodes done")

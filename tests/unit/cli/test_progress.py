"""The progress lines people read: rendered from typed events, word for word what `strata` always printed."""

from __future__ import annotations

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
    PushFinished,
    PushMismatch,
    PushReading,
    PushStatus,
    PushUploading,
)
from cli.progress import BuildReporter, build_message, push_message

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
        (NodeFinished("n", NodeStatus.BUILT, 1.0), None, None),
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


def test_reporter_prints_a_node_line_once_and_labels_run_lines_strata(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = BuildReporter()
    for event in (BuilderChosen("legacy", "no buildx"), NodeStarted("base"), NodeStarted("base")):
        reporter.event(event)
    err = capsys.readouterr().err
    assert "strata builder: legacy (no buildx)" in err
    assert err.count("base building") == 1


def test_quiet_reporter_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    BuildReporter(quiet=True).event(NodeStarted("base"))
    assert capsys.readouterr().err == ""

"""`$GITHUB_STEP_SUMMARY`: build, smoke and push append a short Markdown table; without it nothing is written."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.build.orchestrate import NodeOutcome
from builder.events import NodeStatus, PushStatus
from cli import summary
from cli.main import main
from validate.smoke.check_result import CheckResult
from validate.smoke.results import ImageReport


def test_build_summary_is_a_table_of_nodes_with_status_time_and_size(tmp_path: Path) -> None:
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n")
    outcomes = [
        NodeOutcome("base-bookworm", NodeStatus.BUILT, 41.23, 139_800_000),
        NodeOutcome("tf2.13.1-cpu-py3.11", NodeStatus.FAILED, 2.0, message="RUN pip | exit 1"),
        NodeOutcome("tools-tf2.13.1-cpu", NodeStatus.SKIPPED),
    ]
    written = summary.write_step_summary(
        summary.build_summary(outcomes), {"GITHUB_STEP_SUMMARY": str(target)}
    )
    assert written == target
    assert target.read_text().splitlines() == [
        "earlier step",
        "### strata build: 3 nodes",
        "",
        "| node | status | time | size |",
        "|---|---|---|---|",
        "| base-bookworm | built | 41.2s | 139.8 MB |",
        "| tf2.13.1-cpu-py3.11 | failed: RUN pip \\| exit 1 | 2.0s | - |",
        "| tools-tf2.13.1-cpu | skipped | - | - |",
        "",
    ]


def test_smoke_and_push_summaries(tmp_path: Path) -> None:
    report = ImageReport(
        image="127.0.0.1:5000/strata/tensorflow:2.13.1-cpu",
        digest="sha256:" + "1" * 64,
        checks=[CheckResult("tf-version", "pass"), CheckResult("gpu", "not-run", "no GPU")],
        duration_s=12.34,
    )
    text = summary.smoke_summary([report])
    assert "| 127.0.0.1:5000/strata/tensorflow:2.13.1-cpu | pass | 1 / 0 / 1 | 12.3s |" in text
    pushed = SimpleNamespace(
        node="base-bookworm",
        status=PushStatus.PUSHED,
        bytes_uploaded=52_000_000,
        seconds=3.04,
        message="",
        manifest_digest="sha256:" + "2" * 64,
        target=SimpleNamespace(version_ref="127.0.0.1:5000/strata/base:bookworm-r1"),
    )
    line = f"| base-bookworm | pushed | 52.0 MB | 3.0s | 127.0.0.1:5000/strata/base:bookworm-r1 | `sha256:{'2' * 64}` |"
    assert line in summary.push_summary([pushed], 3.5).splitlines()


def test_nothing_is_written_without_the_variable_and_an_unwritable_file_only_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert summary.write_step_summary("x", {}) is None
    assert summary.write_step_summary("x", {"GITHUB_STEP_SUMMARY": str(tmp_path / "no" / "dir.md")}) is None
    assert "cannot append to $GITHUB_STEP_SUMMARY" in capsys.readouterr().err


def test_smoke_command_appends_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(target))
    report = ImageReport(image="img:1", digest="sha256:" + "3" * 64, checks=[CheckResult("x", "pass")])
    monkeypatch.setattr("cli.smoke.runner.connect", lambda settings: None)
    monkeypatch.setattr("cli.smoke.runner.smoke_images", lambda client, images, **kw: [report])
    assert main(["smoke", "img:1", "--results-dir", str(tmp_path), "--progress", "quiet"]) == 0
    assert "### strata smoke: 1 images" in target.read_text()
    assert "| img:1 | pass | 1 / 0 / 0 |" in target.read_text()

"""`strata smoke` argument handling and the one-line error when there is no engine."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from builder.errors import StrataError
from cli import smoke as smoke_command


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="strata")
    smoke_command.register(root.add_subparsers())
    return root


def test_defaults_and_options() -> None:
    args = parser().parse_args(["smoke", "a:1", "b:2"])
    assert args.images == ["a:1", "b:2"]
    assert (args.expect_gpu, args.gpus, args.format, args.out) == (False, None, "table", None)
    assert (
        args.results_dir is None
    )  # the handler puts results under the state root (settings.smoke_results_dir)
    args = parser().parse_args(
        ["smoke", "a:1", "--expect-gpu", "--gpus", "all", "--format", "junit", "--timeout", "60"]
    )
    assert (args.expect_gpu, args.gpus, args.format, args.timeout) == (True, "all", "junit", 60.0)
    assert args.func is smoke_command.handle


@pytest.mark.parametrize(
    "argv", [["--gpus", "0"], ["--gpus", "two"], ["--timeout", "-1"], ["--format", "xml"]]
)
def test_bad_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["smoke", "a:1", *argv])
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["smoke", "--help"])
    assert "strata smoke --expect-gpu --gpus 1" in capsys.readouterr().out


def test_no_engine_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A real client pointed at a socket nobody listens on: the same path as a host without a daemon.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    args = parser().parse_args(["smoke", "a:1", "--results-dir", str(tmp_path)])
    with pytest.raises(StrataError) as exc:
        args.func(args)
    message = str(exc.value)
    assert message.startswith("smoke: the Docker engine: not reachable")
    assert "\n" not in message

"""`strata bench` argument parsing and the commands that only read the ledger."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from builder.errors import StrataError
from cli import bench as commands
from validate.bench.ledger import Ledger, RunInfo
from validate.bench.metrics import Repetition


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="strata")
    commands.register(p.add_subparsers(dest="command"))
    return p


def seed_ledger(path: Path, speeds: dict[str, float], noise: float = 0.003) -> None:
    rng = np.random.default_rng(0)
    with Ledger.open(path) as ledger:
        images = list(speeds)
        ledger.record_run(
            RunInfo("run1", "2025-01-01T00:00:00+00:00", "cpu", "tiny", 5, 0, images, ["matmul"], [])
        )
        for r in range(5):
            for image in images:
                value = speeds[image] * np.exp(rng.normal(0, noise))
                doc = {
                    "workload": "matmul",
                    "size": "tiny",
                    "device": "cpu",
                    "samples_per_step": 1,
                    "device_count": 1,
                    "steady_median_step_s": 1 / value,
                    "step_times_s": [1 / value] * 8,
                    "warmup_steps": 0,
                    "steady": True,
                    "cold_start_s": 5.0,
                    "env": {"cpu_model": "x"},
                }
                ledger.add(
                    Repetition.from_result(
                        doc,
                        run_id="run1",
                        image=image,
                        image_id=f"sha256:{image}",
                        repo_digest=None,
                        repetition=r,
                        order_index=r,
                        started_at="2025-01-01T00:00:00+00:00",
                    )
                )


def test_parser_wires_each_subcommand_to_its_handler() -> None:
    p = parser()
    run = p.parse_args(["bench", "run", "a", "b", "--workload", "matmul", "--repeats", "3"])
    assert run.func is commands.run_command and run.images == ["a", "b"] and run.workload == ["matmul"]
    assert p.parse_args(["bench", "compare", "a", "b"]).func is commands.compare_command
    assert p.parse_args(["bench", "history", "t"]).func is commands.history_command
    assert p.parse_args(["bench", "report"]).func is commands.report_command


def test_compare_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "l.sqlite"
    seed_ledger(ledger, {"ref": 100.0, "same": 100.0, "slow": 90.0, "noisy": 100.0})
    p = parser()
    args = p.parse_args(["bench", "compare", "ref", "same", "--ledger", str(ledger)])
    assert args.func(args) == 0
    assert "overall: equivalent" in capsys.readouterr().out
    args = p.parse_args(["bench", "compare", "ref", "slow", "--ledger", str(ledger)])
    assert args.func(args) == 1
    assert "overall: regression" in capsys.readouterr().out


def test_compare_and_history_on_a_missing_ledger_are_one_line_errors(tmp_path: Path) -> None:
    p = parser()
    for argv in (["bench", "compare", "a", "b"], ["bench", "history", "a"], ["bench", "report"]):
        args = p.parse_args([*argv, "--ledger", str(tmp_path / "none.sqlite")])
        with pytest.raises(StrataError, match="no benchmark ledger here"):
            args.func(args)


def test_history_prints_one_line_per_run_and_workload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = tmp_path / "l.sqlite"
    seed_ledger(ledger, {"ref": 100.0})
    args = parser().parse_args(["bench", "history", "ref", "--ledger", str(ledger)])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "matmul" in lines[1] and lines[1].rstrip().endswith("5")


def test_compare_and_history_json_follow_their_schemas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], json_contract: Any
) -> None:
    ledger = tmp_path / "l.sqlite"
    seed_ledger(ledger, {"ref": 100.0, "slow": 90.0})
    p = parser()
    args = p.parse_args(["bench", "compare", "ref", "slow", "--ledger", str(ledger), "--format", "json"])
    assert args.func(args) == 1
    doc = json_contract(capsys.readouterr().out)
    assert doc["verdict"] == "regression" and doc["workloads"][0]["workload"] == "matmul"
    assert doc["workloads"][0]["ratio"] < 0.95
    args = p.parse_args(["bench", "history", "ref", "--ledger", str(ledger), "--format", "json"])
    assert args.func(args) == 0
    doc = json_contract(capsys.readouterr().out)
    assert [(pt["workload"], pt["repetitions"]) for pt in doc["points"]] == [("matmul", 5)]

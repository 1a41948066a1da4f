"""Reports and ledger comparisons from synthetic repetitions with a planted 10% slowdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from builder.errors import StrataError
from validate.bench.ledger import Ledger, RunInfo
from validate.bench.metrics import Repetition
from validate.bench.report import compare_images, worst_verdict, write_report
from validate.bench.stats import Verdict

IMAGES = ["img:ref", "img:slow", "img:same"]
TRUE_SPEED = {"img:ref": 100.0, "img:slow": 100.0 / 1.1, "img:same": 100.0}


def fill(ledger: Ledger, seed: int = 1, repeats: int = 6) -> None:
    rng = np.random.default_rng(seed)
    schedule = [(i, w, r) for r in range(repeats) for w in ("matmul", "input-pipeline") for i in IMAGES]
    ledger.record_run(
        RunInfo(
            "run1",
            "2025-01-01T00:00:00+00:00",
            "cpu",
            "tiny",
            repeats,
            seed,
            IMAGES,
            ["matmul", "input-pipeline"],
            schedule,
        )
    )
    for index, (image, workload, r) in enumerate(schedule):
        value = (
            TRUE_SPEED[image] * (3.0 if workload == "input-pipeline" else 1.0) * np.exp(rng.normal(0, 0.004))
        )
        doc = {
            "workload": workload,
            "size": "tiny",
            "device": "cpu",
            "samples_per_step": 4,
            "device_count": 1,
            "steady_median_step_s": 4 / value,
            "step_times_s": [4 / value] * 10,
            "warmup_steps": 1,
            "steady": True,
            "cold_start_s": 6.0,
            "env": {"cpu_model": "AMD EPYC", "tf_version": "2.13.1", "python": "3.11.7"},
        }
        ledger.add(
            Repetition.from_result(
                doc,
                run_id="run1",
                image=image,
                image_id=f"sha256:{image[4:]}00000000",
                repo_digest=None,
                repetition=r,
                order_index=index,
                started_at="2025-01-01T00:00:00+00:00",
            )
        )


def test_compare_images_finds_the_planted_regression_and_the_equivalent(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        fill(ledger)
        slow = compare_images(ledger, "img:ref", "img:slow")
        same = compare_images(ledger, "img:ref", "sha256:same0000", workloads=["matmul"])
    assert [(c.workload, c.comparison.verdict) for c in slow] == [
        ("input-pipeline", Verdict.REGRESSION),
        ("matmul", Verdict.REGRESSION),
    ]
    assert slow[0].comparison.ratio == pytest.approx(1 / 1.1, abs=0.01)
    assert [c.comparison.verdict for c in same] == [Verdict.EQUIVALENT]
    assert worst_verdict(slow + same) is Verdict.REGRESSION


def test_too_few_repetitions_is_a_one_line_error(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        fill(ledger, repeats=2)
        with pytest.raises(
            StrataError, match="img:ref: workload input-pipeline has 2 comparable repetitions"
        ):
            compare_images(ledger, "img:ref", "img:slow")


def test_report_writes_markdown_html_and_plots(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        fill(ledger)
        files = write_report(ledger, tmp_path / "report")
    md = files.markdown.read_text()
    assert "| img:slow | matmul |" in md and "REGRESSION" in md and "EQUIVALENT" in md
    assert "![throughput](throughput.png)" in md
    html = files.html.read_text()
    assert "<td>REGRESSION</td>" in html and "<img src='throughput.png'" in html
    for plot in files.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    # Compute index: the slow image's effective throughput is ~1/1.1 of the reference on both workloads.
    index_line = next(line for line in md.splitlines() if line.startswith("| img:slow | 0."))
    assert float(index_line.split("|")[2]) == pytest.approx(1 / 1.1, abs=0.02)


def test_report_rejects_an_unknown_run_or_reference(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.sqlite") as ledger:
        fill(ledger)
        with pytest.raises(StrataError, match="no run 'nope'"):
            write_report(ledger, tmp_path / "r", run_id="nope")
        with pytest.raises(StrataError, match="img:other: not an image of run run1"):
            write_report(ledger, tmp_path / "r", reference="img:other")

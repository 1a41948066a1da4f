"""The per-digest result store that promotion reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import StrataError
from validate.smoke.check_result import CheckResult
from validate.smoke.results import ImageReport, load_report, require_pass, result_path, save_report

DIGEST = "sha256:" + "ab" * 32


def report(*checks: CheckResult, expect_gpu: bool = False) -> ImageReport:
    return ImageReport(image="strata/tf:2.13.1-cpu", digest=DIGEST, checks=list(checks), log="line1\nline2\n",
                       expect_gpu=expect_gpu)  # fmt: skip


def test_save_and_load_round_trip_with_the_full_log(tmp_path: Path) -> None:
    original = report(CheckResult.passed("a", "ok"), CheckResult.not_run("gpu-visible", "no GPU visible"))
    path = save_report(tmp_path, original)
    assert path == tmp_path / f"{DIGEST}.json"
    loaded = load_report(tmp_path, DIGEST)
    assert loaded is not None
    assert loaded.checks == original.checks
    assert loaded.log == "line1\nline2\n"
    assert loaded.status == "pass"


def test_status_fails_on_any_failed_check() -> None:
    assert report(CheckResult.passed("a"), CheckResult.failed("b", "x", "y")).status == "fail"
    assert report(CheckResult.not_run("a", "why")).status == "pass"


def test_result_path_rejects_a_tag_where_a_digest_belongs(tmp_path: Path) -> None:
    with pytest.raises(StrataError, match="not an image digest"):
        result_path(tmp_path, "strata/tf:latest")


def test_require_pass_for_promotion(tmp_path: Path) -> None:
    with pytest.raises(StrataError, match="no smoke result"):
        require_pass(tmp_path, DIGEST)
    save_report(tmp_path, report(CheckResult.failed("tf-version", "2.12.0", "2.13.1")))
    with pytest.raises(StrataError, match="smoke failed: tf-version"):
        require_pass(tmp_path, DIGEST)
    save_report(tmp_path, report(CheckResult.passed("tf-version")))
    assert require_pass(tmp_path, DIGEST).status == "pass"
    with pytest.raises(StrataError, match="without --expect-gpu"):
        require_pass(tmp_path, DIGEST, expect_gpu=True)

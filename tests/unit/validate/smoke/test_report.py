"""Report shapes: every check is a JUnit testcase; not-run is skipped with its reason, never passed."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from validate.smoke.check_result import CheckResult
from validate.smoke.report import render
from validate.smoke.results import ImageReport

REPORT = ImageReport(
    image="strata/tf:2.13.1-gpu",
    digest="sha256:" + "cd" * 32,
    checks=[
        CheckResult.passed("tf-import", "tensorflow 2.13.1"),
        CheckResult.failed("cuda-lib:libcudnn", "libcudnn.so.8 loadable", "cannot open shared object file"),
        CheckResult.not_run("gpu-matmul", "no GPU visible"),
    ],
    log="W Could not load dynamic library 'libcudnn.so.8'\n",
    duration_s=12.5,
)


def test_junit_has_one_testcase_per_check_with_failure_and_skip() -> None:
    root = ET.fromstring(render([REPORT], "junit"))
    assert root.get("tests") == "3" and root.get("failures") == "1" and root.get("skipped") == "1"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "strata/tf:2.13.1-gpu"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["tf-import", "cuda-lib:libcudnn", "gpu-matmul"]
    assert list(cases["tf-import"]) == []
    failure = cases["cuda-lib:libcudnn"].find("failure")
    assert failure is not None
    assert failure.get("message") == "expected libcudnn.so.8 loadable, found cannot open shared object file"
    skipped = cases["gpu-matmul"].find("skipped")
    assert skipped is not None and skipped.get("message") == "not-run: no GPU visible"
    out = suite.find("system-out")
    assert out is not None and "libcudnn.so.8" in (out.text or "")


def test_json_and_table() -> None:
    (data,) = json.loads(render([REPORT], "json"))
    assert data["status"] == "fail" and data["counts"] == {"pass": 1, "fail": 1, "not-run": 1}
    assert data["checks"][1]["found"] == "cannot open shared object file"
    table = render([REPORT], "table")
    assert "FAIL  (1 pass, 1 fail, 1 not-run)" in table
    assert "gpu-matmul         not-run  no GPU visible" in table


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown report format"):
        render([REPORT], "xml")

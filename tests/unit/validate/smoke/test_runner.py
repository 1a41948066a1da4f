"""Pure parts of the smoke runner: reading the container's output and what a timeout means."""

from __future__ import annotations

import io
import json
import tarfile

from validate.smoke import runner
from validate.smoke.check_result import FAIL, PASS, PLAN_MARKER, RESULT_MARKER, CheckResult
from validate.smoke.checks import SmokeContext
from validate.smoke.runner import ContainerRun, complete_results, parse_output


def stdout_of(planned: list[str], results: list[CheckResult], noise: str = "") -> str:
    lines = [PLAN_MARKER + json.dumps(planned)]
    lines += [RESULT_MARKER + json.dumps(r.to_dict()) for r in results]
    return "\n".join(lines) + "\n" + noise


def test_parse_output_reads_plan_and_results_and_reports_garbage() -> None:
    results = [CheckResult.passed("a"), CheckResult.failed("b", "1", "2")]
    out = stdout_of(["a", "b", "c"], results, noise=RESULT_MARKER + "{not json\nplain print\n")
    planned, parsed, bad = parse_output(out)
    assert planned == ["a", "b", "c"]
    assert parsed == results
    assert bad == [RESULT_MARKER + "{not json"]


def test_timeout_fails_every_check_that_did_not_report() -> None:
    run = ContainerRun(planned=["a", "b", "c"], results=[CheckResult.passed("a")], timed_out=True)
    done = complete_results(run, 30)
    assert [(r.name, r.status) for r in done] == [("a", PASS), ("b", FAIL), ("c", FAIL)]
    assert done[1].detail == "timed out after 30 s"


def test_a_crash_fails_the_missing_checks_with_the_exit_code() -> None:
    run = ContainerRun(planned=["a", "b"], results=[CheckResult.passed("a")], exit_code=139)
    assert complete_results(run, 30)[1].detail == "the check never reported; container exited 139"


def test_no_plan_means_the_run_itself_failed_with_the_log_tail() -> None:
    run = ContainerRun(log="strata smoke: no python in the image\n", exit_code=127)
    (only,) = complete_results(run, 30)
    assert only.name == "smoke-run" and only.status == FAIL
    assert only.found == "exit 127, no plan printed: strata smoke: no python in the image"
    timed_out = complete_results(ContainerRun(timed_out=True), 5)
    assert timed_out[0].summary() == "fail: timed out after 5 s"


def test_context_archive_carries_the_check_code_readable_by_any_uid() -> None:
    ctx = SmokeContext(image="i:1", labels={"io.strata.layer": "user"}, expect_gpu=True, gpus="2")
    with tarfile.open(fileobj=io.BytesIO(runner.context_archive(ctx))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {
            "tmp/strata-smoke",
            "tmp/strata-smoke/checks.py",
            "tmp/strata-smoke/gpu_checks.py",
            "tmp/strata-smoke/check_result.py",
            "tmp/strata-smoke/context.json",
        }
        assert all(m.mode & 0o004 for m in members.values())
        raw = tar.extractfile("tmp/strata-smoke/context.json")
        assert raw is not None
        assert SmokeContext.from_json(raw.read().decode()) == ctx


def test_gpu_requests() -> None:
    assert runner.device_requests(None) == []
    (req,) = runner.device_requests("all")
    assert req["Count"] == -1 and req["Capabilities"] == [["gpu"]]
    assert runner.device_requests("2")[0]["Count"] == 2
    assert runner.SmokeOptions(expect_gpu=True).gpu_request == "all"
    assert runner.SmokeOptions(expect_gpu=True, gpus="1").gpu_request == "1"
    assert runner.SmokeOptions().gpu_request is None

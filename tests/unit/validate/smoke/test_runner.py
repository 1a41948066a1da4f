"""Pure parts of the smoke runner: reading the container's output and what a timeout means."""

from __future__ import annotations

import json
from pathlib import Path

from validate.smoke import gpu_checks, runner
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


def test_check_payload_carries_the_check_code_and_the_context() -> None:
    ctx = SmokeContext(image="i:1", labels={"io.strata.layer": "user"}, expect_gpu=True, gpus="2")
    payload = runner.check_payload(ctx)
    assert payload.directory == "/tmp/strata-smoke"
    assert set(payload.files) == {"checks.py", "gpu_checks.py", "check_result.py", "context.json"}
    assert payload.files["gpu_checks.py"] == Path(gpu_checks.__file__).read_bytes()
    assert SmokeContext.from_json(payload.files["context.json"].decode()) == ctx


def test_check_spec_runs_checks_py_with_the_context_and_the_gpus_asked_for() -> None:
    ctx = SmokeContext(image="i:1", gpus="2")
    spec = runner.check_spec("sha256:abc", ctx, 30)
    assert spec.image == "sha256:abc" and spec.timeout_s == 30 and spec.gpus == "2"
    assert spec.entrypoint == ["/bin/sh", "-c", runner.PYTHON_LAUNCHER, "strata-smoke"]
    assert spec.command == ["/tmp/strata-smoke/checks.py", "/tmp/strata-smoke/context.json"]
    assert spec.payload is not None and spec.payload.path("checks.py") == spec.command[0]
    assert spec.labels == {"io.strata.smoke": "i:1"}


def test_gpu_request_follows_the_options() -> None:
    assert runner.SmokeOptions(expect_gpu=True).gpu_request == "all"
    assert runner.SmokeOptions(expect_gpu=True, gpus="1").gpu_request == "1"
    assert runner.SmokeOptions().gpu_request is None

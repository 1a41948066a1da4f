"""A correct image passes every check that can run here; the GPU checks say they did not run and why."""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import docker
import pytest

from builder.errors import StrataError
from cli import smoke as smoke_command
from validate.smoke.gpu_checks import GPU_CHECK_NAMES, LOG_CHECK_NAME
from validate.smoke.results import ImageReport, load_report
from validate.smoke.runner import smoke_images

pytestmark = pytest.mark.engine

MUST_PASS = [
    "labels-present",
    "labels-match-tag",
    "python-version",
    "tf-import",
    "tf-version",
    "tf-build-cuda",
    "pip-check",
    "env-promised",
    "user-uid",
    "workdir-writable",
    "keras-train-cpu",
    "secrets:private-key",
    "secrets:docker-auths",
    "secrets:registry-credentials",
    "secrets:host-ca-bundle",
]


@pytest.fixture(scope="module")
def good_report(
    docker_client: docker.DockerClient, smoke_good_image: str, tmp_path_factory: pytest.TempPathFactory
) -> ImageReport:
    results = tmp_path_factory.mktemp("results")
    (report,) = smoke_images(docker_client, [smoke_good_image], results_dir=results, timeout_s=600)
    return report


def test_good_image_passes(good_report: ImageReport) -> None:
    assert good_report.failures == [], [c.summary() for c in good_report.failures]
    assert good_report.status == "pass"
    for name in MUST_PASS:
        assert good_report.check(name).status == "pass", good_report.check(name).summary()
    assert "loss per epoch" in good_report.check("keras-train-cpu").detail


def test_gpu_checks_on_a_gpu_less_host_are_not_run_never_passed(good_report: ImageReport) -> None:
    for name in [*GPU_CHECK_NAMES, LOG_CHECK_NAME]:
        assert good_report.check(name).summary() == "not-run: no GPU visible"


def test_result_is_stored_per_digest_with_the_full_log(
    good_report: ImageReport, docker_client: docker.DockerClient, smoke_good_image: str
) -> None:
    digest = docker_client.images.get(smoke_good_image).id
    assert good_report.digest == digest
    assert good_report.log_path is not None
    stored = load_report(Path(good_report.log_path).parent, digest)
    assert stored is not None and stored.status == "pass"
    assert [c.name for c in stored.checks] == [c.name for c in good_report.checks]
    assert "tensorflow" in stored.log.lower()  # TF's own startup lines are kept, not just our markers


def test_cli_writes_junit_and_exits_zero(smoke_good_image: str, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="strata")
    smoke_command.register(parser.add_subparsers())
    out = tmp_path / "smoke.xml"
    args = parser.parse_args(
        ["smoke", smoke_good_image, "--format", "junit", "--out", str(out), "--results-dir", str(tmp_path)]
    )
    assert args.func(args) == 0
    suite = ET.parse(out).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    skipped = [c.get("name") for c in suite.iter("testcase") if c.find("skipped") is not None]
    assert "gpu-matmul" in skipped
    stored = json.loads(next(tmp_path.glob("sha256:*.json")).read_text())
    assert stored["status"] == "pass"


def test_timeout_kills_the_container_and_fails_what_did_not_report(
    docker_client: docker.DockerClient, smoke_good_image: str
) -> None:
    def smoke_containers() -> set[str]:
        return {c.id for c in docker_client.containers.list(all=True, filters={"label": "io.strata.smoke"})}

    before = smoke_containers()  # another smoke run on this engine (a second checkout) may have its own
    (report,) = smoke_images(
        docker_client, [smoke_good_image], timeout_s=2, results_dir=None, scan_secrets=False
    )
    timed_out = [c for c in report.failures if c.detail == "timed out after 2 s"]
    assert timed_out, [c.summary() for c in report.checks]
    assert report.status == "fail"
    assert smoke_containers() - before == set(), "the killed container was left behind"


def test_missing_image_is_a_one_line_error(docker_client: docker.DockerClient) -> None:
    with pytest.raises(StrataError, match="image strata-smoke-test/absent:0 is not in the local engine"):
        smoke_images(docker_client, ["strata-smoke-test/absent:0"], results_dir=None)

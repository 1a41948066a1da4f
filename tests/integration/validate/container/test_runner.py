"""The one in-container runner against the real engine, with the tf2.13.1-cpu cell's image (it runs as uid 1000).

Each test labels its container with a fresh value and checks afterwards that no container with it is left.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import docker
import pytest

from validate.container.payload import Payload
from validate.container.runner import ContainerError, ContainerSpec, run_container

pytestmark = pytest.mark.engine

LABEL = "io.strata.test-container"

PROBE = """
id -u
cat /tmp/strata-probe/hello.txt
echo "$GREETING"
echo to-stderr >&2
echo done > /tmp/strata-probe-result.txt
"""


@pytest.fixture
def label(docker_client: docker.DockerClient) -> Iterator[dict[str, str]]:
    """A label only this test's container carries; after the test, no container may carry it."""
    value = uuid.uuid4().hex
    yield {LABEL: value}
    left = docker_client.containers.list(all=True, filters={"label": f"{LABEL}={value}"})
    assert left == [], "the runner left a container behind"


def shell(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def test_payload_environment_user_logs_and_result_files(
    docker_client: docker.DockerClient, smoke_good_image: str, label: dict[str, str]
) -> None:
    spec = ContainerSpec(
        image=smoke_good_image,
        entrypoint=shell(PROBE),
        command=[],
        labels=label,
        timeout_s=120,
        payload=Payload("/tmp/strata-probe", {"hello.txt": b"hello from the host\n"}),
        environment={"GREETING": "hi"},
        user="4242:4242",  # a uid the image has never heard of still reads the payload
        result_files=["/tmp/strata-probe-result.txt", "/tmp/never-written"],
    )
    outcome = run_container(docker_client, spec)
    assert outcome.exit_code == 0 and not outcome.timed_out and outcome.gpu_refused is None, outcome.log
    assert outcome.stdout.splitlines() == ["4242", "hello from the host", "hi"]
    assert "to-stderr" in outcome.log and "hello from the host" in outcome.log
    assert dict(outcome.files) == {"/tmp/strata-probe-result.txt": b"done\n"}
    assert outcome.started_at is not None and not outcome.started_at.startswith("0001")


def test_the_image_user_is_kept_and_the_exit_code_reported(
    docker_client: docker.DockerClient, smoke_good_image: str, label: dict[str, str]
) -> None:
    spec = ContainerSpec(
        smoke_good_image, entrypoint=shell("id -u; exit 7"), command=[], labels=label, timeout_s=120
    )
    outcome = run_container(docker_client, spec)
    assert outcome.exit_code == 7 and not outcome.timed_out
    assert outcome.stdout.strip() == "1000"  # the user layer's USER, not root


def test_timeout_kills_the_container_and_keeps_what_it_printed(
    docker_client: docker.DockerClient, smoke_good_image: str, label: dict[str, str]
) -> None:
    started = time.monotonic()
    spec = ContainerSpec(
        smoke_good_image,
        entrypoint=shell("echo started; exec sleep 120"),
        command=[],
        labels=label,
        timeout_s=3,
    )
    outcome = run_container(docker_client, spec)
    assert outcome.timed_out and outcome.exit_code is None
    assert outcome.stdout.strip() == "started"
    assert time.monotonic() - started < 60  # killed, not waited out


def test_a_refused_gpu_request_comes_back_as_a_value(
    docker_client: docker.DockerClient, smoke_good_image: str, label: dict[str, str]
) -> None:
    if any("nvidia" in name for name in docker_client.info().get("Runtimes", {})):
        pytest.skip("this engine has an NVIDIA runtime; a refused GPU request cannot be provoked here")
    spec = ContainerSpec(smoke_good_image, command=["true"], labels=label, timeout_s=60, gpus="all")
    outcome = run_container(docker_client, spec)
    assert outcome.gpu_refused, outcome
    assert outcome.exit_code is None and outcome.stdout == ""


def test_an_image_the_engine_lacks_is_a_readable_error(docker_client: docker.DockerClient) -> None:
    spec = ContainerSpec(image="strata-test/absent:0", command=["true"], timeout_s=60)
    with pytest.raises(ContainerError, match="cannot create a container: .*strata-test/absent"):
        run_container(docker_client, spec)

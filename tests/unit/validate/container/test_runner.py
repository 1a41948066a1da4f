"""The runner's pure decisions: what a GPU request asks the engine for, and which timeouts bound a run."""

from __future__ import annotations

import math
from typing import Any, cast

import docker.errors
import pytest

from builder.errors import StrataError
from validate.container import runner
from validate.container.runner import (
    ContainerError,
    ContainerSpec,
    bounded_timeout,
    device_requests,
    exit_code_of,
    run_container,
)


def test_gpu_requests() -> None:
    assert device_requests(None) == []
    (every,) = device_requests("all")
    assert every["Count"] == -1 and every["Capabilities"] == [["gpu"]]
    (two,) = device_requests("2")
    assert two["Count"] == 2 and two["Capabilities"] == [["gpu"]]


@pytest.mark.parametrize("gpus", ["0", "-1", "two", ""])
def test_a_gpu_request_that_asks_for_nothing_sensible_is_refused(gpus: str) -> None:
    with pytest.raises(StrataError, match=f"a positive count or 'all', not {gpus!r}"):
        device_requests(gpus)


def test_a_timeout_bounds_the_run() -> None:
    assert bounded_timeout(0.5) == 0.5
    for unbounded in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(StrataError, match="finite number of seconds > 0"):
            bounded_timeout(unbounded)


def test_no_container_is_created_without_a_bound() -> None:
    # The client is never reached: the timeout is checked first (an object with no engine proves it).
    never_used = cast(Any, object())
    with pytest.raises(StrataError, match="not inf"):
        run_container(never_used, ContainerSpec(image="i", command=["true"], timeout_s=math.inf))


def test_exit_code_of_the_wait_answer() -> None:
    assert exit_code_of({"StatusCode": 3, "Error": None}) == 3
    assert exit_code_of({}) == -1


def test_a_refusal_names_the_step_and_keeps_the_engine_answer() -> None:
    error = ContainerError("start a container", "no such image")
    assert str(error) == "cannot start a container: no such image"
    assert error.explanation == "no such image" and isinstance(error, StrataError)


class _StubbornContainer:
    """A container whose removal the engine refuses `refusals` times (a kill still in flight), then accepts."""

    id = "0123456789abcdef"

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.attempts = 0

    def remove(self, force: bool) -> None:
        assert force
        self.attempts += 1
        if self.attempts <= self.refusals:
            raise docker.errors.APIError("409 Conflict: removal of container is already in progress")


def test_a_refused_removal_is_retried_until_the_container_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "REMOVE_BACKOFF_S", 0.0)
    container = _StubbornContainer(refusals=2)
    runner._remove(container)
    assert container.attempts == 3


def test_a_container_that_cannot_be_removed_is_an_error_not_a_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "REMOVE_BACKOFF_S", 0.0)
    container = _StubbornContainer(refusals=runner.REMOVE_ATTEMPTS)
    with pytest.raises(ContainerError, match="container 0123456789ab is still there"):
        runner._remove(container)
    assert container.attempts == runner.REMOVE_ATTEMPTS

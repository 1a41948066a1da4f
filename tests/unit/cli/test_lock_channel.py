"""`strata lock pull`: what names the registry and namespace is checked before any request is made."""

from __future__ import annotations

import pytest

from builder.errors import StrataError
from cli.lock_channel import check_channel


@pytest.mark.parametrize("namespace", ["strata", "team/vision", "a.b/c_d"])
def test_a_registry_and_repository_path_are_accepted(namespace: str) -> None:
    check_channel("127.0.0.1:5000", namespace)


@pytest.mark.parametrize(
    "namespace", ["../etc", "Strata", "a b", "strata\nRUN x", "strata/", "", "a?b=c", "x#y"]
)
def test_a_namespace_that_is_no_repository_path_is_one_line(namespace: str) -> None:
    with pytest.raises(StrataError) as refused:
        check_channel("127.0.0.1:5000", namespace)
    message = str(refused.value)
    assert message.startswith("--namespace must be a repository path") and "\n" not in message


@pytest.mark.parametrize("registry", ["127.0.0.1:70000", "host/path", "127.0.0.1:5000\n", "", "a b"])
def test_a_registry_that_is_no_host_port_is_one_line(registry: str) -> None:
    with pytest.raises(StrataError, match=r"^--registry must be a registry host\[:port\]"):
        check_channel(registry, "strata")

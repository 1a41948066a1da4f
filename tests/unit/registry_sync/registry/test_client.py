"""Pure parts of the registry client: challenges, ranges, backoff, addresses, error descriptions."""

from __future__ import annotations

import httpx
import pytest

from registry_sync.registry.client import (
    RegistryClient,
    RetryPolicy,
    describe_transport_error,
    is_loopback_host,
    parse_challenge,
    parse_range_end,
    url_origin,
)


def test_bearer_challenge_is_parsed():
    challenge = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
    )
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }


def test_basic_challenge_is_parsed():
    assert parse_challenge('Basic realm="strata"').params == {"realm": "strata"}


@pytest.mark.parametrize(
    ("header", "held"), [(None, 0), ("0-0", 0), ("0-1023", 1024), ("bytes=0-9", 10), ("garbage", 0)]
)
def test_range_end(header, held):
    assert parse_range_end(header) == held


def test_backoff_doubles_and_is_capped():
    assert RetryPolicy(attempts=6, first_delay=0.5, max_delay=3).delays() == [0.5, 1.0, 2.0, 3, 3]
    assert RetryPolicy(attempts=1).delays() == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.8.0.1", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("registry.example:5000", False),
        ("10.0.0.1:5000", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback_host(host) is loopback


def test_scheme_defaults():
    assert RegistryClient("127.0.0.1:5000").base_url == "http://127.0.0.1:5000"
    assert RegistryClient("registry.example").base_url == "https://registry.example"
    assert RegistryClient("https://127.0.0.1:5000").base_url == "https://127.0.0.1:5000"


def test_transport_errors_are_described_briefly():
    assert (
        describe_transport_error(httpx.ConnectError("[Errno 111] Connection refused")) == "connection refused"
    )
    assert describe_transport_error(httpx.ReadTimeout("timed out")) == "timed out"
    assert "TLS certificate not trusted" in describe_transport_error(
        httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    )


def test_missing_ca_file_is_reported(tmp_path):
    with pytest.raises(Exception, match="CA file .* does not exist"):
        RegistryClient("127.0.0.1:5000", ca_file=tmp_path / "nope.crt")


def test_origin_compares_scheme_host_and_port():
    assert url_origin("https://Reg.Example/v2/") == url_origin("https://reg.example:443/v2/x")
    assert url_origin("http://127.0.0.1:5000/v2/") != url_origin("http://127.0.0.1:5001/v2/")
    assert url_origin("http://reg.example/v2/") != url_origin("https://reg.example/v2/")

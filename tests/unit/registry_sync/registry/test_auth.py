"""Credentials lookup: the environment's only for the registries they are for, Docker config auths (keys as docker
normalises them, identity tokens), credential helpers; secrets never shown."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from builder.settings import resolve_settings
from registry_sync.registry.auth import (
    Credentials,
    CredentialsError,
    credential_key,
    registry_host,
    resolve_credentials,
)
from registry_sync.registry.connect import env_credential_hosts

ENV = {"STRATA_REGISTRY_USER": "ci", "STRATA_REGISTRY_PASSWORD": "s3cret"}


def write_config(tmp_path, config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_environment_wins_for_the_registries_it_is_for(tmp_path):
    config = write_config(tmp_path, {"auths": {"reg:5000": {"auth": base64.b64encode(b"u:p").decode()}}})
    found = resolve_credentials("reg:5000", env=ENV, docker_config=config, env_hosts=["https://reg:5000/"])
    assert (found.username, found.password, found.source) == ("ci", "s3cret", "environment")


def test_environment_credentials_never_go_to_another_registry(tmp_path):
    config = write_config(tmp_path, {"auths": {"src:5000": {"auth": base64.b64encode(b"u:p").decode()}}})
    found = resolve_credentials("src:5000", env=ENV, docker_config=config, env_hosts=["dst:5000"])
    assert (found.username, found.password) == ("u", "p")
    assert resolve_credentials("other:5000", env=ENV, docker_config=config, env_hosts=["dst:5000"]) is None
    assert resolve_credentials("dst:5001", env=ENV, docker_config=config, env_hosts=["dst:5000"]) is None
    assert resolve_credentials("dst:5000", env=ENV, docker_config=config) is None  # no host named: none


def test_the_hosts_the_environment_is_for_come_from_the_settings():
    settings = resolve_settings(
        {**ENV, "STRATA_REGISTRY": "ci.example:5000", "STRATA_REGISTRY_AUTH_HOSTS": "a:1, B:2"}
    )
    assert settings.registry_auth_hosts == ("a:1", "b:2")
    assert env_credential_hosts(settings, home="127.0.0.1:5000") == (
        "127.0.0.1:5000",
        "ci.example:5000",
        "a:1",
        "b:2",
    )
    assert env_credential_hosts(resolve_settings({})) == ()


@pytest.mark.parametrize(
    "key", ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io:443"]
)
def test_docker_hub_names_are_one_registry(tmp_path, key):
    config = write_config(tmp_path, {"auths": {key: {"auth": base64.b64encode(b"hubuser:pw").decode()}}})
    for name in ("registry-1.docker.io", "docker.io", "index.docker.io"):
        found = resolve_credentials(name, env={}, docker_config=config)
        assert (found.username, found.password) == ("hubuser", "pw"), (key, name)
    assert credential_key("https://index.docker.io/v1/") == credential_key("registry-1.docker.io")
    assert credential_key("docker.io.evil.example") == "docker.io.evil.example"


def test_identity_token_is_read_from_auths(tmp_path):
    entry = {"auth": base64.b64encode(b"alice:").decode(), "identitytoken": "refresh-me"}
    config = write_config(tmp_path, {"auths": {"reg:5000": entry}})
    found = resolve_credentials("reg:5000", env={}, docker_config=config)
    assert (found.username, found.password, found.identity_token) == ("alice", "", "refresh-me")
    assert "refresh-me" not in repr(found)
    only_token = write_config(tmp_path, {"auths": {"reg:5000": {"identitytoken": "t2"}}})
    assert resolve_credentials("reg:5000", env={}, docker_config=only_token).identity_token == "t2"


@pytest.mark.parametrize("key", ["reg:5000", "https://reg:5000", "https://reg:5000/v2/"])
def test_docker_config_auths_base64(tmp_path, key):
    config = write_config(tmp_path, {"auths": {key: {"auth": base64.b64encode(b"alice:pa:ss").decode()}}})
    found = resolve_credentials("reg:5000", env={}, docker_config=config)
    assert (found.username, found.password) == ("alice", "pa:ss")


def test_no_entry_means_no_credentials(tmp_path):
    config = write_config(tmp_path, {"auths": {"other:5000": {"auth": base64.b64encode(b"a:b").decode()}}})
    assert resolve_credentials("reg:5000", env={}, docker_config=config) is None
    assert resolve_credentials("reg:5000", env={}, docker_config=tmp_path / "missing.json") is None


def test_malformed_auth_names_the_file_not_the_secret(tmp_path):
    config = write_config(tmp_path, {"auths": {"reg:5000": {"auth": "not base64!"}}})
    with pytest.raises(CredentialsError, match="auths entry for reg:5000"):
        resolve_credentials("reg:5000", env={}, docker_config=config)


def test_credential_helper_is_asked(tmp_path, monkeypatch):
    # A real executable on PATH, answering the way docker-credential-* helpers do.
    helper = tmp_path / "bin" / "docker-credential-strata-test"
    helper.parent.mkdir()
    helper.write_text(
        "#!/bin/sh\nread host\n"
        'if [ "$host" = "reg:5000" ]; then echo \'{"ServerURL":"reg:5000","Username":"bob","Secret":"tok"}\'; '
        "else echo 'credentials not found in native keychain'; exit 1; fi\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    config = write_config(tmp_path, {"credHelpers": {"reg:5000": "strata-test"}, "credsStore": "strata-test"})
    found = resolve_credentials("reg:5000", env={}, docker_config=config)
    assert (found.username, found.password) == ("bob", "tok")
    assert resolve_credentials("elsewhere:1", env={}, docker_config=config) is None


def test_helper_gets_docker_hubs_key_and_token_answers_are_identity_tokens(tmp_path, monkeypatch):
    helper = tmp_path / "bin" / "docker-credential-strata-hub"
    helper.parent.mkdir()
    helper.write_text(
        "#!/bin/sh\nread host\n"
        'if [ "$host" = "https://index.docker.io/v1/" ]; then '
        'echo \'{"ServerURL":"x","Username":"<token>","Secret":"refresh-tok"}\'; '
        "else echo 'credentials not found in native keychain'; exit 1; fi\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    config = write_config(tmp_path, {"credsStore": "strata-hub"})
    found = resolve_credentials("registry-1.docker.io", env={}, docker_config=config)
    assert (found.username, found.password, found.identity_token) == ("", "", "refresh-tok")


def test_missing_helper_is_reported(tmp_path):
    config = write_config(tmp_path, {"credsStore": "does-not-exist-anywhere"})
    with pytest.raises(CredentialsError, match="docker-credential-does-not-exist-anywhere"):
        resolve_credentials("reg:5000", env={}, docker_config=config)


def test_password_never_in_repr_or_str():
    creds = Credentials("alice", "hunter2")
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds) and "alice" in repr(creds)


def test_registry_host():
    assert registry_host("https://Reg.Example:5000/v1/") == "reg.example:5000"

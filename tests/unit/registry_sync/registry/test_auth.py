"""Credentials lookup: environment, Docker config auths, credential helpers; secrets never shown."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from registry_sync.registry.auth import Credentials, CredentialsError, registry_host, resolve_credentials


def write_config(tmp_path, config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_environment_wins(tmp_path):
    config = write_config(tmp_path, {"auths": {"reg:5000": {"auth": base64.b64encode(b"u:p").decode()}}})
    env = {"STRATA_REGISTRY_USER": "ci", "STRATA_REGISTRY_PASSWORD": "s3cret"}
    found = resolve_credentials("reg:5000", env=env, docker_config=config)
    assert (found.username, found.password, found.source) == ("ci", "s3cret", "environment")


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


def test_missing_helper_is_reported(tmp_path):
    config = write_config(tmp_path, {"credsStore": "does-not-exist-anywhere"})
    with pytest.raises(CredentialsError, match="docker-credential-does-not-exist-anywhere"):
        resolve_credentials("reg:5000", env={}, docker_config=config)


def test_password_never_in_repr_or_str():
    creds = Credentials("alice", "hunter2")
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds) and "alice" in repr(creds)


def test_registry_host():
    assert registry_host("https://Reg.Example:5000/v1/") == "reg.example:5000"

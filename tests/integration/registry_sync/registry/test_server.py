"""`strata registry up/down/status` run Debian's docker-registry for real, plain and with htpasswd + TLS."""

from __future__ import annotations

import argparse
import stat

import pytest

from cli import registry as commands
from registry_sync.registry.client import RegistryAuthError, RegistryClient
from registry_sync.registry.server import ServerLayout, local_client

pytestmark = pytest.mark.engine


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="strata")
    commands.register(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_up_is_idempotent_and_down_stops_it(tmp_path, unused_address, capsys):
    port = unused_address.rsplit(":", 1)[1]
    data = str(tmp_path / "reg")
    try:
        assert run("registry", "up", "--data-dir", data, "--port", port) == 0
        assert f"registry up at http://127.0.0.1:{port}" in capsys.readouterr().out
        assert run("registry", "up", "--data-dir", data, "--port", port) == 0
        assert "already up" in capsys.readouterr().out
        assert run("registry", "status", "--data-dir", data) == 0
        with RegistryClient(f"127.0.0.1:{port}") as client:
            client.ping()
    finally:
        assert run("registry", "down", "--data-dir", data) == 0
    assert "stopped" in capsys.readouterr().out
    assert run("registry", "status", "--data-dir", data) == 1
    assert run("registry", "down", "--data-dir", data) == 0
    assert "was not running" in capsys.readouterr().out


def test_htpasswd_and_tls_never_print_the_password(tmp_path, unused_address, capsys):
    port = unused_address.rsplit(":", 1)[1]
    data = tmp_path / "reg"
    try:
        assert (
            run(
                "registry",
                "up",
                "--data-dir",
                str(data),
                "--port",
                port,
                "--auth",
                "htpasswd",
                "--tls",
                "--no-engine-trust",
            )
            == 0
        )
        out = capsys.readouterr().out
        layout = ServerLayout(data)
        password = layout.password_file.read_text().strip()
        assert password not in out
        assert str(layout.password_file) in out
        assert stat.S_IMODE(layout.password_file.stat().st_mode) == 0o600
        with local_client(data) as client:
            client.ping()
            assert client.list_tags("strata/none") == []
        anonymous = RegistryClient(f"127.0.0.1:{port}", ca_file=layout.ca_cert)
        with anonymous, pytest.raises(RegistryAuthError, match="requires credentials"):
            anonymous.list_tags("strata/none")
    finally:
        run("registry", "down", "--data-dir", str(data))

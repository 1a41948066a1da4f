"""Pure parts of the embedded registry: the generated config."""

from __future__ import annotations

from registry_sync.registry.server import ServerLayout, ServerSettings, render_config


def test_plain_config_binds_loopback_only(tmp_path):
    settings = ServerSettings(tmp_path, port=5123)
    config = render_config(settings, ServerLayout(tmp_path), "secret")
    assert config["http"] == {"addr": "127.0.0.1:5123", "secret": "secret"}
    assert "auth" not in config
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "storage")


def test_secure_config_has_tls_and_htpasswd(tmp_path):
    layout = ServerLayout(tmp_path)
    config = render_config(ServerSettings(tmp_path, tls=True, htpasswd=True), layout, "s")
    assert config["http"]["tls"] == {"certificate": str(layout.server_cert), "key": str(layout.server_key)}
    assert config["auth"]["htpasswd"]["path"] == str(layout.htpasswd)

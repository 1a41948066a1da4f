"""Open a client for a registry address: its credentials, its CA, and the embedded registry's own secrets.

with open_registry("127.0.0.1:5000", settings) as client:
    client.ping()
"""

from __future__ import annotations

from pathlib import Path

from builder.settings import Settings
from registry_sync.registry.auth import registry_host, resolve_credentials
from registry_sync.registry.client import RegistryClient, RetryPolicy
from registry_sync.registry.server import ServerLayout, local_client, local_credentials, registry_status


def client_for(
    registry: str, settings: Settings, ca_file: Path | None = None, data_dir: Path | None = None
) -> RegistryClient:
    """A client for `registry`: credentials from env/Docker config, else the embedded registry's own, and its CA."""
    host = registry_host(registry)
    data_dir = data_dir or settings.registry_dir
    embedded = registry_status(data_dir)
    is_embedded = embedded.address == host
    credentials = resolve_credentials(host, settings.environ) or (
        local_credentials(data_dir) if is_embedded else None
    )
    ca = ca_file or settings.registry_ca
    if ca is None and is_embedded and embedded.tls:
        ca = ServerLayout(data_dir).ca_cert
    return RegistryClient(host, credentials=credentials, ca_file=ca)


def open_registry(
    address: str,
    settings: Settings,
    data_dir: Path | None = None,
    retry: RetryPolicy | None = None,
    ca_file: Path | None = None,
) -> RegistryClient:
    """A client for `address`: the embedded registry's own client (its CA and generated password) when `address`
    is the embedded registry started from `data_dir` (default: settings.registry_dir) with TLS or htpasswd;
    otherwise `client_for` (credentials from the environment or Docker's config, `ca_file` or the settings' CA)."""
    data_dir = data_dir or settings.registry_dir
    layout = ServerLayout(data_dir)
    if registry_status(data_dir).address == address and (layout.ca_cert.exists() or layout.htpasswd.exists()):
        return local_client(data_dir, retry=retry)
    client = client_for(address, settings, ca_file, data_dir)
    if retry is not None:
        client.retry = retry
    return client

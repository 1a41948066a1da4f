"""Open a client for a registry address: its credentials, its CA, and the embedded registry's own secrets.

with open_registry("127.0.0.1:5000", settings, home=matrix.model.registry.address) as client:
    client.ping()
"""

from __future__ import annotations

from pathlib import Path

from builder.settings import Settings
from registry_sync.registry.auth import registry_host, resolve_credentials
from registry_sync.registry.client import RegistryClient, RetryPolicy
from registry_sync.registry.server import ServerLayout, local_client, local_credentials, registry_status


def env_credential_hosts(settings: Settings, home: str | None = None) -> tuple[str, ...]:
    """The registries STRATA_REGISTRY_USER/PASSWORD are for: the matrix's (`home`, the caller's
    registry.address; STRATA_REGISTRY when set) and STRATA_REGISTRY_AUTH_HOSTS."""
    hosts = (home, settings.registry_override, *settings.registry_auth_hosts)
    return tuple(registry_host(h) for h in hosts if h)


def client_for(
    registry: str,
    settings: Settings,
    ca_file: Path | None = None,
    data_dir: Path | None = None,
    home: str | None = None,
) -> RegistryClient:
    """A client for `registry`: its credentials (the environment's only when `registry` is one they are for,
    see env_credential_hosts; else Docker's config), else the embedded registry's own, and its CA."""
    host = registry_host(registry)
    data_dir = data_dir or settings.registry_dir
    embedded = registry_status(data_dir)
    is_embedded = embedded.address == host
    credentials = resolve_credentials(
        host, settings.environ, env_hosts=env_credential_hosts(settings, home)
    ) or (local_credentials(data_dir) if is_embedded else None)
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
    home: str | None = None,
) -> RegistryClient:
    """A client for `address`: the embedded registry's own client (its CA and generated password) when `address`
    is the embedded registry started from `data_dir` (default: settings.registry_dir) with TLS or htpasswd;
    otherwise `client_for` (credentials scoped as it says, `ca_file` or the settings' CA). `home` is the matrix's
    registry.address when the caller has a matrix."""
    data_dir = data_dir or settings.registry_dir
    layout = ServerLayout(data_dir)
    if registry_status(data_dir).address == address and (layout.ca_cert.exists() or layout.htpasswd.exists()):
        return local_client(data_dir, retry=retry)
    client = client_for(address, settings, ca_file, data_dir, home)
    if retry is not None:
        client.retry = retry
    return client

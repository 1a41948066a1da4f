"""Registry credentials, each scoped to the registry it is for.

- STRATA_REGISTRY_USER / STRATA_REGISTRY_PASSWORD (the run's environment) are for one registry only: the matrix's
  (STRATA_REGISTRY, or registry.address, which the caller names) and the hosts listed in
  STRATA_REGISTRY_AUTH_HOSTS. `strata sync` from another registry never sends them there.
- Docker's config (credHelpers, auths, credsStore), looked up the way docker does: keys are normalised to
  host[:port] and Docker Hub's names (https://index.docker.io/v1/, index.docker.io, registry-1.docker.io,
  docker.io) are one registry; an `identitytoken` (or a helper's `<token>` user) is an OAuth refresh token,
  used only at the registry's token service.

Credentials are never printed or logged: `repr(Credentials(...))` shows the user name only.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import StrataError

USER_ENV = "STRATA_REGISTRY_USER"
PASSWORD_ENV = "STRATA_REGISTRY_PASSWORD"
HELPER_TIMEOUT_SECONDS = 30
DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # the key docker stores Docker Hub's credentials under
DOCKER_HUB_HOST = "index.docker.io"
_DOCKER_HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
HELPER_TOKEN_USER = "<token>"  # a credential helper's answer whose Secret is an identity token


class CredentialsError(StrataError):
    """Credentials were configured but could not be read (bad Docker config, failing credential helper)."""


@dataclass(frozen=True)
class Credentials:
    """A user name and password for one registry, or an identity token (an OAuth refresh token, for registries
    with a token service); neither secret appears in repr or str."""

    username: str
    password: str = field(repr=False)
    source: str = "unknown"
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***, source={self.source!r})"

    __str__ = __repr__


def registry_host(reference: str) -> str:
    """The host[:port] part of a registry address: `https://reg.example:5000/v1/` -> `reg.example:5000`."""
    host = reference.split("://", 1)[-1]
    return host.split("/", 1)[0].lower()


def credential_key(reference: str) -> str:
    """The registry a credential belongs to, as docker compares them: host[:port], Docker Hub's names as one.

    Example: credential_key("https://index.docker.io/v1/") == credential_key("registry-1.docker.io") == "index.docker.io".
    """
    host = registry_host(reference)
    name = host[:-4] if host.endswith(":443") else host
    return DOCKER_HUB_HOST if name in _DOCKER_HUB_NAMES else host


def docker_config_path(env: Mapping[str, str]) -> Path:
    """Where Docker keeps config.json: $DOCKER_CONFIG/config.json, else ~/.docker/config.json."""
    directory = env.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


def resolve_credentials(
    registry: str,
    env: Mapping[str, str],
    docker_config: Path | None = None,
    env_hosts: Iterable[str] = (),
) -> Credentials | None:
    """Credentials for `registry` (host[:port]), None if there are none.

    The environment's (STRATA_REGISTRY_USER/PASSWORD in `env`) when `registry` is one of `env_hosts` (the
    registries they are meant for), else Docker's config. Example: with both set in `env`,
    resolve_credentials("reg:5000", env, env_hosts=["reg:5000"]) is Credentials(username='ci', ...) and
    resolve_credentials("other:5000", env, env_hosts=["reg:5000"]) looks only at Docker's config.
    """
    user, password = env.get(USER_ENV), env.get(PASSWORD_ENV)
    key = credential_key(registry)
    if user and password is not None and key in {credential_key(h) for h in env_hosts if h}:
        return Credentials(user, password, source="environment")
    path = docker_config if docker_config is not None else docker_config_path(env)
    return credentials_from_docker_config(registry, path)


def credentials_from_docker_config(registry: str, path: Path) -> Credentials | None:
    """Credentials for `registry` from a Docker config.json: credHelpers, then auths, then credsStore."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read Docker config ({exc.strerror})") from None
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise CredentialsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise CredentialsError(f"{path}: expected a JSON object")
    key = credential_key(registry)
    # what docker hands a credential helper: Docker Hub's historical key, else host[:port]
    server = DOCKER_HUB_KEY if key == DOCKER_HUB_HOST else key
    helpers = config.get("credHelpers") or {}
    if not isinstance(helpers, dict):
        raise CredentialsError(f"{path}: credHelpers must be an object")
    for name, helper in helpers.items():
        if credential_key(str(name)) == key:
            return credentials_from_helper(str(helper), server)
    auths = config.get("auths") or {}
    if not isinstance(auths, dict):
        raise CredentialsError(f"{path}: auths must be an object")
    for name, entry in auths.items():
        if credential_key(str(name)) == key and isinstance(entry, dict):
            found = _credentials_from_auth_entry(entry, key, path)
            if found is not None:
                return found
    store = config.get("credsStore")
    return credentials_from_helper(str(store), server) if store else None


def _credentials_from_auth_entry(entry: dict[str, object], host: str, path: Path) -> Credentials | None:
    token = entry.get("identitytoken")
    identity = str(token) if isinstance(token, str) and token else None
    if entry.get("username") and entry.get("password") is not None:
        return Credentials(str(entry["username"]), str(entry["password"]), str(path), identity)
    encoded = entry.get("auth")
    if not encoded:
        return Credentials(str(entry.get("username") or ""), "", str(path), identity) if identity else None
    try:
        decoded = base64.b64decode(str(encoded), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialsError(f"{path}: auths entry for {host} is not base64 'user:password'") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise CredentialsError(f"{path}: auths entry for {host} is not base64 'user:password'")
    return Credentials(user, password, source=str(path), identity_token=identity)


def credentials_from_helper(helper: str, host: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get` for `host`; None when the helper has nothing stored for it."""
    program = f"docker-credential-{helper}"
    executable = shutil.which(program)
    if executable is None:
        raise CredentialsError(f"credential helper {program} for {host} is configured but not installed")
    try:
        done = subprocess.run(
            [executable, "get"],
            check=False,
            input=host.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"credential helper {program} did not answer for {host} in time") from None
    if done.returncode != 0:
        if b"credentials not found" in (done.stdout + done.stderr).lower():
            return None
        # The helper's own output may echo secrets: report only the exit status.
        raise CredentialsError(f"credential helper {program} failed for {host} (exit {done.returncode})")
    try:
        answer = json.loads(done.stdout)
        user, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"credential helper {program} gave an unreadable answer for {host}") from None
    if user == HELPER_TOKEN_USER:
        return Credentials("", "", source=program, identity_token=secret)
    return Credentials(user, secret, source=program)

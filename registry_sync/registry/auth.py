"""Registry credentials: from the environment, then the standard Docker config (auths, credsStore, credHelpers).

Credentials are never printed or logged: `repr(Credentials(...))` shows the user name only.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import StrataError

USER_ENV = "STRATA_REGISTRY_USER"
PASSWORD_ENV = "STRATA_REGISTRY_PASSWORD"
HELPER_TIMEOUT_SECONDS = 30


class CredentialsError(StrataError):
    """Credentials were configured but could not be read (bad Docker config, failing credential helper)."""


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or token) for one registry; the password never appears in repr or str."""

    username: str
    password: str = field(repr=False)
    source: str = "unknown"

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***, source={self.source!r})"

    __str__ = __repr__


def registry_host(reference: str) -> str:
    """The host[:port] part of a registry address: `https://reg.example:5000/v1/` -> `reg.example:5000`."""
    host = reference.split("://", 1)[-1]
    return host.split("/", 1)[0].lower()


def docker_config_path(env: Mapping[str, str]) -> Path:
    """Where Docker keeps config.json: $DOCKER_CONFIG/config.json, else ~/.docker/config.json."""
    directory = env.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


def resolve_credentials(
    registry: str, env: Mapping[str, str], docker_config: Path | None = None
) -> Credentials | None:
    """Credentials for `registry` (host[:port]): environment first, then Docker's config; None if there are none.

    Example: with STRATA_REGISTRY_USER=ci and STRATA_REGISTRY_PASSWORD set in `env` (the run's environment),
    returns Credentials(username='ci').
    """
    user, password = env.get(USER_ENV), env.get(PASSWORD_ENV)
    if user and password is not None:
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
    host = registry_host(registry)
    helpers = config.get("credHelpers") or {}
    for key, helper in helpers.items():
        if registry_host(key) == host:
            return credentials_from_helper(str(helper), host)
    for key, entry in (config.get("auths") or {}).items():
        if registry_host(key) == host and isinstance(entry, dict):
            found = _credentials_from_auth_entry(entry, host, path)
            if found is not None:
                return found
    store = config.get("credsStore")
    return credentials_from_helper(str(store), host) if store else None


def _credentials_from_auth_entry(entry: dict[str, object], host: str, path: Path) -> Credentials | None:
    if entry.get("username") and entry.get("password") is not None:
        return Credentials(str(entry["username"]), str(entry["password"]), source=str(path))
    encoded = entry.get("auth")
    if not encoded:
        return None
    try:
        decoded = base64.b64decode(str(encoded), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialsError(f"{path}: auths entry for {host} is not base64 'user:password'") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise CredentialsError(f"{path}: auths entry for {host} is not base64 'user:password'")
    return Credentials(user, password, source=str(path))


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
        return Credentials(str(answer["Username"]), str(answer["Secret"]), source=program)
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"credential helper {program} gave an unreadable answer for {host}") from None

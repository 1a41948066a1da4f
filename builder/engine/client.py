"""The one way Strata opens a Docker engine client: from `settings.environ` (DOCKER_HOST or the local socket).

client = engine_client(settings, timeout=3600)   # answers a ping, or HostError in one line
"""

from __future__ import annotations

import docker
import docker.errors
import requests.exceptions

from builder.errors import HostError
from builder.settings import Settings

# What connecting can raise: the SDK's own errors, and requests' connection errors (OSError subclasses).
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)
# Long enough for reads that save or load a multi-GB image.
BUILD_TIMEOUT_SECONDS = 3600


def connect(settings: Settings, timeout: float) -> docker.DockerClient:
    """A client whose engine answered a ping; raises the SDK's error when it does not (see ENGINE_ERRORS)."""
    client = docker.from_env(timeout=int(max(timeout, 1)), environment=dict(settings.environ))
    try:
        client.ping()
    except ENGINE_ERRORS:
        client.close()
        raise
    return client


def engine_client(
    settings: Settings, timeout: float = 600, what: str = "Docker engine"
) -> docker.DockerClient:
    """A client for the engine, checked with a ping; HostError naming `what` when none answers."""
    try:
        return connect(settings, timeout)
    except ENGINE_ERRORS as exc:
        raise HostError(f"{what}: not reachable ({exc}); start dockerd or set DOCKER_HOST") from None

"""Build with a registry cache: the registry as a store `strata build` asks for a node before building it.

`open_registry_cache` opens the matrix's registry as a `RegistryStore` named "registry cache", checked once with
short retries: a registry that does not answer is one warning line and no cache (a build never fails because its
cache is down); `STRATA_REGISTRY_CACHE=off` is no cache without a word. The build finds a node by its content tag
`h-<content hash>` (with every blob present), checks its `io.strata.content-hash` label, and has the engine pull
it by digest (loopback registries are allowed over plain HTTP by Docker's defaults; other registries need TLS
the engine trusts): `builder.build.orchestrate`.

    BuildOptions(caches=[lambda: open_registry_cache(plan.matrix, settings)])   # opened only when asked
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from builder.errors import StrataError
from builder.matrix.load import Matrix
from builder.settings import Settings
from registry_sync.publish.store import RegistryStore
from registry_sync.registry.client import RegistryClient, RetryPolicy
from registry_sync.registry.connect import open_registry

# A cache lookup must cost little when the registry is down: one retry, a few seconds at most.
CACHE_RETRY = RetryPolicy(attempts=2, first_delay=0.2, max_delay=1.0, max_total_seconds=5.0)
CACHE_NAME = "registry cache"


def _stderr(message: str) -> None:
    print(f"strata: warning: {message}", file=sys.stderr)


def open_registry_cache(
    matrix: Matrix, settings: Settings, warn: Callable[[str], None] = _stderr
) -> RegistryStore | None:
    """The registry cache for `strata build`, or None; see `open_cache_registry`. The caller closes it."""
    client = open_cache_registry(matrix, settings, warn)
    return RegistryStore(client, name=CACHE_NAME) if client is not None else None


def open_cache_registry(
    matrix: Matrix, settings: Settings, warn: Callable[[str], None] = _stderr
) -> RegistryClient | None:
    """A client for the matrix's registry with short retries, checked once; None (and one `warn` line) when the
    registry does not answer, None without a word when the cache is off (STRATA_REGISTRY_CACHE=off). The caller
    closes it."""
    if not settings.registry_cache:
        return None
    client = None
    try:
        address = matrix.model.registry.address
        client = open_registry(address, settings, retry=CACHE_RETRY, home=address)
        client.ping()
    except StrataError as exc:
        if client is not None:
            client.close()
        warn(f"registry cache off for this build: {exc}")
        return None
    return client

"""Fixtures for the registry client against real registries with Docker token auth (see token_auth.py): one
session registry whose token service knows alice (pull and push a/*), bob (pull a/*) and admin (everything)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from token_auth import TokenRegistry, User  # noqa: E402

from registry_sync.registry.auth import Credentials  # noqa: E402
from registry_sync.registry.client import RegistryClient, RetryPolicy  # noqa: E402

ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")
ADMIN = ("admin", "admin-pw")
USERS = {
    ALICE[0]: User(ALICE[1], {"a/*": {"pull", "push"}}),
    BOB[0]: User(BOB[1], {"a/*": {"pull"}}),
    ADMIN[0]: User(ADMIN[1], {"*": {"pull", "push"}}),
}
FAST = RetryPolicy(attempts=2, first_delay=0.05, max_delay=0.1, max_total_seconds=5)


@pytest.fixture(scope="session")
def _session_token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    with TokenRegistry(tmp_path_factory.mktemp("token-registry"), USERS) as reg:
        yield reg


@pytest.fixture
def token_registry(_session_token_registry: TokenRegistry) -> Iterator[TokenRegistry]:
    """The session's token-auth registry, its token service's knobs reset and its request log cleared."""
    ts = _session_token_registry.token_service
    ts.token_field, ts.lifetime, ts.x5c, ts.kid = "token", 300, False, True
    ts.clear()
    yield _session_token_registry
    ts.token_field, ts.lifetime, ts.x5c, ts.kid = "token", 300, False, True


@pytest.fixture
def token_client(token_registry: TokenRegistry) -> Iterator[Callable[..., RegistryClient]]:
    """token_client(("alice", "pw") | None, address=None, **kw) -> a RegistryClient, closed after the test."""
    made: list[RegistryClient] = []

    def make(user: tuple[str, str] | None, address: str | None = None, **kw: object) -> RegistryClient:
        creds = Credentials(user[0], user[1], source="test") if user else None
        client = RegistryClient(address or token_registry.address, credentials=creds, retry=FAST, **kw)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()

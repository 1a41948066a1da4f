"""Session-wide test setup, and the one rule for a test whose engine or tool is missing.

Tests that spawn `strata` or other venv tools find the ones of this interpreter (its bin directory goes first on PATH).

A missing Docker engine or host tool (busybox, mmdebstrap, actionlint, ...) is never a pass: under CI (`CI` set to
anything but empty, 0, false or no; `.ci/run` exports CI=true) the test fails with the reason; elsewhere it skips
with the same reason, so a developer without an engine can still run what their machine can run. Fixtures and tests
ask for it through the `require` fixture (conftest modules cannot be imported under --import-mode=importlib):

    def test_x(require):
        require(shutil.which("busybox") is not None, "busybox is not installed (scripts/setup-host.sh installs it)")
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import docker
import docker.errors
import jsonschema
import pytest

_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")

Require = Callable[[bool, str], None]
EngineConnector = Callable[[float], docker.DockerClient]


def running_in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this run is CI's (CI=true from .ci/run or the CI service; CI=false or 0 count as unset)."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> NoReturn:
    """Stop the test because something it needs is absent: a failure under CI, a skip with the reason elsewhere."""
    __tracebackhide__ = True  # the report names the caller's line, not this one
    if running_in_ci():
        pytest.fail(
            f"{reason} [CI is set: a missing engine or tool fails instead of skipping]", pytrace=False
        )
    pytest.skip(f"{reason} [skipped outside CI only; with CI=true this fails]")


def require_or_skip(condition: bool, reason: str) -> None:
    """`missing(reason)` unless `condition` holds."""
    __tracebackhide__ = True
    if not condition:
        missing(reason)


@pytest.fixture(scope="session")
def require() -> Require:
    """require(condition, reason): go on if the condition holds, else fail under CI and skip elsewhere."""
    return require_or_skip


@pytest.fixture(scope="session")
def connect_engine() -> Iterator[EngineConnector]:
    """connect_engine(timeout) -> a client of the local Docker engine that answered a ping, else `missing`."""
    clients: list[docker.DockerClient] = []

    def connect(timeout: float) -> docker.DockerClient:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        try:
            client = docker.from_env(timeout=int(timeout))
            client.ping()
        except docker.errors.DockerException as exc:
            problem = str(exc)  # reported below, outside the handler, so the failure is one line, not a chain
        else:
            clients.append(client)
            return client
        missing(f"no Docker engine answers at {where} ({problem}); scripts/setup-host.sh starts one")

    yield connect
    for client in clients:
        client.close()


SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"


def validate_document(text: str) -> dict[str, Any]:
    """The one JSON document `text` holds, validated against docs/schemas/strata.<command>.json."""
    doc = json.loads(text)
    name = doc["schema"]  # strata.<command>/1
    schema = json.loads((SCHEMAS / (name.rsplit("/", 1)[0] + ".json")).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)
    return dict(doc)


@pytest.fixture
def json_contract() -> Callable[[str], dict[str, Any]]:
    """Parse a command's `--format json` stdout and validate it against its schema (docs/cli-json.md)."""
    return validate_document

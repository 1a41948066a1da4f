"""Images for the smoke integration tests.

`smoke_good_image` is the tf2.13.1-cpu cell's final (user-layer) image as `strata build` makes it. Each fault image is
built FROM it with one planted fault and removed at the end of the session. STRATA_SMOKE_GOOD_IMAGE points the tests at
another user-layer CPU image instead.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from validate.smoke.runner import ENGINE_READ_TIMEOUT_S

FAULT_REPO = "strata-smoke-test/fault"
REPO = Path(__file__).resolve().parents[3]


def _have(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _build(client: docker.DockerClient, context: Path, tag: str) -> None:
    try:
        client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="none")
    except docker.errors.BuildError as exc:
        log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
        pytest.fail(f"building test image {tag} failed: {exc}\n{log[-3000:]}")


@pytest.fixture(scope="session")
def docker_client(connect_engine: Callable[[float], docker.DockerClient]) -> docker.DockerClient:
    """The local Docker engine (a missing one fails under CI and skips elsewhere: tests/conftest.py).

    Its read timeout is the one `strata smoke` uses: the secret scan streams `docker save` of a whole image through
    this client, and on a busy engine the first bytes take longer than a minute.
    """
    return connect_engine(ENGINE_READ_TIMEOUT_S)


@pytest.fixture(scope="session")
def smoke_good_image(docker_client: docker.DockerClient, cpu_cells_built: dict[str, str]) -> str:
    """The tf2.13.1-cpu cell's final image as `strata build` made it (or STRATA_SMOKE_GOOD_IMAGE)."""
    swapped = os.environ.get("STRATA_SMOKE_GOOD_IMAGE")
    if swapped:
        docker_client.images.get(swapped)
        return swapped
    return cpu_cells_built["tf2.13.1-cpu"]


class FaultImages:
    """Builds images FROM the good one with one planted fault each; removes them all at the end."""

    def __init__(self, client: docker.DockerClient, good: str) -> None:
        self.client = client
        self.good = good
        self.tags: list[str] = []

    def build(self, name: str, tag: str, dockerfile_body: str, files: dict[str, bytes] | None = None) -> str:
        ref = f"{FAULT_REPO}-{name}:{tag}"
        with tempfile.TemporaryDirectory(prefix="strata-smoke-fault-") as tmp:
            ctx = Path(tmp)
            for rel, data in (files or {}).items():
                (ctx / rel).write_bytes(data)
            (ctx / "Dockerfile").write_text(f"FROM {self.good}\n{dockerfile_body}\n")
            _build(self.client, ctx, ref)
        self.tags.append(ref)
        return ref

    def remove_all(self) -> None:
        for ref in self.tags:
            try:
                self.client.images.remove(ref, force=True, noprune=False)
            except docker.errors.APIError:
                pass  # already gone; nothing else to clean


@pytest.fixture(scope="session")
def fault_images(docker_client: docker.DockerClient, smoke_good_image: str) -> Iterator[FaultImages]:
    faults = FaultImages(docker_client, smoke_good_image)
    yield faults
    faults.remove_all()


@pytest.fixture(scope="session")
def cudart_wheel() -> tuple[str, bytes]:
    """The real nvidia-cuda-runtime-cu11 wheel (file name, bytes)."""
    from builder.lock.fetch import fetch_wheels, wheel_path
    from builder.plan.lockfile import read_lock
    from builder.settings import resolve_settings

    lock = read_lock(REPO / "locks" / "hermetic" / "cuda11.8-bookworm.lock")
    assert lock is not None
    (wheel,) = [w for w in lock.wheels if w.name == "nvidia-cuda-runtime-cu11"]
    cache = resolve_settings(os.environ, REPO / "matrix.yaml").cache_dir  # the wheelhouse strata build uses
    fetch_wheels(cache, [wheel], environ=os.environ)
    path = wheel_path(cache, wheel)
    return path.name, path.read_bytes()


@pytest.fixture
def private_key_pem() -> bytes:
    """A fresh RSA key, made for this test run only."""
    out = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        check=True, stdout=subprocess.PIPE,
    )  # fmt: skip
    return out.stdout

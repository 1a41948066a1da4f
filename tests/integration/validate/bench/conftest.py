"""Images for the benchmark integration tests.

The reference is the tf2.13.1-cpu cell's final image as `strata build` makes it; the two children are built FROM it:

    + ENV STRATA_BENCH_SLEEP_FRACTION=0.10      ─► planted slowdown  strata-test/bench:slow10
    + LABEL only (identical layers)             ─► identical rebuild strata-test/bench:rebuild
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import pytest

SLOW_TAG = "strata-test/bench:slow10"
REBUILD_TAG = "strata-test/bench:rebuild"
PLANTED_SLEEP_FRACTION = 0.10


def _image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _build(client: docker.DockerClient, context: Path, tag: str) -> None:
    try:
        client.images.build(path=str(context), tag=tag, rm=True, forcerm=True)
    except docker.errors.BuildError as exc:
        tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)[-2000:]
        pytest.fail(f"building test image {tag} failed: {exc.msg}\n{tail}")


def ensure_child_image(client: docker.DockerClient, parent: str, tag: str, lines: str) -> str:
    """A one-step child of `parent` (the extra Dockerfile `lines`), built afresh so it always follows its parent."""
    with tempfile.TemporaryDirectory(prefix="strata-bench-child-") as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(f"FROM {parent}\n{lines}\n")
        _build(client, context, tag)
    return tag


@pytest.fixture(scope="session")
def docker_client(connect_engine: Callable[[float], docker.DockerClient]) -> docker.DockerClient:
    """The local engine with a long timeout for benchmark containers (missing: fails under CI, skips elsewhere)."""
    return connect_engine(600)


@pytest.fixture(scope="session")
def reference_image(docker_client: docker.DockerClient, cpu_cells_built: dict[str, str]) -> str:
    """The TF CPU image benchmarks compare against: the tf2.13.1-cpu cell strata builds."""
    return cpu_cells_built["tf2.13.1-cpu"]


@pytest.fixture(scope="session")
def planted_slow_image(docker_client: docker.DockerClient, reference_image: str) -> str:
    """The reference image with every step 10% slower, planted by an ENV line in the image itself."""
    return ensure_child_image(
        docker_client, reference_image, SLOW_TAG, f"ENV STRATA_BENCH_SLEEP_FRACTION={PLANTED_SLEEP_FRACTION}"
    )


@pytest.fixture(scope="session")
def rebuilt_image(docker_client: docker.DockerClient, reference_image: str) -> str:
    """A rebuild identical in content to the reference (same layers), distinct id (one extra label)."""
    return ensure_child_image(docker_client, reference_image, REBUILD_TAG, "LABEL io.strata.test=rebuild")

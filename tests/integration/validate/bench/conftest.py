"""Test images for the benchmark integration tests, built once and cached by tag.

Until the lead's strata-built images exist, these fixtures make a small TF image themselves:

    mmdebstrap bookworm (python3, venv, libgomp1) ─► docker import  strata-test/py311:bookworm
    pip download tensorflow-cpu==2.13.1 (py3.11) ─► offline install  strata-test/tf-cpu:2.13.1-py3.11
    + ENV STRATA_BENCH_SLEEP_FRACTION=0.10      ─► planted slowdown  ...-slow10
    + LABEL only (identical layers)             ─► identical rebuild ...-rebuild

To swap in strata-built images later, replace `reference_image` (and build the two children FROM it).
Downloads are cached under $STRATA_TEST_CACHE (default ~/.cache/strata-test); images are reused by tag.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

CACHE = Path(os.environ.get("STRATA_TEST_CACHE", Path.home() / ".cache" / "strata-test"))
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_TAG = "strata-test/py311:bookworm"
TF_VERSION = "2.13.1"
REFERENCE_TAG = f"strata-test/tf-cpu:{TF_VERSION}-py3.11"
SLOW_TAG = f"{REFERENCE_TAG}-slow10"
REBUILD_TAG = f"{REFERENCE_TAG}-rebuild"
PLANTED_SLEEP_FRACTION = 0.10

TF_DOCKERFILE = f"""\
FROM {BASE_TAG}
COPY wheels /wheels
RUN python3 -m venv /opt/venv \\
 && /opt/venv/bin/pip install --no-index --find-links /wheels tensorflow-cpu=={TF_VERSION} \\
 && rm -rf /wheels /root/.cache
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL io.strata.tf={TF_VERSION} io.strata.python=3.11 io.strata.cell=test-cpu
"""


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


def ensure_base_image(client: docker.DockerClient) -> str:
    """A minimal Debian bookworm with python3 3.11, made by mmdebstrap and docker import."""
    if _image_exists(client, BASE_TAG):
        return BASE_TAG
    if not shutil.which("mmdebstrap"):
        pytest.skip(
            "mmdebstrap is not installed, so the test base image cannot be made (apt install mmdebstrap)"
        )
    rootfs = CACHE / "py311" / "rootfs.tar"
    if not rootfs.exists():
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        partial = rootfs.with_suffix(".partial")
        subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,libgomp1",
                "bookworm",
                str(partial),
                DEBIAN_MIRROR,
            ],
            check=True,
        )
        partial.rename(rootfs)
    repository, tag = BASE_TAG.split(":")
    client.api.import_image_from_file(str(rootfs), repository=repository, tag=tag)
    return BASE_TAG


def ensure_tf_image(client: docker.DockerClient) -> str:
    """tensorflow-cpu 2.13.1 installed offline from a cached wheelhouse into the base image."""
    if _image_exists(client, REFERENCE_TAG):
        return REFERENCE_TAG
    ensure_base_image(client)
    context = CACHE / f"tf{TF_VERSION}-py3.11"
    wheels = context / "wheels"
    if not (wheels.exists() and any(wheels.glob("tensorflow_cpu-*.whl"))):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--platform",
                "manylinux2014_x86_64",
                "--platform",
                "manylinux_2_17_x86_64",
                "--platform",
                "manylinux_2_28_x86_64",
                "--platform",
                "linux_x86_64",
                "-d",
                str(wheels),
                f"tensorflow-cpu=={TF_VERSION}",
            ],
            check=True,
        )
    (context / "Dockerfile").write_text(TF_DOCKERFILE)
    _build(client, context, REFERENCE_TAG)
    return REFERENCE_TAG


def ensure_child_image(client: docker.DockerClient, parent: str, tag: str, lines: str) -> str:
    """A one-step child of `parent` (the extra Dockerfile `lines`), built in a tiny context."""
    if _image_exists(client, tag):
        return tag
    context = CACHE / "children" / tag.replace("/", "_").replace(":", "_")
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(f"FROM {parent}\n{lines}\n")
    _build(client, context, tag)
    return tag


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client for the local engine; the engine tests cannot run without one."""
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine reachable ({exc}); engine tests need one")
    yield client
    client.close()


@pytest.fixture(scope="session")
def reference_image(docker_client: docker.DockerClient) -> str:
    """The TF CPU image benchmarks compare against."""
    return ensure_tf_image(docker_client)


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

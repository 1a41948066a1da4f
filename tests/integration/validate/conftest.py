"""Images for the smoke integration tests.

`smoke_good_image` is a small user-layer TF 2.13.1 CPU image, built once and cached by tag: a Debian bookworm
minbase from mmdebstrap, a venv at /opt/venv with tensorflow-cpu installed offline from wheels downloaded on
the host. Each fault image is built FROM it with one planted fault and removed at the end of the session.

To run the same tests against a strata-built image, set STRATA_SMOKE_GOOD_IMAGE to a user-layer CPU image
reference (tag in the strata scheme, labels set); the fault images are then derived from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

CACHE = Path(os.environ.get("STRATA_SMOKE_TEST_CACHE", Path.home() / ".cache" / "strata-smoke"))
BASE_TAG = "strata-smoke-test/py311:bookworm"
GOOD_TAG = "strata-smoke-test/tensorflow:2.13.1-cpu-py3.11-bookworm"
FAULT_REPO = "strata-smoke-test/fault"
TF_REQUIREMENT = "tensorflow-cpu==2.13.1"
CUDART_REQUIREMENT = "nvidia-cuda-runtime-cu11==11.8.89"
WHEELS = CACHE / "wheels-tf2.13.1-cp311"
HOST_PIP = [
    sys.executable, "-m", "pip", "download", "--isolated", "--cert", "/etc/ssl/certs/ca-certificates.crt",
    "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
    "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
    "--platform", "manylinux_2_28_x86_64", "--platform", "any",
]  # fmt: skip

GOOD_DOCKERFILE = f"""
FROM {BASE_TAG} AS install
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/venv \\
 && /opt/venv/bin/pip install --no-index --no-cache-dir --find-links /tmp/wheels {TF_REQUIREMENT}

FROM {BASE_TAG}
COPY --from=install /opt/venv /opt/venv
RUN useradd --uid 1000 --create-home user && mkdir -p /home/user/work && chown 1000:1000 /home/user/work
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin VIRTUAL_ENV=/opt/venv
USER 1000
WORKDIR /home/user/work
EXPOSE 8888 6006
LABEL io.strata.tf=2.13.1 io.strata.python=3.11 io.strata.flavor=cpu io.strata.layer=user \\
      io.strata.cell=tf2.13.1-cpu-py3.11-bookworm io.strata.content-hash=sha256:smoke-test-fixture \\
      io.strata.xla-gpu=false io.strata.env='{{"VIRTUAL_ENV": "/opt/venv"}}' \\
      org.opencontainers.image.title="strata smoke test fixture"
"""


def _run(cmd: list[str], **kwargs: object) -> None:
    env = dict(os.environ, PIP_CONFIG_FILE="/dev/null")
    subprocess.run(cmd, check=True, env=env, **kwargs)  # type: ignore[call-overload]


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


def ensure_wheels() -> Path:
    """tensorflow-cpu 2.13.1 and the CUDA runtime wheel for cp311, downloaded once on the host."""
    if not list(WHEELS.glob("tensorflow_cpu-2.13.1-*.whl")) or not list(
        WHEELS.glob("nvidia_cuda_runtime_cu11-*")
    ):
        WHEELS.mkdir(parents=True, exist_ok=True)
        _run([*HOST_PIP, "-d", str(WHEELS), TF_REQUIREMENT, CUDART_REQUIREMENT])
    return WHEELS


def ensure_base(client: docker.DockerClient) -> str:
    """A bookworm minbase with python3 and venv, imported from an mmdebstrap tarball."""
    if _have(client, BASE_TAG):
        return BASE_TAG
    CACHE.mkdir(parents=True, exist_ok=True)
    rootfs = CACHE / "py311.tar"
    if not rootfs.exists():
        partial = rootfs.with_suffix(".partial.tar")
        _run([
            "mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,libgomp1",
            "bookworm", str(partial), "http://deb.debian.org/debian",
        ])  # fmt: skip
        partial.rename(rootfs)
    repo, tag = BASE_TAG.split(":")
    client.api.import_image_from_file(str(rootfs), repository=repo, tag=tag)
    return BASE_TAG


def ensure_good_image(client: docker.DockerClient) -> str:
    if _have(client, GOOD_TAG):
        return GOOD_TAG
    ensure_base(client)
    wheels = ensure_wheels()
    with tempfile.TemporaryDirectory(prefix="strata-smoke-ctx-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(wheels, ctx / "wheels", ignore=shutil.ignore_patterns("nvidia_*"))
        (ctx / "Dockerfile").write_text(GOOD_DOCKERFILE)
        _build(client, ctx, GOOD_TAG)
    return GOOD_TAG


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"engine tests need a running Docker engine: {exc}")
    return client


@pytest.fixture(scope="session")
def smoke_good_image(docker_client: docker.DockerClient) -> str:
    """A user-layer TF CPU image whose every label is true (or STRATA_SMOKE_GOOD_IMAGE)."""
    swapped = os.environ.get("STRATA_SMOKE_GOOD_IMAGE")
    if swapped:
        docker_client.images.get(swapped)
        return swapped
    return ensure_good_image(docker_client)


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
    wheel = max(ensure_wheels().glob("nvidia_cuda_runtime_cu11-*.whl"))
    return wheel.name, wheel.read_bytes()


@pytest.fixture
def private_key_pem() -> bytes:
    """A fresh RSA key, made for this test run only."""
    out = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        check=True, stdout=subprocess.PIPE,
    )  # fmt: skip
    return out.stdout

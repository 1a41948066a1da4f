"""Each planted fault fails the check that guards against it, with the evidence in the message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest

from validate.smoke.gpu_checks import GPU_CHECK_NAMES
from validate.smoke.results import ImageReport
from validate.smoke.runner import HOST_CA_BUNDLE, smoke_images

pytestmark = pytest.mark.engine

CPU_TAG = "2.13.1-cpu-py3.11-bookworm"
GPU_TAG = "2.13.1-gpu-cuda11.8-cudnn8.6-py3.11-bookworm"
SITE = "/opt/venv/lib/python3.11/site-packages"


def smoke(client: docker.DockerClient, ref: str, **kwargs: object) -> ImageReport:
    kwargs.setdefault("scan_secrets", False)  # the secret scan has its own test; it reads the whole image
    (report,) = smoke_images(client, [ref], results_dir=None, timeout_s=600, **kwargs)  # type: ignore[arg-type]
    return report


def test_label_claiming_the_wrong_tf_version(docker_client: docker.DockerClient, fault_images: Any) -> None:
    ref = fault_images.build("tf-label", CPU_TAG, "LABEL io.strata.tf=2.12.0")
    report = smoke(docker_client, ref)
    assert report.status == "fail"
    version = report.check("tf-version")
    assert version.summary() == "fail: expected 2.12.0 (label io.strata.tf), found 2.13.1"
    assert (
        report.check("labels-match-tag").summary()
        == "fail: expected tf=2.13.1 (tag), found io.strata.tf=2.12.0"
    )
    assert report.check("keras-train-cpu").status == "pass"  # only the lie fails


@pytest.fixture(scope="module")
def no_cudnn_image(fault_images: Any, cudart_wheel: tuple[str, bytes]) -> str:
    # A gpu-flavor image with the real CUDA runtime wheel but no cuDNN (the full cuDNN wheel is ~700 MB).
    name, data = cudart_wheel
    body = f"""USER root
COPY {name} /tmp/{name}
RUN /opt/venv/bin/pip install --no-index --no-deps --no-cache-dir /tmp/{name} && rm /tmp/{name}
ENV LD_LIBRARY_PATH={SITE}/nvidia/cuda_runtime/lib
USER 1000
LABEL io.strata.flavor=gpu io.strata.cuda=11.8 io.strata.cudnn=8.6 \\
      io.strata.env='{{"VIRTUAL_ENV": "/opt/venv", "LD_LIBRARY_PATH": "{SITE}/nvidia/cuda_runtime/lib"}}'"""
    return fault_images.build("no-cudnn", GPU_TAG, body, {name: data})


def test_gpu_image_without_cudnn(docker_client: docker.DockerClient, no_cudnn_image: str) -> None:
    report = smoke(docker_client, no_cudnn_image)
    assert report.status == "fail"
    cudnn = report.check("cuda-lib:libcudnn")
    assert cudnn.status == "fail"
    assert cudnn.expected == (
        f"libcudnn.so.8 loadable with LD_LIBRARY_PATH={SITE}/nvidia/cuda_runtime/lib"
        " (dlopened by TensorFlow's GPU start-up (TryDlopenCUDALibraries))"
    )
    assert "libcudnn.so.8: cannot open shared object file" in (cudnn.found or "")
    # The same loader finds what is there: the check is real, not a constant failure.
    cudart = report.check("cuda-lib:libcudart")
    assert cudart.status == "pass" and cudart.found == f"{SITE}/nvidia/cuda_runtime/lib/libcudart.so.11.0"
    # Without a driver the runtime will not say its version; the wheel's own version is checked instead.
    assert report.check("cuda-version:cudart").summary() == (
        "not-run: cudaRuntimeGetVersion needs the CUDA driver (libcuda.so.1), which this container lacks"
        " (cudaRuntimeGetVersion returned status 35)"
    )
    wheels = report.check("cuda-wheels")
    assert wheels.summary() == "pass: nvidia-cuda-runtime-cu11 11.8.89 agree with the labels"
    assert (
        report.check("cuda-version:cudnn").summary()
        == "not-run: libcudnn did not load (see cuda-lib:libcudnn)"
    )
    # tensorflow-cpu claims no CUDA; the gpu label makes that a failure too.
    assert (
        report.check("tf-build-cuda").summary()
        == "fail: expected is_cuda_build=True (flavor gpu), found is_cuda_build=False"
    )
    for name in GPU_CHECK_NAMES:
        assert report.check(name).summary() == "not-run: no GPU visible"


def test_same_image_with_expect_gpu_fails_the_gpu_checks(
    docker_client: docker.DockerClient, no_cudnn_image: str
) -> None:
    report = smoke(docker_client, no_cudnn_image, expect_gpu=True)
    visible = report.check("gpu-visible")
    assert visible.status == "fail"
    assert visible.expected == "a visible GPU (--expect-gpu)"
    assert (visible.found or "").startswith("no GPU visible")
    assert report.check("gpu-log-clean").status == "fail"
    assert report.check("cuda-version:cudart").expected == "the CUDA driver (--expect-gpu)"
    assert report.check("tf-import").status == "pass"  # the CPU checks still ran without the GPU request


def test_user_layer_running_as_root(docker_client: docker.DockerClient, fault_images: Any) -> None:
    ref = fault_images.build("root-user", CPU_TAG, "USER root")
    report = smoke(docker_client, ref)
    assert report.check("user-uid").summary() == "fail: expected uid 1000, found uid 0"


def test_private_key_and_host_ca_bundle_in_layers(
    docker_client: docker.DockerClient, fault_images: Any, private_key_pem: bytes
) -> None:
    body = """USER root
COPY deploy.key /etc/strata/deploy.key
RUN rm /etc/strata/deploy.key
COPY host-ca.crt /usr/local/share/host-ca.crt
USER 1000"""
    files = {"deploy.key": private_key_pem, "host-ca.crt": Path(HOST_CA_BUNDLE).read_bytes()}
    ref = fault_images.build("secrets", CPU_TAG, body, files)
    report = smoke(docker_client, ref, scan_secrets=True)
    key = report.check("secrets:private-key")
    assert key.status == "fail"
    assert key.expected == "no private-key in any layer"
    assert "PEM private key at /etc/strata/deploy.key (layer " in (
        key.found or ""
    )  # deleted later, still shipped
    ca = report.check("secrets:host-ca-bundle")
    assert ca.status == "fail" and "/usr/local/share/host-ca.crt" in (ca.found or "")
    assert report.check("secrets:docker-auths").status == "pass"

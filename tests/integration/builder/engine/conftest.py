"""A tiny base image made on this machine (nothing can be pulled): the host's dash and libc, imported."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

HOST_FILES = {
    "bin/sh": "/bin/dash",
    "lib/x86_64-linux-gnu/libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6",
    "lib64/ld-linux-x86-64.so.2": "/lib64/ld-linux-x86-64.so.2",
}


@pytest.fixture(scope="module")
def engine(connect_engine: Callable[[float], docker.DockerClient]) -> Any:
    """The local Docker engine (a missing one fails under CI and skips elsewhere: tests/conftest.py)."""
    return connect_engine(300)


def minimal_rootfs() -> bytes:
    """A rootfs tar holding just enough to run `/bin/sh -c`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "lib", "lib/x86_64-linux-gnu", "lib64", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, host_path in HOST_FILES.items():
            data = Path(host_path).resolve().read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def namespace(engine: Any) -> Iterator[str]:
    """A unique repository name; every image tagged under it is removed afterwards."""
    name = f"strata-canon-test-{uuid.uuid4().hex[:8]}"
    yield name
    for _ in range(5):  # a parent with child images can only go once its children have gone
        left = engine.images.list(name=name)
        for image in left:
            try:
                engine.images.remove(image.id, force=True)
            except docker.errors.APIError:
                pass  # removed through another of its tags, or still has children
        if not left:
            break
    engine.images.prune(filters={"dangling": True})


@pytest.fixture(scope="module")
def base_image(engine: Any, namespace: str) -> str:
    """`<namespace>:base`, imported from `minimal_rootfs()`."""
    engine.api.import_image_from_data(minimal_rootfs(), repository=namespace, tag="base")
    return f"{namespace}:base"


DOCKERFILE = """FROM {base}
ARG NONCE=same
RUN echo hello > /greeting && echo "$NONCE" > /nonce
CMD ["/bin/sh", "-c", "read line < /greeting && echo \\"$line\\""]
"""


@pytest.fixture(scope="module")
def build(
    engine: Any, namespace: str, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., str]:
    """Build the test Dockerfile from scratch (no cache) and return the image's tag."""
    context = tmp_path_factory.mktemp("context")
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base_image))

    def run(tag: str, nonce: str = "same") -> str:
        ref = f"{namespace}:{tag}"
        engine.images.build(path=str(context), tag=ref, nocache=True, rm=True, buildargs={"NONCE": nonce})
        return ref

    return run

"""Factories for layer tars and `docker save` archives built in memory, as Docker writes them."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Member:
    """One entry of a layer tar; `data` only for regular files."""

    name: str
    data: bytes | None = None
    kind: bytes = tarfile.REGTYPE
    mode: int = 0o644
    mtime: int = 1_700_000_000
    uid: int = 0
    gid: int = 0
    uname: str = "root"
    gname: str = "root"
    linkname: str = ""
    pax: dict[str, str] = field(default_factory=dict)


def layer_tar(members: Sequence[Member]) -> bytes:
    """A layer tar holding `members` in the given order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.mtime = m.kind, m.mode, m.mtime
            info.uid, info.gid, info.uname, info.gname = m.uid, m.gid, m.uname, m.gname
            info.linkname = m.linkname
            info.pax_headers = dict(m.pax)
            if m.data is not None:
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def config_for(layers: Sequence[bytes], **overrides: Any) -> dict[str, Any]:
    """An image config like Docker 20.10's, with build residue (container id, hostname, created)."""
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-11-23T17:00:00.123456789Z",
        "container": "0123456789abcdef",
        "docker_version": "20.10.24+dfsg1",
        "config": {
            "Hostname": "0123456789ab",
            "Env": ["PATH=/usr/bin:/bin"],
            "Cmd": ["/bin/sh"],
            "Image": "sha256:00",
        },
        "container_config": {"Hostname": "0123456789ab", "Cmd": ["/bin/sh", "-c", "echo hi"]},
        "history": [
            {"created": "2026-11-23T17:00:00Z", "created_by": f"/bin/sh -c step {i}"}
            for i in range(len(layers))
        ],
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]},
    }
    config.update(overrides)
    return config


def write_docker_archive(path: Path, layers: Sequence[bytes], config: dict[str, Any] | None = None) -> Path:
    """A `docker save` archive (Docker 20.10 shape: <id>/layer.tar and <id>.json) at `path`."""
    config_bytes = json.dumps(config or config_for(layers)).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    files: dict[str, bytes] = {config_name: config_bytes}
    layer_names = []
    for i, data in enumerate(layers):
        name = f"{i:064x}/layer.tar"
        files[name] = data
        layer_names.append(name)
    files["manifest.json"] = json.dumps(
        [{"Config": config_name, "RepoTags": ["t:1"], "Layers": layer_names}]
    ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def docker_archive(tmp_path: Path) -> Callable[..., Path]:
    """Write a docker-save archive from layers given as member lists; returns its path."""
    counter = iter(range(1000))

    def make(*layers: Sequence[Member], **overrides: Any) -> Path:
        tars = [layer_tar(layer) for layer in layers]
        return write_docker_archive(
            tmp_path / f"saved-{next(counter)}.tar", tars, config_for(tars, **overrides)
        )

    return make


@pytest.fixture
def member() -> type[Member]:
    """The Member class (conftest modules cannot be imported under --import-mode=importlib)."""
    return Member


@pytest.fixture
def make_layer_tar() -> Callable[[Sequence[Member]], bytes]:
    """layer_tar as a fixture."""
    return layer_tar

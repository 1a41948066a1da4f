"""Tiny images tagged like plan nodes (busybox, a few hundred kB), for push, sync, promote and cache tests.

A chain is base -> app -> tool: the base is a busybox root filesystem imported into the engine, each child adds
one file. Every image carries the `io.strata.content-hash` label of its hand-made LayerNode and the node's
cache_ref and version tag, exactly as `strata build` leaves canonical images; the nodes' repositories live in
a namespace of their own per test, so tests share the session's registries without seeing each other.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import docker.errors
import pytest

from builder.matrix.schema import Alias
from builder.plan.graph import LayerNode, Plan

DOCKER = "/usr/bin/docker"
LABEL_HASH = "io.strata.content-hash"


def hand_node(
    node_id: str,
    layer: str,
    registry: str,
    repository: str,
    version_tag: str,
    content_hash: str,
    *,
    parent: str | None,
    cells: tuple[str, ...],
    facts: dict[str, str],
) -> LayerNode:
    """A LayerNode as build_plan makes it, for an image the test builds itself."""
    return LayerNode(
        id=node_id,
        layer=layer,
        parent=parent,
        cells=cells,
        dockerfile="",
        requirements=(),
        lock_path=None,
        lock=None,
        lock_inputs="",
        content_hash=content_hash,
        tags=(f"{registry}/{repository}:{version_tag}",),
        aliases=(),
        cache_ref=f"{registry}/{repository}:h-{content_hash}",
        python=facts.get("python", ""),
        os_name=facts.get("os", ""),
        base_image=None,
        rootfs=None,
        facts=facts,
    )


def hand_plan(
    nodes: list[LayerNode],
    registry: str,
    namespace: str,
    aliases: list[tuple[str, str]] = (),
    release: int = 1,
) -> Plan:  # type: ignore[assignment]
    model = SimpleNamespace(
        registry=SimpleNamespace(address=registry, namespace=namespace),
        aliases=[Alias(tag=tag, cell=cell, layer="tools") for tag, cell in aliases],
        release=release,
    )
    cells = tuple(SimpleNamespace(id=c) for c in dict.fromkeys(c for n in nodes for c in n.cells))
    matrix: Any = SimpleNamespace(model=model, profile="hermetic", cells=cells)
    return Plan(matrix=matrix, nodes=tuple(nodes))


@dataclass
class Chain:
    registry: str
    namespace: str
    nodes: list[LayerNode]
    plan: Plan

    def node(self, layer: str) -> LayerNode:
        return next(n for n in self.nodes if n.layer == layer)


def _run(*args: str, input_bytes: bytes | None = None) -> str:
    done = subprocess.run([DOCKER, *args], input=input_bytes, capture_output=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode().strip()


@pytest.fixture(scope="session")
def busybox_rootfs(require: Callable[[bool, str], None], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    busybox = shutil.which("busybox")
    require(busybox is not None, "busybox is not installed (scripts/setup-host.sh installs busybox-static)")
    assert busybox is not None
    root = tmp_path_factory.mktemp("busybox-root")
    (root / "bin").mkdir()
    shutil.copy(busybox, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "bin" / "cat").symlink_to("busybox")
    return subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True, check=True).stdout


ChainFactory = Callable[..., Chain]


@pytest.fixture
def make_chain(engine: docker.DockerClient, busybox_rootfs: bytes, tmp_path: Path) -> Iterator[ChainFactory]:
    """make_chain(registry, variant="1", namespace=None, aliases=()) -> Chain built in the engine now."""
    created: list[str] = []

    def build(
        registry: str, variant: str = "1", namespace: str | None = None, aliases: list[tuple[str, str]] = ()
    ) -> Chain:  # type: ignore[assignment]
        namespace = namespace or f"pub-{uuid.uuid4().hex[:10]}"
        salt = uuid.uuid4().hex
        specs = [
            ("base", "base", f"{namespace}/base", "bookworm-1", None, {"os": "bookworm"}),
            (
                "app",
                "framework",
                f"{namespace}/core",
                "9.9.9-cpu",
                "base",
                {"tf": "9.9.9", "flavor": "cpu", "python": "3.11", "os": "bookworm"},
            ),
            (
                "tool",
                "tools",
                f"{namespace}/tool",
                "9.9.9-cpu",
                "app",
                {"tf": "9.9.9", "flavor": "cpu", "python": "3.11", "os": "bookworm"},
            ),
        ]
        nodes: list[LayerNode] = []
        for node_id, layer, repository, tag, parent, facts in specs:
            content_hash = hashlib.sha256(f"{salt}-{node_id}-{variant}".encode()).hexdigest()
            node = hand_node(
                node_id,
                layer,
                registry,
                repository,
                tag,
                content_hash,
                parent=parent,
                cells=("c-cpu",),
                facts=facts,
            )
            if parent is None:
                image_id = _run(
                    "import",
                    "--change",
                    f"LABEL {LABEL_HASH}={content_hash}",
                    "-",
                    node.cache_ref,
                    input_bytes=busybox_rootfs,
                )
            else:
                context = tmp_path / f"ctx-{namespace}-{node_id}-{variant}"
                context.mkdir()
                (context / "payload").write_bytes(os.urandom(40_000) + variant.encode())
                (context / "Dockerfile").write_text(
                    f"FROM {nodes[-1].cache_ref}\nLABEL {LABEL_HASH}={content_hash}\nCOPY payload /{node_id}-payload\n"
                    'CMD ["/bin/cat", "/etc/hostname"]\n'
                )
                image_id = _run("build", "-q", "-t", node.cache_ref, str(context))
            engine.images.get(image_id).tag(*node.tags[0].rsplit(":", 1))
            created.extend([node.cache_ref, node.tags[0]])
            nodes.append(node)
        return Chain(registry, namespace, nodes, hand_plan(nodes, registry, namespace, aliases))

    yield build
    for ref in reversed(created):
        try:
            engine.images.remove(ref, noprune=False)
        except docker.errors.DockerException:
            pass

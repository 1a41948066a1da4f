"""The JSON contract (docs/cli-json.md) of the commands that need the engine or a registry: each runs for real, as a
user runs it (a fresh `strata` process), against the local engine and a real registry, and its stdout is validated
against docs/schemas/strata.<command>.json.

Everything happens in a namespace and a registry of its own: the repository's matrix copied with
`namespace: json-<random>` and the address of an embedded registry this module starts on a free port (nothing here
leans on a registry the host may happen to run at 127.0.0.1:5000), the default matrix's tf2.13.1-cpu images (same
content hashes) tagged into it, a state root of its own. Only the base node (about 60 MB compressed) is pushed;
promote moves an alias to the version tag that `strata sync` gave a copy of it (a stand-in image under the cell's
tools tag: promotion reads digests, not content).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from builder.matrix.load import load_matrix
from builder.oci.archive import read_image
from builder.plan.graph import Plan, build_plan
from builder.settings import resolve_settings
from registry_sync.registry.server import ServerSettings, start_registry, stop_registry

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[3]
# The caches of the repository's own state root (the one cpu_cells_built used): their rootfs and wheels are reused.
SHARED_CACHE = resolve_settings(os.environ, REPO / "matrix.yaml").cache_dir
CELL = "tf2.13.1-cpu"
BASE = "base-bookworm"
USER_NODE = "user-example-tf2.13.1-cpu"
Contract = Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class Throwaway:
    root: Path
    home: Path
    plan: Plan
    registry: str  # host:port of the module's own embedded registry

    @property
    def matrix(self) -> str:
        return str(self.root / "matrix.yaml")

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: int = 1800
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            cwd=self.root,
            env={
                **os.environ,
                "STRATA_HOME": str(self.home),
                "STRATA_REGISTRY_CACHE": "off",
                "GITHUB_STEP_SUMMARY": "",
                **(env or {}),
            },
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _link_tree(source: Path, target: Path) -> None:
    """`target` mirrors `source` with one hard link per file (a copy across file systems); Strata replaces cached
    files atomically, so nothing is ever written through into `source`. (A symlink would leave the build context.)"""
    if not source.is_dir():
        return
    for path in source.rglob("*"):
        if path.is_file():
            link = target / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, link)
            except OSError:
                shutil.copy2(path, link)


@pytest.fixture(scope="module")
def throwaway(
    tmp_path_factory: pytest.TempPathFactory,
    engine: docker.DockerClient,
    cpu_cells_built: dict[str, str],
    run_strata: Callable[..., subprocess.CompletedProcess[str]],
) -> Iterator[Throwaway]:
    namespace = f"json-{uuid.uuid4().hex[:10]}"
    root = tmp_path_factory.mktemp("json-contract") / "repo"
    root.mkdir()
    for name in ("layers", "locks"):
        shutil.copytree(REPO / name, root / name)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry_dir = root.parent / "registry"
    start_registry(ServerSettings(data_dir=registry_dir, port=port))
    registry = f"127.0.0.1:{port}"
    text = (REPO / "matrix.yaml").read_text()
    assert "  namespace: strata\n" in text and "  address: 127.0.0.1:5000 " in text
    text = text.replace("  namespace: strata\n", f"  namespace: {namespace}\n")
    (root / "matrix.yaml").write_text(text.replace("  address: 127.0.0.1:5000 ", f"  address: {registry} "))
    default = build_plan(load_matrix(REPO / "matrix.yaml"))
    plan = build_plan(load_matrix(root / "matrix.yaml")).select([CELL])
    for node in plan.nodes:
        assert node.content_hash == default.node(node.id).content_hash
        image = engine.images.get(default.node(node.id).cache_ref)
        for ref in (node.cache_ref, *node.tags):
            image.tag(*ref.rsplit(":", 1))
    home = root.parent / "home"
    # cpu_cells_built may have found every image in the engine already (by content hash) and fetched nothing:
    # the shared wheelhouse gets the cell's wheels first (a no-op where the build fetched them).
    fetched = run_strata("fetch", "--only", CELL, "--progress", "quiet", timeout=1800)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    # The cached root filesystems and the wheels of every node but the user layer's: verify and fetch reuse them.
    _link_tree(SHARED_CACHE / "rootfs", home / "cache" / "rootfs")
    user_wheels = {w.sha256 for w in plan.node(USER_NODE).lock.wheels} if plan.node(USER_NODE).lock else set()
    for directory in sorted((SHARED_CACHE / "wheels").glob("*")):
        if directory.name not in user_wheels:
            _link_tree(directory, home / "cache" / "wheels" / directory.name)
    try:
        yield Throwaway(root, home, plan, registry)
    finally:
        stop_registry(registry_dir)
    prefix = f"{registry}/{namespace}/"
    for image in engine.images.list():
        for ref in image.tags:
            if ref.startswith(prefix):
                try:
                    engine.images.remove(ref, noprune=True)
                except docker.errors.APIError:
                    pass


def test_build_of_cached_nodes_and_its_step_summary(
    throwaway: Throwaway, json_contract: Contract, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    done = throwaway.run(
        "build", "-f", throwaway.matrix, "--only", CELL, "--format", "json",
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json_contract(done.stdout)
    assert doc["ok"] is True and {n["status"] for n in doc["nodes"]} == {"cached"}
    assert [n["node"] for n in doc["nodes"]] == [n.id for n in throwaway.plan.nodes]
    # progress went to stderr as plain lines: no source location, no wrapping
    assert "progress.py:" not in done.stderr
    assert any(line.startswith("#") and f"{BASE} cached" in line for line in done.stderr.splitlines())
    table = summary.read_text()
    assert table.startswith(f"### strata build: {len(throwaway.plan.nodes)} nodes")
    assert f"| {BASE} | cached | - |" in table


def test_fetch_reports_each_file_it_downloads(throwaway: Throwaway, json_contract: Contract) -> None:
    wanted = {w.filename for w in (throwaway.plan.node(USER_NODE).lock.wheels or ())}  # type: ignore[union-attr]
    done = throwaway.run(
        "fetch", "-f", throwaway.matrix, "--only", USER_NODE, "--format", "json", timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json_contract(done.stdout)
    assert {f["filename"] for f in doc["files"]} == wanted and doc["downloaded"] == len(wanted)
    assert doc["bytes_downloaded"] == sum(f["bytes"] for f in doc["files"]) > 0
    for name in wanted:
        assert f"strata fetching {name}" in done.stderr and f"strata fetched {name} " in done.stderr
    again = throwaway.run("fetch", "-f", throwaway.matrix, "--only", USER_NODE, "--format", "json")
    assert json_contract(again.stdout)["downloaded"] == 0


def test_verify_of_the_base_node(throwaway: Throwaway, json_contract: Contract) -> None:
    done = throwaway.run(
        "verify",
        "-f",
        throwaway.matrix,
        "--only",
        BASE,
        "--rebuilds",
        "1",
        "--format",
        "json",
        timeout=1800,
    )
    doc = json_contract(done.stdout)
    (node,) = doc["nodes"]
    assert node["id"] == BASE and "error" not in node, node
    assert len(node["digests"]) == 2 and node["matches_engine"] is True, node
    assert done.returncode == 0 and doc["reproducible"] is True, done.stderr[-2000:]
    assert f"{BASE} reproducible" in done.stderr


def test_smoke_canonicalize_and_diff(
    throwaway: Throwaway, json_contract: Contract, tmp_path: Path, engine: docker.DockerClient
) -> None:
    base = throwaway.plan.node(BASE).tags[0]
    summary = tmp_path / "summary.md"
    smoke = throwaway.run(
        "smoke", base, "--format", "json", "--results-dir", str(tmp_path / "smoke"), "--timeout", "900",
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    doc = json_contract(smoke.stdout)
    (report,) = doc["images"]
    assert report["image"] == base and report["digest"] == engine.images.get(base).id
    assert smoke.returncode == (1 if report["status"] == "fail" else 0), smoke.stderr[-2000:]
    assert f"| {base} | {report['status']} |" in summary.read_text()

    layout = tmp_path / "layout"
    canon = throwaway.run("canonicalize", base, str(layout), "--format", "json")
    assert canon.returncode == 0, canon.stderr[-2000:]
    doc = json_contract(canon.stdout)
    assert doc["layout"] == str(layout) and doc["layers"]
    assert doc["config_digest"] == layout_config_digest(layout)

    same = throwaway.run("diff", str(layout), str(layout), "--format", "json")
    assert same.returncode == 0, same.stderr[-2000:]
    assert json_contract(same.stdout)["identical"] is True
    # canonicalize's default epoch (0) is not the matrix's: the engine's image differs in its times
    differ = throwaway.run("diff", base, str(layout), "--format", "json")
    assert differ.returncode == 1, differ.stderr[-2000:]
    doc = json_contract(differ.stdout)
    assert (
        doc["mode"] == "files" and doc["identical"] is False and doc["b_id"] == layout_config_digest(layout)
    )
    user = throwaway.plan.node(USER_NODE).tags[0]
    packages = throwaway.run("diff", "--packages", base, user, "--format", "json")
    assert packages.returncode == 1, packages.stderr[-2000:]
    doc = json_contract(packages.stdout)
    assert doc["mode"] == "packages" and any(c["name"] == "tensorflow-cpu" for c in doc["packages"]["python"])
    retired = throwaway.run("diff", str(layout), str(layout), "--json")
    assert json_contract(retired.stdout)["identical"] is True
    assert "--json is retired; use --format json" in retired.stderr


def layout_config_digest(layout: Path) -> str:
    return str(read_image(layout).config_digest)


def test_push_sync_and_promote(throwaway: Throwaway, json_contract: Contract, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    push = throwaway.run(
        "push", "-f", throwaway.matrix, "--only", BASE, "--format", "json",
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    assert push.returncode == 0, push.stderr[-3000:]
    doc = json_contract(push.stdout)
    (node,) = doc["nodes"]
    base = throwaway.plan.node(BASE)
    assert node["node"] == BASE and node["status"] == "pushed" and node["reference"] == base.tags[0]
    assert doc["lock"]["written"] is True
    assert f"| {BASE} | pushed |" in summary.read_text() and node["manifest_digest"] in summary.read_text()

    tools = next(n for n in throwaway.plan.nodes if n.layer == "tools")
    sync = throwaway.run("sync", base.tags[0], tools.tags[0], "--format", "json")
    assert sync.returncode == 0, sync.stderr[-3000:]
    (copy,) = json_contract(sync.stdout)["images"]
    assert copy["manifest_digest"] == node["manifest_digest"] and copy["status"] in ("copied", "tagged")

    promote = throwaway.run("promote", "2.13-cpu", "--cell", CELL, "-f", throwaway.matrix, "--format", "json")
    assert promote.returncode == 0, promote.stderr[-3000:]
    doc = json_contract(promote.stdout)
    assert doc["digest"] == node["manifest_digest"] and doc["changed"] is True and doc["previous"] is None
    assert doc["target"] == tools.tags[0]


def test_registry_status_of_a_running_embedded_registry(
    throwaway: Throwaway, json_contract: Contract, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data_dir = tmp_path / "registry"
    start_registry(ServerSettings(data_dir=data_dir, port=port))
    try:
        status = throwaway.run("registry", "status", "--data-dir", str(data_dir), "--format", "json")
        doc = json_contract(status.stdout)
        assert status.returncode == 0 and doc["running"] is True and doc["address"] == f"127.0.0.1:{port}"
    finally:
        stop_registry(data_dir)
    stopped = throwaway.run("registry", "status", "--data-dir", str(data_dir), "--format", "json")
    assert stopped.returncode == 1 and json_contract(stopped.stdout)["running"] is False


def test_registry_up_and_down_of_an_embedded_registry(
    throwaway: Throwaway, json_contract: Contract, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data_dir = tmp_path / "registry"
    up = ("registry", "up", "--data-dir", str(data_dir), "--port", str(port), "--no-engine-trust")
    try:
        started = throwaway.run(*up, "--format", "json", timeout=120)
        assert started.returncode == 0, started.stderr[-3000:]
        doc = json_contract(started.stdout)
        assert doc["started"] is True and doc["address"] == f"127.0.0.1:{port}"
        assert doc["url"] == f"http://127.0.0.1:{port}" and doc["tls"] is False and doc["auth"] is False
        status = throwaway.run("registry", "status", "--data-dir", str(data_dir), "--format", "json")
        assert json_contract(status.stdout)["pid"] == doc["pid"]
        again = throwaway.run(*up, "--format", "json", timeout=120)
        assert again.returncode == 0 and json_contract(again.stdout)["started"] is False
        assert json_contract(again.stdout)["pid"] == doc["pid"]
        down = throwaway.run("registry", "down", "--data-dir", str(data_dir), "--format", "json")
        assert down.returncode == 0, down.stderr[-3000:]
        assert json_contract(down.stdout) == {
            "schema": "strata.registry-down/1", "stopped": True, "data_dir": str(data_dir)
        }  # fmt: skip
    finally:
        stop_registry(data_dir)
    stopped = throwaway.run("registry", "status", "--data-dir", str(data_dir), "--format", "json")
    assert stopped.returncode == 1 and json_contract(stopped.stdout)["running"] is False


def test_registry_push_archive_of_a_small_image(
    throwaway: Throwaway, json_contract: Contract, tmp_path: Path, engine: docker.DockerClient
) -> None:
    # A one-file image of its own (no base image, no network): 300 kB of random bytes, so what is uploaded counts.
    payload = os.urandom(300_000)
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("payload")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    namespace = throwaway.plan.node(BASE).tags[0].split("/")[1]
    source = f"{throwaway.registry}/{namespace}/archive-source"
    engine.api.import_image_from_data(layer.getvalue(), repository=source, tag="1")
    archive = tmp_path / "image.tar"
    with archive.open("wb") as f:
        for chunk in engine.images.get(f"{source}:1").save(named=True):
            f.write(chunk)
    engine.images.remove(f"{source}:1", noprune=True)
    destination = f"{throwaway.registry}/{namespace}/archive"

    push = throwaway.run(
        "registry", "push-archive", str(archive), destination, "--tag", "1", "--format", "json"
    )
    assert push.returncode == 0, push.stderr[-3000:]
    doc = json_contract(push.stdout)
    assert doc["reference"] == f"{destination}@{doc['manifest_digest']}" and doc["tags"] == ["1"]
    assert doc["blobs"] == {"uploaded": 2, "skipped": 0, "mounted": 0}  # the layer and the config
    assert doc["bytes_uploaded"] >= len(payload) and len(doc["layers"]) == 1
    request = urllib.request.Request(
        f"http://{throwaway.registry}/v2/{namespace}/archive/manifests/1",
        method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                 "application/vnd.docker.distribution.manifest.v2+json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Docker-Content-Digest"] == doc["manifest_digest"]

    again = throwaway.run(
        "registry", "push-archive", str(archive), destination, "--tag", "1", "--format", "json"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    doc_again = json_contract(again.stdout)
    assert doc_again["manifest_digest"] == doc["manifest_digest"] and doc_again["bytes_uploaded"] == 0
    assert doc_again["blobs"] == {"uploaded": 0, "skipped": 2, "mounted": 0}
    text = throwaway.run("registry", "push-archive", str(archive), destination, "--tag", "1")
    assert text.returncode == 0 and text.stdout.splitlines()[0] == doc["reference"], text.stderr[-3000:]


def test_gc_dry_run_says_in_json_what_its_text_says(throwaway: Throwaway, json_contract: Contract) -> None:
    argv = ("gc", "-f", throwaway.matrix, "--dry-run", "--keep-build-cache")
    done = throwaway.run(*argv, "--format", "json")
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json_contract(done.stdout)
    assert doc["dry_run"] is True and doc["problems"] == []
    assert doc["total"]["count"] == sum(c["count"] for c in doc["categories"].values())
    text = throwaway.run(*argv)
    assert text.returncode == 0, text.stderr[-3000:]
    counts = {
        line[:20].strip(): int(line[20:28]) for line in text.stdout.splitlines()[1:] if line.startswith("  ")
    }
    assert counts == {**{k: v["count"] for k, v in doc["categories"].items()}, "total": doc["total"]["count"]}
    assert f"kept: {doc['kept']['plan']} image(s) the matrix needs" in text.stdout


def test_keygen_and_sign_of_the_pushed_base_node(
    throwaway: Throwaway, json_contract: Contract, tmp_path: Path
) -> None:
    # push is idempotent: the base node pushed (or pushed again by test_push_sync_and_promote), its lock written
    push = throwaway.run("push", "-f", throwaway.matrix, "--only", BASE, "--format", "json")
    assert push.returncode == 0, push.stderr[-3000:]
    pushed = json_contract(push.stdout)
    keygen = throwaway.run("keygen", "--out", str(tmp_path / "keys"), "--no-passphrase", "--format", "json")
    assert keygen.returncode == 0, keygen.stderr[-3000:]
    keys = json_contract(keygen.stdout)
    assert keys["encrypted"] is False and Path(keys["private_key"]).is_file()

    evidence = tmp_path / "evidence"
    sign = throwaway.run(
        "sign", "--key", keys["private_key"], "-f", throwaway.matrix, "--only", BASE, "--out", str(evidence),
        "--format", "json",
    )  # fmt: skip
    assert sign.returncode == 0, sign.stderr[-3000:]
    doc = json_contract(sign.stdout)
    (image,) = doc["images"]
    (node,) = pushed["nodes"]
    assert doc["keyid"] == keys["keyid"] and image["node"] == BASE
    assert image["reference"] == node["reference"] and image["digest"] == node["manifest_digest"]
    assert set(image["registry"]) == {"sbom", "provenance", "signature"} and Path(image["dir"]).is_dir()
    lock = json.loads((throwaway.root / "images.lock.json").read_text())
    assert lock["images"][node["reference"]]["evidence"] == image["evidence"]
    assert doc["lock"]["path"] == str(throwaway.root / "images.lock.json")
    # the signed lock replaced the pushed one under the same images-lock:<plan digest> tag
    signed_at, _, signed_digest = doc["lock"]["artifact"].rpartition("@")
    pushed_at, _, pushed_digest = pushed["lock"]["artifact"].rpartition("@")
    assert signed_at == pushed_at and signed_digest != pushed_digest
    assert "latest" in doc["lock"]["channel"] and "signed; sbom, provenance, signature pushed" in sign.stderr

    check = throwaway.run(
        "verify-signature", image["reference"], "--key", keys["public_key"], "--format", "json"
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert json_contract(check.stdout)["sbom_digest"] == image["evidence"]["sbom"]

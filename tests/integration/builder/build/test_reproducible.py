"""Bit-for-bit reproducibility on the real engine, cross-checked with skopeo and diffoscope."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import docker
import pytest

from builder.plan.graph import Plan

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[4]


def test_cpu_cells_rebuild_to_identical_digests(
    run_strata, cpu_cells_built: dict[str, str], default_plan: Plan
) -> None:  # type: ignore[no-untyped-def]
    # On a fresh machine (CI) the fixture's build was itself from scratch: one isolated rebuild makes the second sample.
    proc = run_strata("verify", "--only", "*-cpu", "--rebuilds", "1", "--format", "json")
    report = json.loads(proc.stdout)
    nodes = {n["id"]: n for n in report["nodes"]}
    assert set(nodes) == {n.id for n in default_plan.select(["*-cpu"]).nodes}
    not_reproducible = {
        k: v["differences"][:5] or v.get("error") for k, v in nodes.items() if not v["reproducible"]
    }
    assert not not_reproducible, not_reproducible
    assert all(n["matches_engine"] for n in nodes.values())
    assert proc.returncode == 0


def test_non_reproducible_layer_is_detected_and_explained(
    run_strata, tmp_path: Path, cpu_cells_built: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    for name in ("layers", "locks"):
        shutil.copytree(REPO / name, tmp_path / name)
    shutil.copy(REPO / "matrix.yaml", tmp_path / "matrix.yaml")
    template = tmp_path / "layers" / "user" / "Dockerfile.j2"
    template.write_text(
        template.read_text().replace(
            "ENTRYPOINT",
            "USER 0\nRUN date +%s%N > /opt/strata/build-time && head -c 32 /dev/urandom > /opt/strata/random.bin\n"
            "USER {{ user.uid }}:{{ user.uid }}\nENTRYPOINT",
            1,
        )
    )
    proc = run_strata(
        "verify",
        "-f",
        str(tmp_path / "matrix.yaml"),
        "--only",
        "user-example-tf2.13.1-cpu",
        "--format",
        "json",
        env={"STRATA_HOME": str(REPO / ".strata")},
    )
    assert proc.returncode == 1, proc.stderr
    (node,) = json.loads(proc.stdout)["nodes"]
    assert node["id"] == "user-example-tf2.13.1-cpu" and node["reproducible"] is False
    assert node["digests"][0] != node["digests"][1]
    paths = {d["path"] for d in node["differences"] if d["where"] != "config"}
    assert paths == {"opt/strata/build-time", "opt/strata/random.bin"}, node["differences"]
    assert all(
        d["fields"] == ["sha256"] or "sha256" in d["fields"]
        for d in node["differences"]
        if d["where"] != "config"
    )


def test_skopeo_agrees_with_our_digests(engine: docker.DockerClient, cpu_cells_built: dict[str, str]) -> None:
    for ref in cpu_cells_built.values():
        image = engine.images.get(ref)
        raw = subprocess.run(
            ["skopeo", "inspect", "--config", "--raw", f"docker-daemon:{ref}"],
            capture_output=True,
            check=True,
        ).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == image.id
        assert json.loads(raw)["rootfs"]["diff_ids"] == image.attrs["RootFS"]["Layers"]


def test_diffoscope_finds_no_difference_between_two_clean_builds(
    run_strata, require, tmp_path: Path, cpu_cells_built: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    require(
        shutil.which("diffoscope") is not None,
        "diffoscope is not installed: scripts/setup-host.sh installs diffoscope-minimal",
    )
    proc = run_strata("verify", "--only", "base-bullseye", "--keep", str(tmp_path), "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from builder.oci.layout_store import pack_layout

    # Compare the saved images (loadable archives), not the layout directories' host mtimes.
    saved = []
    for run in ("1", "2"):
        layout = tmp_path / "base-bullseye" / run
        assert (layout / "index.json").is_file()
        archive = tmp_path / f"image-{run}.tar"
        with open(archive, "wb") as out:
            pack_layout(layout, out)
        saved.append(str(archive))
    result = subprocess.run(["diffoscope", "--no-progress", *saved], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:]

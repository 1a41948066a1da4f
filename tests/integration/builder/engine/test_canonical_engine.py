"""Against the real engine: two builds of one Dockerfile differ, their canonical forms do not, and they run."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import pytest

from builder.engine.images import canonicalize_image
from builder.engine.transfer import save_image
from builder.oci.archive import blob_path, read_image
from builder.oci.canonical import CanonicalPolicy
from builder.oci.diff import diff_images
from cli.images import register

pytestmark = pytest.mark.engine
EPOCH = 1_600_000_000


def strata(*argv: str) -> int:
    top = argparse.ArgumentParser(prog="strata")
    register(top.add_subparsers(dest="command"))
    args = top.parse_args(list(argv))
    return int(args.func(args))


def layout_bytes(layout: Path) -> dict[str, bytes]:
    return {
        p.relative_to(layout).as_posix(): p.read_bytes() for p in sorted(layout.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def two_builds(build) -> tuple[str, str]:
    first = build("run1")
    time.sleep(1.1)  # a later second, so the engine stamps other mtimes and `created`
    return first, build("run2")


def test_two_builds_differ_raw_and_the_differ_says_it_is_only_time(engine, two_builds, tmp_path):
    first, second = two_builds
    assert engine.images.get(first).id != engine.images.get(second).id
    a = read_image(save_image(engine, first, tmp_path / "a.tar"))
    b = read_image(save_image(engine, second, tmp_path / "b.tar"))
    result = diff_images(a, b)
    assert not result.identical
    assert ".created" in {c.path for c in result.config_changes}
    changed = {c.path: c.fields for layer in result.layers for c in layer.changes}
    assert changed.get("greeting") == ("mtime",)
    assert all(set(fields) <= {"mtime"} for fields in changed.values()), changed


def test_canonical_forms_of_two_builds_are_byte_identical(engine, two_builds, namespace, tmp_path):
    first, second = two_builds
    policy = CanonicalPolicy(epoch=EPOCH)
    one = canonicalize_image(first, tmp_path / "one", policy, tag=f"{namespace}:canonical", client=engine)
    two = canonicalize_image(second, tmp_path / "two", policy, tag=f"{namespace}:canonical", client=engine)
    assert one.manifest_digest == two.manifest_digest
    assert layout_bytes(tmp_path / "one") == layout_bytes(tmp_path / "two")
    assert strata("diff", str(tmp_path / "one"), str(tmp_path / "two")) == 0


def test_canonical_image_loads_with_its_config_digest_as_id_and_runs(engine, two_builds, namespace, tmp_path):
    tag = f"{namespace}:loaded"
    image = canonicalize_image(
        two_builds[0], tmp_path / "out", CanonicalPolicy(epoch=EPOCH), tag=tag, load=True, client=engine
    )
    assert engine.images.get(tag).id == image.config_digest
    container = engine.containers.run(tag, detach=True)
    try:
        assert container.wait(timeout=60)["StatusCode"] == 0
        assert container.logs() == b"hello\n"
    finally:
        container.remove(force=True)
    inspected = engine.images.get(tag).attrs
    assert inspected["Created"].startswith("2020-09-13T12:26:40")  # EPOCH, not the build time


def test_skopeo_reads_the_layout_as_oci_with_the_same_manifest_digest(
    engine, two_builds, namespace, tmp_path
):
    tag = f"{namespace}:oci"
    image = canonicalize_image(
        two_builds[0], tmp_path / "out", CanonicalPolicy(epoch=EPOCH), tag=tag, client=engine
    )
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{tmp_path / 'out'}:{tag}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert raw == (tmp_path / "out" / blob_path(image.manifest_digest)).read_bytes()
    assert json.loads(raw)["config"]["digest"] == image.config_digest


def test_a_real_content_difference_is_named_with_its_build_step(
    engine, build, two_builds, namespace, tmp_path, capsys
):
    other = build("other-nonce", nonce="2026-11-23T17:00:00")
    assert strata("diff", two_builds[0], other, "--ignore", "mtime") == 1
    report = capsys.readouterr().out
    nonce_line = next(line for line in report.splitlines() if line.startswith("  ~ nonce  ("))
    assert nonce_line.endswith("size 5 -> 20, content differs)")
    assert "-same" in report and "+2026-11-23T17:00:00" in report
    assert "layer 1 (|1 NONCE=2026-11-23T17:00:00 /bin/sh -c echo hello" in report
    assert "greeting" not in report.replace("echo hello > /greeting", "")


def test_canonicalize_cli_writes_a_layout_and_reports_the_image_id(engine, two_builds, tmp_path, capsys):
    assert (
        strata(
            "canonicalize", two_builds[0], str(tmp_path / "cli"), "--epoch", str(EPOCH), "--format", "json"
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["config_digest"] == read_image(tmp_path / "cli").config_digest
    assert len(result["layers"]) == 2


def test_missing_engine_image_is_a_one_line_error(engine, tmp_path):
    from builder.errors import StrataError

    with pytest.raises(StrataError, match="strata-no-such-image:1: not in the Docker engine"):
        canonicalize_image("strata-no-such-image:1", tmp_path / "x", client=engine)


def test_a_child_of_a_canonical_parent_loads_only_its_own_layers_with_the_full_digest(
    engine, base_image, namespace, tmp_path
):
    plain = CanonicalPolicy(epoch=EPOCH, compression="none")
    parent = f"{namespace}:canonical-parent"
    canonicalize_image(base_image, tmp_path / "parent", plain, tag=parent, load=True, client=engine)
    context = tmp_path / "child-context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {parent}\nRUN echo child > /child\n")
    child = f"{namespace}:child-build"
    engine.images.build(path=str(context), tag=child, nocache=True, rm=True)

    full = canonicalize_image(child, tmp_path / "full", plain, tag=f"{namespace}:child", client=engine)
    partial = canonicalize_image(
        child,
        tmp_path / "partial",
        plain,
        tag=f"{namespace}:child",
        load=True,
        client=engine,
        base_ref=parent,
    )

    parent_layers = tuple(engine.images.get(parent).attrs["RootFS"]["Layers"])
    assert partial.absent == parent_layers and len(partial.layers) == len(parent_layers) + 1
    assert not (tmp_path / "partial" / blob_path(parent_layers[0])).exists()
    assert (partial.config_digest, partial.manifest_digest) == (full.config_digest, full.manifest_digest)
    assert engine.images.get(f"{namespace}:child").id == full.config_digest
    out = engine.containers.run(
        f"{namespace}:child", ["/bin/sh", "-c", "read l < /child; echo $l"], remove=True
    )
    assert out == b"child\n"

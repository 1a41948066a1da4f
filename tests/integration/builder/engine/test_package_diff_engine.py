"""Against the real engine: an image "upgrades" a Python package and a Debian package, and `strata diff
--packages` names exactly those two changes.

The base is imported from a rootfs made on this machine (nothing can be pulled): Debian's static busybox, a
fake dist-info for `foo` 1.0 and a small dpkg status. The second image is built FROM it by a Dockerfile whose
RUN step (busybox's rm, mkdir and sed) replaces foo 1.0 by 1.1 and bumps busybox-static's recorded version.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[4]
SITE = "usr/lib/python3/dist-packages"
APPLETS = ("sh", "rm", "mkdir", "sed", "cat")
BASE_FILES = "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n"
REMOVED_TOOL = "Package: old-tool\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 0.9-1\n"

UPGRADE = """FROM {base}
RUN rm -r /{site}/foo-1.0.dist-info \\
 && mkdir /{site}/foo-1.1.dist-info \\
 && printf 'Metadata-Version: 2.1\\nName: foo\\nVersion: 1.1\\n' > /{site}/foo-1.1.dist-info/METADATA \\
 && sed -i 's/^Version: {old}$/Version: {new}/' /var/lib/dpkg/status
"""


def busybox_static(require: Callable[[bool, str], None]) -> tuple[Path, str, str]:
    """Path, version and architecture of Debian's busybox-static, installed with apt-get when missing."""
    query = ["dpkg-query", "-W", "-f", "${Version} ${Architecture}", "busybox-static"]
    found = subprocess.run(query, capture_output=True, text=True, timeout=60)
    if found.returncode != 0:
        install = subprocess.run(
            ["apt-get", "install", "-y", "busybox-static"], capture_output=True, text=True, timeout=600
        )
        message = f"apt-get install busybox-static failed: {install.stderr.strip().splitlines()[-1:]}"
        require(install.returncode == 0, f"{message}; scripts/setup-host.sh installs it")
        found = subprocess.run(query, capture_output=True, text=True, timeout=60, check=True)
    version, arch = found.stdout.split()
    return Path("/bin/busybox").resolve(), version, arch


def base_rootfs(busybox: Path, status: str) -> bytes:
    """busybox with the applets the upgrade uses, foo 1.0's dist-info and `status` as the dpkg status."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, data: bytes | None = None, link: str | None = None, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 1_700_000_000
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        for directory in (
            "bin",
            "tmp",
            "usr",
            "usr/lib",
            "usr/lib/python3",
            SITE,
            "var",
            "var/lib",
            "var/lib/dpkg",
        ):
            add(directory)
        add("bin/busybox", busybox.read_bytes(), mode=0o755)
        for applet in APPLETS:
            add(f"bin/{applet}", link="busybox")
        add(f"{SITE}/foo-1.0.dist-info")
        add(f"{SITE}/foo-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n\nfoo.\n")
        add("var/lib/dpkg/status", status.encode())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(
    engine: Any, require: Callable[[bool, str], None], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """`base` (imported) and `upgraded` (built FROM it); both removed afterwards."""
    busybox, version, arch = busybox_static(require)
    repository = f"strata-pkgdiff-test-{uuid.uuid4().hex[:8]}"
    stanza = (
        f"Package: busybox-static\nStatus: install ok installed\nArchitecture: {arch}\nVersion: {version}\n"
    )
    refs = {"base": f"{repository}:base", "upgraded": f"{repository}:upgraded"}
    context = tmp_path_factory.mktemp("upgrade")
    new_version = f"{version}+strata1"
    (context / "Dockerfile").write_text(
        UPGRADE.format(base=refs["base"], site=SITE, old=version, new=new_version)
    )
    try:
        status = "\n".join([BASE_FILES, stanza, REMOVED_TOOL])
        engine.api.import_image_from_data(base_rootfs(busybox, status), repository=repository, tag="base")
        engine.images.build(path=str(context), tag=refs["upgraded"], rm=True, forcerm=True, nocache=True)
        yield {**refs, "version": version, "new_version": new_version, "arch": arch}
    finally:
        for ref in (refs["upgraded"], refs["base"]):
            with contextlib.suppress(docker.errors.ImageNotFound):  # the build or import failed before it
                engine.images.remove(ref, force=True)


def strata(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *argv], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_diff_packages_names_exactly_the_python_upgrade_and_the_debian_change(images):
    done = strata("diff", "--packages", images["base"], images["upgraded"])
    assert done.returncode == 1, done.stderr  # the images differ
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"a: {images['base']}  sha256:")
    assert lines[1].startswith(f"b: {images['upgraded']}  sha256:")
    assert lines[2:] == [
        "python packages: 1 changed",
        f"  ~ foo 1.0 -> 1.1  ({SITE})",
        "debian packages: 1 changed",
        f"  ~ busybox-static {images['version']} -> {images['new_version']}  ({images['arch']})",
    ]


def test_full_diff_opens_with_the_packages_and_counts_the_merged_files(images):
    done = strata("diff", "--format", "json", images["base"], images["upgraded"])
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert [
        (c["name"], c["kind"], c["a"]["version"], c["b"]["version"]) for c in data["packages"]["python"]
    ] == [("foo", "changed", "1.0", "1.1")]
    assert [c["name"] for c in data["packages"]["debian"]] == ["busybox-static"]
    flattened = {c["path"]: c for c in data["flattened"]}  # 1 layer against 2: the merged views are compared
    assert {p for p in flattened if flattened[p]["b"] is None} == {
        f"{SITE}/foo-1.0.dist-info",
        f"{SITE}/foo-1.0.dist-info/METADATA",
    }
    assert {f"{SITE}/foo-1.1.dist-info/METADATA", "var/lib/dpkg/status"} <= flattened.keys()
    assert data["files"]["removed"] == 2 and data["files"]["added"] >= 2 and data["files"]["changed"] >= 1
    text = strata("diff", images["base"], images["upgraded"]).stdout.splitlines()
    assert text[2] == "python packages: 1 changed"
    assert text.index("debian packages: 1 changed") < next(
        i for i, line in enumerate(text) if line.startswith("flattened filesystem:")
    )


def test_what_the_diff_read_is_what_a_container_of_the_upgraded_image_sees(engine, images):
    script = f"cat /{SITE}/foo-*.dist-info/METADATA /var/lib/dpkg/status"
    container = engine.containers.run(images["upgraded"], ["/bin/sh", "-c", script], detach=True)
    try:
        assert container.wait(timeout=60)["StatusCode"] == 0
        seen = container.logs().decode()
    finally:
        container.remove(force=True)
    assert "Version: 1.1" in seen and "Version: 1.0\n" not in seen
    assert f"Version: {images['new_version']}" in seen

"""The catalog site end to end, as a maintainer and a user run it: a real slice of the default matrix (its two base
images, built by `strata build`) pushed to a fresh embedded registry under two releases, signed, an alias promoted,
`strata catalog --format html` rendered and opened in headless Chromium; `strata lock pull` reads each release back.

The index must list every tag of the pushed slice and its alias, a link of the index must reach a tag page that shows
the packages of the SBOM stored in the registry, and the release page must show both releases. A screenshot of the
index is kept under build/test-artifacts/ with the measured push and render times.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[4]
ARTIFACTS = REPO / "build" / "test-artifacts"
SLICE = "base-*"
ALIAS = "bookworm"  # declared for this test on the base layer of tf2.13.1-cpu


class Page(HTMLParser):
    """The rows and links of a page as Chromium serialised its DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tag_rows: list[str] = []
        self.alias_rows = 0
        self.tag_links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        classes = (found.get("class") or "").split()
        if tag == "tr" and "tag-row" in classes:
            self.tag_rows.append(found.get("data-reference") or "")
        self.alias_rows += tag == "tr" and "alias-row" in classes
        if tag == "a" and "tag-link" in classes:
            self.tag_links.append(found.get("href") or "")
        if found.get("id"):
            self.ids.add(str(found["id"]))


def chromium_dom(chromium: str, url: str) -> str:
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "<html" in done.stdout, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the repository's matrix, layers and locks (its content hashes are the real ones), with an alias
    on the base layer so the slice has one."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("layers", "locks"):
        shutil.copytree(REPO / name, root / name)
    text = (REPO / "matrix.yaml").read_text(encoding="utf-8")
    text, n = re.subn(
        r"(?m)^aliases:\n", f"aliases:\n  - {{tag: {ALIAS}, cell: tf2.13.1-cpu, layer: base}}\n", text
    )
    assert n == 1
    (root / "matrix.yaml").write_text(text, encoding="utf-8")
    return root


def test_catalog_site_of_a_pushed_slice_opens_in_chromium(
    checkout, embedded_registry, run_strata, require, tmp_path
):
    chromium = shutil.which("chromium")
    require(chromium is not None, "chromium is not installed (scripts/setup-host.sh apt-installs it)")
    assert chromium is not None
    address = f"127.0.0.1:{embedded_registry.port}"
    env = {"STRATA_HOME": str(tmp_path / "state")}

    def strata(*args: str) -> subprocess.CompletedProcess[str]:
        done = run_strata(*args, env=env, cwd=checkout)
        assert done.returncode == 0, f"strata {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    matrix = checkout / "matrix.yaml"
    found = re.search(r"(?m)^release: ([0-9]+)\b", matrix.read_text())
    assert found, "matrix.yaml names no release"
    first = int(found.group(1))  # the matrix's release, then the next one
    second = first + 1
    strata("build", "--only", SLICE, "--quiet")  # built already on this machine: found by content hash
    started = time.monotonic()
    strata("push", "--only", SLICE, "--registry", address)
    push_seconds = time.monotonic() - started
    strata("promote", ALIAS, "--cell", "tf2.13.1-cpu", "--registry", address)
    strata("keygen", "--out", "keys", "--no-passphrase")
    strata("push", "--only", SLICE, "--registry", address)  # nothing to upload; records the alias
    strata("sign", "--key", "keys/strata-signing.key", "--only", SLICE)
    release_1 = json.loads((checkout / "images.lock.json").read_text())
    assert release_1["release"] == first and len(release_1["aliases"]) == 1

    matrix.write_text(re.sub(rf"(?m)^release: {first}\b", f"release: {second}", matrix.read_text()))
    started = time.monotonic()
    second_push = strata("push", "--only", SLICE, "--registry", address)
    second_push_seconds = time.monotonic() - started
    assert "lock channel:" in second_push.stdout and ",latest@" in second_push.stdout
    strata("promote", ALIAS, "--cell", "tf2.13.1-cpu", "--registry", address)
    strata("push", "--only", SLICE, "--registry", address)
    strata("sign", "--key", "keys/strata-signing.key", "--only", SLICE)
    lock = json.loads((checkout / "images.lock.json").read_text())
    tags = sorted(lock["images"])
    assert lock["release"] == second and len(tags) == 2 and all(t.endswith(f"-r{second}") for t in tags)

    started = time.monotonic()
    catalog = strata(
        "catalog",
        "--format",
        "html",
        "--out",
        "site",
        "--registry",
        address,
        "--key",
        "keys/strata-signing.pub",
    )
    render_seconds = time.monotonic() - started
    phases = re.search(r"\(read ([0-9.]+)s, rendered ([0-9.]+)s\)", catalog.stdout)
    assert phases, catalog.stdout
    site = checkout / "site"

    index = Page()
    index.feed(chromium_dom(chromium, (site / "index.html").as_uri()))
    assert sorted(index.tag_rows) == tags, "the index lists every tag of the pushed slice"
    assert index.alias_rows == 1
    tag_page = next(link for link in index.tag_links if "bookworm" in link)
    dom = chromium_dom(chromium, (site / tag_page).as_uri())
    page = Page()
    page.feed(dom)
    assert {"tag-title", "layer-table", "package-table"} <= page.ids, "the tag page shows layers and packages"
    bookworm = next(t for t in tags if "bookworm" in t)
    assert bookworm.split("/", 1)[1] in dom and "valid (key" in dom
    assert re.search(r"<td>deb</td><td>libc6</td><td>[^<]+</td><td>base-bookworm</td>", dom), "SBOM packages"
    assert "not run" in dom and "not audited" in dom  # no smoke result, no audit here: said, not hidden
    releases = chromium_dom(chromium, (site / "releases.html").as_uri())
    assert f'id="release-{first}"' in releases and f'id="release-{second}"' in releases
    assert releases.count("same image (same digest)") == 2  # release 2 re-tagged the same images

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "catalog-site-index.png"
    shot = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1900,1000",
            f"--screenshot={screenshot}",
            (site / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    tag_shot = ARTIFACTS / "catalog-site-tag.png"
    shot = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1400,2000",
            f"--screenshot={tag_shot}",
            (site / tag_page).as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.returncode == 0 and tag_shot.stat().st_size > 10_000, shot.stderr[-2000:]
    timings = {
        "first_push_seconds": round(push_seconds, 1),
        "second_release_push_seconds": round(second_push_seconds, 1),
        "catalog_html_seconds": round(render_seconds, 2),
        "catalog_registry_read_seconds": float(phases.group(1)),
        "catalog_render_seconds": float(phases.group(2)),
        "tags": tags,
    }
    (ARTIFACTS / "catalog-site-timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"catalog site: {timings}")

    # A user with only the registry and the public key reads each release back.
    user = tmp_path / "user"
    user.mkdir()
    for release in (str(first), str(second)):
        pulled = run_strata(
            *("lock", "pull", "--release", release, "--registry", address, "--namespace", "strata"),
            *(
                "--out",
                str(user / "images.lock.json"),
                "--require-signature",
                str(checkout / "keys/strata-signing.pub"),
            ),
            env=env,
            cwd=user,
        )
        assert pulled.returncode == 0, pulled.stderr
        assert json.loads((user / "images.lock.json").read_text())["release"] == int(release)
    assert (user / "images.lock.json").read_bytes() == (checkout / "images.lock.json").read_bytes()

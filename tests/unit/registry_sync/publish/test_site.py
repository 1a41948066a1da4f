"""The catalog site: SBOM package lists, release diffs, honest verdicts, and pages rendered from the templates."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from registry_sync.publish.images_lock import ImagesLock, LockedAlias
from registry_sync.publish.site import (
    LayerRow,
    Package,
    PackageChange,
    PackageList,
    Release,
    Site,
    TagFacts,
    Verdict,
    layer_rows,
    min_driver,
    package_diff,
    release_diff,
    render_site,
    sbom_packages,
    smoke_verdict,
    vulnerability_verdict,
    write_site,
)
from validate.smoke.check_result import CheckResult
from validate.smoke.results import ImageReport, save_report

TF = "127.0.0.1:5000/strata/tensorflow:2.13.1-gpu-r2"
BASE = "127.0.0.1:5000/strata/base:bookworm-r2"
ALIAS = "127.0.0.1:5000/strata/tensorflow:2.13-gpu"
GPU = {
    "tensorflow": "2.13.1",
    "flavor": "gpu",
    "python": "3.11",
    "cuda": "11.8",
    "cudnn": "8.6",
    "os": "bookworm",
}


def sbom(*components: tuple[str, str, str]) -> bytes:
    purls = {"pypi": "pkg:pypi/{}@{}", "deb": "pkg:deb/debian/{}@{}?arch=amd64"}
    return json.dumps(
        {
            "bomFormat": "CycloneDX",
            "components": [
                {
                    "type": "library",
                    "name": name,
                    "version": version,
                    "purl": purls[kind].format(name, version),
                    "properties": [{"name": "strata:layer", "value": "n"}],
                }
                for kind, name, version in components
            ],
        }
    ).encode()


def test_sbom_packages_reads_wheels_and_debs_sorted_and_refuses_what_is_not_cyclonedx():
    packages = sbom_packages(
        sbom(("pypi", "numpy", "1.24.3"), ("deb", "libc6", "2.36"), ("pypi", "Absl-py", "1")), "x"
    )
    assert packages == (
        Package("deb", "libc6", "2.36", "n"),
        Package("pypi", "Absl-py", "1", "n"),
        Package("pypi", "numpy", "1.24.3", "n"),
    )
    with pytest.raises(Exception, match="^x: not a CycloneDX JSON document$"):
        sbom_packages(b"[1, 2]", "x")


def test_package_diff_names_added_removed_and_changed_versions():
    old = (
        Package("pypi", "numpy", "1.24.3", ""),
        Package("pypi", "six", "1.16", ""),
        Package("deb", "zlib1g", "1", ""),
    )
    new = (
        Package("pypi", "numpy", "1.24.4", ""),
        Package("pypi", "wrapt", "1.15", ""),
        Package("deb", "zlib1g", "1", ""),
    )
    assert package_diff(old, new) == (
        PackageChange("numpy", "pypi", "1.24.3", "1.24.4"),
        PackageChange("six", "pypi", "1.16", None),
        PackageChange("wrapt", "pypi", None, "1.15"),
    )


def test_release_diff_per_node_same_image_new_dropped_and_missing_sbom(kit):
    r1 = ImagesLock(
        {
            e.reference: e
            for e in (
                kit.locked(TF.replace("r2", "r1"), node="tools", digest=kit.digest("tf1")),
                kit.locked(BASE.replace("r2", "r1"), node="base", layer="base", digest=kit.digest("base")),
                kit.locked("127.0.0.1:5000/strata/old:x-r1", node="old"),
            )
        }
    )
    r2 = ImagesLock(
        {
            e.reference: e
            for e in (
                kit.locked(TF, node="tools", digest=kit.digest("tf2")),
                kit.locked(BASE, node="base", layer="base", digest=kit.digest("base")),
                kit.locked("127.0.0.1:5000/strata/new:x-r2", node="new"),
            )
        }
    )
    lists = {
        kit.digest("tf1"): PackageList((Package("pypi", "numpy", "1.24.3", ""),), "sbom"),
        kit.digest("tf2"): PackageList((Package("pypi", "numpy", "1.24.4", ""),), "sbom"),
    }
    diffs = {d.node: d for d in release_diff(r1, r2, lambda e: lists[e.digest])}
    assert diffs["base"].same_image and diffs["base"].changes == ()
    assert diffs["tools"].changes == (PackageChange("numpy", "pypi", "1.24.3", "1.24.4"),)
    assert diffs["old"].new is None and diffs["new"].old is None
    lists[kit.digest("tf1")] = PackageList(None, "no SBOM is stored next to this image")
    diffs = {d.node: d for d in release_diff(r1, r2, lambda e: lists[e.digest])}
    assert diffs["tools"].note == "no package diff: no SBOM is stored next to this image"


def test_min_driver_only_for_gpu_images(kit):
    assert min_driver(kit.locked(TF, versions=GPU)) == "450.80.02"
    assert min_driver(kit.locked(TF, versions={**GPU, "flavor": "cpu"})) is None
    assert min_driver(kit.locked(BASE, versions={"os": "bookworm"})) is None


def test_smoke_and_vulnerabilities_say_not_run_and_not_audited_when_there_is_no_result(kit, tmp_path):
    entry = kit.locked(TF)
    assert smoke_verdict(tmp_path / "smoke", entry) == Verdict("none", "not run")
    assert vulnerability_verdict(tmp_path / "evidence", entry) == Verdict("none", "not audited")
    report = ImageReport(
        entry.reference, entry.config_digest, [CheckResult.passed("a"), CheckResult.passed("b")]
    )
    save_report(tmp_path / "smoke", report)
    assert smoke_verdict(tmp_path / "smoke", entry) == Verdict("pass", "pass: 2 passed, 0 failed, 0 not run")
    report_dir = tmp_path / "evidence" / "strata" / "tensorflow" / "2.13.1-gpu-r2"
    report_dir.mkdir(parents=True)
    summary = {
        "python": {"findings": 2, "not_audited": 3},
        "debian": {"updates": 1},
        "complete": False,
    }
    (report_dir / "vulnerabilities.json").write_text(json.dumps({"digest": entry.digest, "summary": summary}))
    verdict = vulnerability_verdict(tmp_path / "evidence", entry)
    assert verdict == Verdict(
        "fail", "2 Python advisories, 1 Debian security updates; 3 packages NOT AUDITED"
    )
    (report_dir / "vulnerabilities.json").write_text("{")
    assert vulnerability_verdict(tmp_path / "evidence", entry).state == "warn"


def test_layers_are_credited_to_the_node_that_added_them(kit):
    base = kit.locked(BASE, node="base", layer="base", digest=kit.digest("b"))
    tool = kit.locked(TF, node="tools", parent="base", digest=kit.digest("t"))
    lock = ImagesLock({base.reference: base, tool.reference: tool})
    layers = {base.digest: [("sha256:l1", 10)], tool.digest: [("sha256:l1", 10), ("sha256:l2", 20)]}
    rows = layer_rows(tool, lock, lambda e: layers.get(e.digest))
    assert rows == (LayerRow("sha256:l1", 10, "base"), LayerRow("sha256:l2", 20, "tools"))
    assert layer_rows(kit.locked("127.0.0.1:5000/x/y:z"), lock, lambda e: None) is None


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.links += [v or "" for k, v in attrs if k == "href"]


def hand_site(kit) -> Site:
    tool = kit.locked(TF, node="tools", versions=GPU, evidence={"sbom": kit.digest("sbom")})
    base = kit.locked(BASE, node="base", layer="base", versions={"os": "bookworm", "python": "3.11"})
    lock = ImagesLock({tool.reference: tool, base.reference: base}).with_aliases(
        [LockedAlias(ALIAS, TF, tool.digest)], 2
    )
    hostile = Package("pypi", "<script>alert(1)</script>", "1&2", "tools")
    facts = [
        TagFacts(
            entry=tool,
            aliases=(ALIAS,),
            min_driver="450.80.02",
            layers=(LayerRow("sha256:" + "1" * 64, 1234, "tools"),),
            smoke=Verdict("pass", "pass: 9 passed, 0 failed, 0 not run"),
            bench=Verdict("none", "not run"),
            signature=Verdict("pass", "valid (key abc)"),
            vulnerabilities=Verdict("none", "not audited"),
            packages=PackageList((Package("pypi", "numpy", "1.24.3", "tools"), hostile), "CycloneDX SBOM x"),
        ),
        TagFacts(
            entry=base,
            aliases=(),
            min_driver=None,
            layers=None,
            smoke=Verdict("none", "not run"),
            bench=Verdict("none", "not run"),
            signature=Verdict("none", "not signed"),
            vulnerabilities=Verdict("none", "not audited"),
            packages=PackageList(None, "no SBOM is stored next to this image"),
        ),
    ]
    diff = release_diff(ImagesLock(), lock, lambda e: PackageList(None, "-"))
    return Site(
        lock_name="images.lock.json",
        lock_release=2,
        tags=tuple(facts),
        aliases=((ALIAS, TF, tool.digest),),
        releases=(Release(1, "registry r1", ImagesLock()), Release(2, "registry r2", lock, diff, 1)),
        channel="127.0.0.1:5000/strata/images-lock",
        verified_with="abc",
        extra_files={"images.lock.json": lock.render().encode()},
    )


def test_pages_list_every_tag_and_alias_link_to_tag_pages_and_escape_what_they_show(kit):
    site = hand_site(kit)
    files = render_site(site)
    assert set(files) == {
        "index.html",
        "releases.html",
        "images.lock.json",
        "tags/127-0-0-1-5000-strata-tensorflow-2-13-1-gpu-r2.html",
        "tags/127-0-0-1-5000-strata-base-bookworm-r2.html",
    }
    index = str(files["index.html"])
    assert index.count('class="tag-row"') == 2 and index.count('class="alias-row"') == 1
    for text in (
        "strata/tensorflow:2.13.1-gpu-r2",
        "strata/base:bookworm-r2",
        "strata/tensorflow:2.13-gpu",
        "450.80.02",
        "11.8",
        "8.6",
        "not audited",
        "valid (key abc)",
        "612.3 MB",
        "1.81 GB",
    ):
        assert text in index, text
    parser = Links()
    parser.feed(index)
    for page in [link for link in parser.links if link.startswith("tags/")]:
        assert page in files, page
    tag_page = str(files["tags/127-0-0-1-5000-strata-tensorflow-2-13-1-gpu-r2.html"])
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in tag_page and "1&amp;2" in tag_page
    checker = Links()
    checker.feed(tag_page)
    assert checker.scripts == 0 and "../index.html" in checker.links
    assert "docker pull 127.0.0.1:5000/strata/tensorflow:2.13.1-gpu-r2@sha256:" in tag_page
    base_page = str(files["tags/127-0-0-1-5000-strata-base-bookworm-r2.html"])
    assert "Package list unavailable: no SBOM is stored next to this image." in base_page
    assert "The registry does not hold this manifest." in base_page
    releases = str(files["releases.html"])
    assert re.search(r"Release 2</h2>.*Changes since release 1.*new in this release", releases, re.S)
    assert render_site(site) == files  # no timestamps: the same inputs give the same bytes


def test_write_site_writes_changes_only_and_drops_pages_of_tags_no_longer_listed(kit, tmp_path):
    files = render_site(hand_site(kit))
    assert write_site(tmp_path, files) == (len(files), 0)
    assert write_site(tmp_path, files) == (0, 0)
    stale = tmp_path / "tags" / "gone.html"
    stale.write_text("old")
    assert write_site(tmp_path, files) == (0, 1) and not stale.exists()

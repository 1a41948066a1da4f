"""The SBOM of a real node of the default plan: valid CycloneDX 1.6 by the library's own validator, complete
(every wheel with sha256 and URL, every Debian package, the root filesystem, the image digests), reproducible."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from packageurl import PackageURL

from registry_sync.publish.sbom import SbomError, sbom_bytes, validation_errors

EPOCH = 1700000000


@pytest.fixture(scope="module")
def framework(
    published,
):  # base-bookworm + tf2.13.1-cpu-py3.11: Debian packages and wheels, the fewest URLs to check
    entry, chain = published("tf2.13.1-cpu-py3.11")
    return entry, chain, sbom_bytes(entry, chain, EPOCH)


def test_sbom_of_a_real_node_is_valid_cyclonedx(framework):
    _, _, document = framework
    assert validation_errors(document) == []


def test_sbom_names_every_pinned_input(framework):
    entry, chain, document = framework
    bom = json.loads(document)
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    image = bom["metadata"]["component"]
    assert image["type"] == "container"
    assert image["hashes"] == [{"alg": "SHA-256", "content": entry.digest.split(":")[1]}]
    assert image["purl"].startswith(f"pkg:oci/tensorflow-core@{entry.digest}?")
    props = {p["name"]: p["value"] for p in image["properties"]}
    assert props["strata:config_digest"] == entry.config_digest
    assert props["strata:content_hash"] == entry.content_hash
    purls = {c["bom-ref"]: PackageURL.from_string(c["purl"]) for c in bom["components"] if "purl" in c}
    by_package = {(p.type, p.name, p.version): p for p in purls.values()}
    wheels = [w for n in chain if n.lock for w in n.lock.wheels]
    debs = [d for n in chain if n.lock for d in n.lock.debs]
    assert len(wheels) > 30 and len(debs) > 100
    for wheel in wheels:
        component = next(
            c for c in bom["components"] if c["name"] == wheel.name and c["version"] == wheel.version
        )
        assert purls[component["bom-ref"]].qualifiers == {"file_name": wheel.filename}
        assert component["version"] == wheel.version
        assert component["hashes"] == [{"alg": "SHA-256", "content": wheel.sha256}]
        assert component["externalReferences"][0]["url"] == wheel.url
    for deb in debs:
        purl = by_package[("deb", deb.name, deb.version)]
        assert purl.namespace == "debian" and purl.qualifiers == {"arch": deb.arch, "distro": "debian-12"}
    rootfs = chain[0].lock.rootfs
    os_component = next(c for c in bom["components"] if c["type"] == "operating-system")
    assert os_component["hashes"] == [{"alg": "SHA-256", "content": rootfs.sha256}]
    assert os_component["version"] == "12"
    # the dependency graph: image -> rootfs and wheels; rootfs -> its packages
    graph = {d["ref"]: set(d.get("dependsOn", [])) for d in bom["dependencies"]}
    assert os_component["bom-ref"] in graph[image["bom-ref"]]
    assert len(graph[os_component["bom-ref"]]) == len(debs)


def test_sbom_bytes_are_reproducible(framework):
    entry, chain, document = framework
    again = sbom_bytes(entry, chain, EPOCH)
    assert again == document
    bom = json.loads(document)
    assert bom["metadata"]["timestamp"] == "2023-11-14T22:13:20+00:00"
    other = json.loads(sbom_bytes(replace(entry, digest="sha256:" + "0" * 64), chain, EPOCH))
    assert other["serialNumber"] != bom["serialNumber"]  # a uuid5 of the image, not of the clock


def test_the_validator_rejects_a_broken_sbom(published):
    entry, chain = published("base-bookworm")  # no wheel URLs: quick to validate
    bom = json.loads(sbom_bytes(entry, chain, EPOCH))
    assert validation_errors(json.dumps(bom).encode()) == []
    bom["components"][0]["hashes"] = [{"alg": "SHA-257", "content": "00"}]
    bom["metadata"]["component"]["unknownField"] = 1
    errors = validation_errors(json.dumps(bom).encode())
    assert len(errors) >= 2
    assert any("SHA-257" in e for e in errors)


def test_no_sbom_when_the_plan_no_longer_matches_what_was_published(published):
    entry, chain = published("tf2.13.1-cpu-py3.11")
    with pytest.raises(SbomError, match="the locks no longer describe this image"):
        sbom_bytes(replace(entry, content_hash="f" * 64), chain, EPOCH)
    with pytest.raises(SbomError, match="does not end at node"):
        sbom_bytes(entry, chain[:-1], EPOCH)


def test_every_image_of_the_default_plan_has_an_sbom(default_plan, published):
    for node in default_plan.nodes:
        entry, chain = published(node.id)
        bom = json.loads(sbom_bytes(entry, chain, EPOCH))
        wheels = sum(len(n.lock.wheels) for n in chain if n.lock)
        assert sum(c.get("purl", "").startswith("pkg:pypi/") for c in bom["components"]) == wheels

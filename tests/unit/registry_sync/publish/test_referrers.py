"""OCI 1.1 artifact manifests and the referrers index of the tag schema fallback: shape and stable bytes."""

from __future__ import annotations

import json

from builder.oci.digest import sha256_digest as sha256_of
from builder.oci.media_types import OCI_INDEX, OCI_MANIFEST
from registry_sync.publish.referrers import (
    Document,
    Subject,
    artifact_manifest,
    fallback_tag,
    referrers_index,
)

SUBJECT = Subject(OCI_MANIFEST, "sha256:" + "a" * 64, 1234)


def test_fallback_tags():
    assert fallback_tag(SUBJECT.digest) == "sha256-" + "a" * 64
    assert fallback_tag(SUBJECT.digest, "sbom") == "sha256-" + "a" * 64 + ".sbom"


def test_artifact_manifest_is_an_oci_1_1_artifact_about_its_subject():
    document = Document(
        "sbom", "application/vnd.cyclonedx+json", "sbom.cdx.json", b'{"bomFormat":"CycloneDX"}'
    )
    body = artifact_manifest(SUBJECT, document, 1700000000)
    manifest = json.loads(body)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["artifactType"] == "application/vnd.cyclonedx+json"
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": sha256_of(b"{}"),
        "size": 2,
    }
    assert manifest["layers"] == [
        {
            "mediaType": "application/vnd.cyclonedx+json",
            "digest": sha256_of(document.data),
            "size": len(document.data),
            "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"},
        }
    ]
    assert manifest["subject"] == {"mediaType": OCI_MANIFEST, "digest": SUBJECT.digest, "size": 1234}
    assert manifest["annotations"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert artifact_manifest(SUBJECT, document, 1700000000) == body  # same document, same digest


def test_referrers_index_is_sorted_and_stable():
    a = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "2" * 64, "size": 1, "artifactType": "b"}
    b = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 1, "artifactType": "a"}
    index = json.loads(referrers_index([a, b]))
    assert index["mediaType"] == OCI_INDEX and index["schemaVersion"] == 2
    assert [m["artifactType"] for m in index["manifests"]] == ["a", "b"]
    assert referrers_index([a, b]) == referrers_index([b, a])

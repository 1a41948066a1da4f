"""Documents stored next to an image in its repository: OCI 1.1 artifacts found through the tag schema fallback.

Distribution 2.8 (the embedded registry) has no referrers API (`GET /v2/<repo>/referrers/<digest>` is 404), so
each document is an OCI image manifest with `artifactType`, the empty config, one layer holding the document's
exact bytes and `subject` naming the image, stored under two kinds of tag:

    sha256-<hex>.<kind>   one tag per kind (`sbom`, `att` for the provenance, `sig` for the signature), the
                          convention cosign and the issue use: `crane`/`oras` can fetch one by name
    sha256-<hex>          the OCI 1.1 spec's referrers tag schema: one image index listing every artifact of the
                          subject (descriptor with artifactType and annotations), kept current on each push, so an
                          OCI 1.1 client (`oras discover`) finds them on a registry without the referrers API

Manifests are stable JSON (sorted keys, the created annotation is the matrix epoch), so pushing the same document
twice gives the same digest and changes nothing.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from builder.errors import StrataError
from builder.oci.digest import sha256_digest as sha256_of
from builder.oci.media_types import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST
from registry_sync.registry.client import RegistryClient

EMPTY = b"{}"
KIND_ANNOTATION = "io.strata.evidence.kind"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
TITLE_ANNOTATION = "org.opencontainers.image.title"
CREATED_ANNOTATION = "org.opencontainers.image.created"


class ReferrerError(StrataError):
    """A document next to an image is missing or malformed in the registry."""


@dataclass(frozen=True)
class Subject:
    """The image a document is about: its manifest's media type, digest and size (an OCI descriptor)."""

    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Document:
    """One document to store next to an image: its kind (tag suffix), media type, file name and bytes."""

    kind: str
    media_type: str
    title: str
    data: bytes
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256_of(self.data)


def fallback_tag(subject_digest: str, kind: str | None = None) -> str:
    """`sha256-<hex>` (the referrers index) or `sha256-<hex>.<kind>`."""
    algorithm, _, value = subject_digest.partition(":")
    return f"{algorithm}-{value}" + (f".{kind}" if kind else "")


def artifact_manifest(subject: Subject, document: Document, epoch: int) -> bytes:
    """The OCI 1.1 artifact manifest for `document` about `subject` (same inputs, same bytes)."""
    created = datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    annotations = {KIND_ANNOTATION: document.kind, CREATED_ANNOTATION: created, **document.annotations}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": document.media_type,
        "config": {"mediaType": OCI_EMPTY, "digest": sha256_of(EMPTY), "size": len(EMPTY)},
        "layers": [
            {
                "mediaType": document.media_type,
                "digest": document.digest,
                "size": len(document.data),
                "annotations": {TITLE_ANNOTATION: document.title},
            }
        ],
        "subject": subject.to_json(),
        "annotations": dict(sorted(annotations.items())),
    }
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()


def referrers_index(descriptors: list[dict[str, Any]]) -> bytes:
    """The OCI image index the tag schema fallback stores under `sha256-<hex>`."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": sorted(descriptors, key=lambda d: (d.get("artifactType", ""), d["digest"])),
    }
    return json.dumps(index, separators=(",", ":"), sort_keys=True).encode()


def _descriptor(manifest: bytes) -> dict[str, Any]:
    doc = json.loads(manifest)
    return {
        "mediaType": OCI_MANIFEST,
        "digest": sha256_of(manifest),
        "size": len(manifest),
        "artifactType": doc["artifactType"],
        "annotations": doc.get("annotations") or {},
    }


def subject_of(client: RegistryClient, repository: str, digest: str) -> Subject:
    """The descriptor of image `repository@digest` as the registry stores it."""
    manifest = client.get_manifest(repository, digest)
    if manifest is None:
        raise ReferrerError(f"{client.host}/{repository}@{digest} does not exist; push it first")
    return Subject(manifest.media_type or OCI_MANIFEST, manifest.digest, len(manifest.body))


def push_documents(
    client: RegistryClient, repository: str, subject: Subject, documents: list[Document], epoch: int
) -> dict[str, str]:
    """Store each document as an artifact about `subject` under `sha256-<hex>.<kind>` and update the referrers
    index `sha256-<hex>`; returns {kind: artifact manifest digest}. Blobs already there are not uploaded again.

    The index keeps other tools' referrers and replaces Strata's earlier artifact of the same kind.
    """
    pushed: dict[str, bytes] = {}
    for blob in (EMPTY, *(d.data for d in documents)):
        digest = sha256_of(blob)
        if client.blob_size(repository, digest) is None:
            client.upload_bytes(repository, digest, blob)
    for document in documents:
        manifest = artifact_manifest(subject, document, epoch)
        client.put_manifest(repository, fallback_tag(subject.digest, document.kind), manifest, OCI_MANIFEST)
        pushed[document.kind] = manifest
    kinds = set(pushed)
    kept = [
        d
        for d in _index_descriptors(client, repository, subject.digest)
        if (d.get("annotations") or {}).get(KIND_ANNOTATION) not in kinds
    ]
    index = referrers_index(kept + [_descriptor(m) for m in pushed.values()])
    client.put_manifest(repository, fallback_tag(subject.digest), index, OCI_INDEX)
    return {kind: sha256_of(manifest) for kind, manifest in pushed.items()}


def _index_descriptors(client: RegistryClient, repository: str, subject_digest: str) -> list[dict[str, Any]]:
    existing = client.get_manifest(repository, fallback_tag(subject_digest))
    if existing is None:
        return []
    try:
        manifests = json.loads(existing.body).get("manifests") or []
    except ValueError:
        raise ReferrerError(
            f"{client.host}/{repository}:{fallback_tag(subject_digest)} is not an image index"
        ) from None
    return [m for m in manifests if isinstance(m, dict) and "digest" in m]


def list_referrers(client: RegistryClient, repository: str, subject_digest: str) -> list[dict[str, Any]]:
    """The descriptors of the referrers index of `subject_digest` (empty when there is none)."""
    return _index_descriptors(client, repository, subject_digest)


def fetch_document(client: RegistryClient, repository: str, subject_digest: str, kind: str) -> bytes | None:
    """The bytes of the `kind` document about `subject_digest`, or None when the registry has none.

    The artifact must name `subject_digest` as its subject: a tag pointing at another image's document is refused.
    """
    tag = fallback_tag(subject_digest, kind)
    manifest = client.get_manifest(repository, tag)
    if manifest is None:
        return None
    try:
        doc = json.loads(manifest.body)
        layer = doc["layers"][0]
        subject = doc["subject"]["digest"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ReferrerError(f"{client.host}/{repository}:{tag} is not a Strata evidence artifact") from None
    if subject != subject_digest:
        raise ReferrerError(f"{client.host}/{repository}:{tag} is about {subject}, not {subject_digest}")
    with tempfile.TemporaryDirectory(prefix="strata-referrer-") as scratch:
        target = Path(scratch) / "document"
        client.download_blob(repository, str(layer["digest"]), target)  # checks the blob's sha256
        return target.read_bytes()

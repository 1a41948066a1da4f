"""strata sign's storage on a real registry (distribution 2.8, no referrers API): SBOM, provenance and signature
stored as OCI 1.1 artifacts under sha256-<hex>.sbom/.att/.sig, the referrers index sha256-<hex> kept current, and
verification read back from the registry; tampering in the registry is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.oci.media_types import OCI_MANIFEST
from registry_sync.publish.attest import SignatureInvalid, generate_keypair, load_public_key, load_signer
from registry_sync.publish.evidence import Checkout, registry_documents, sign_image, verify_image
from registry_sync.publish.images_lock import ImagesLock
from registry_sync.publish.push_plan import PushOptions, publish_plan
from registry_sync.publish.referrers import (
    KIND_ANNOTATION,
    Document,
    ReferrerError,
    Subject,
    fallback_tag,
    fetch_document,
    list_referrers,
    push_documents,
)
from registry_sync.publish.tag_policy import AuditLog, TagPolicy

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[4]
EPOCH = 1700000000


@pytest.fixture
def pushed(make_chain, engine, plain_registry, plain_client, tmp_path):
    """A base -> app -> tool chain pushed to the plain registry; its lock entries by node id."""
    chain = make_chain(plain_registry)
    options = PushOptions(
        registry=plain_registry,
        policy=TagPolicy(),
        audit=AuditLog(tmp_path / "audit.jsonl"),
        profile="hermetic",
        cache_dir=tmp_path / "layers",
        work_dir=tmp_path,
    )
    results = publish_plan(chain.plan, engine, plain_client, options)
    assert [r.status for r in results] == ["pushed"] * 3
    return chain, {r.node: r.locked for r in results}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    private, public = generate_keypair(tmp_path_factory.mktemp("keys"), None)
    return load_signer(private, None), load_public_key(public)


def sign(chain, entries, node_id, client, signer):
    entry = entries[node_id]
    nodes = {n.id: n for n in chain.nodes}
    path = [nodes[node_id]]
    while path[0].parent:
        path.insert(0, nodes[path[0].parent])
    lock = ImagesLock({e.reference: e for e in entries.values()})
    return sign_image(entry, path, lock, Checkout(REPO, "matrix.yaml", "", False), client, signer, EPOCH)


def verify(entry, client, key):
    return verify_image(
        entry.reference,
        entry.digest,
        [key],
        registry_documents(client, entry.ref.repository),
        digest_from="test",
        source="registry",
    )


def test_sign_stores_the_documents_next_to_the_image(pushed, plain_client, keys):
    chain, entries = pushed
    signer, key = keys
    evidence = sign(chain, entries, "tool", plain_client, signer)
    entry = entries["tool"]
    repository = entry.ref.repository
    tags = set(plain_client.list_tags(repository))
    hex_ = entry.digest.split(":")[1]
    assert {f"sha256-{hex_}", f"sha256-{hex_}.sbom", f"sha256-{hex_}.att", f"sha256-{hex_}.sig"} <= tags
    for kind, suffix in (("sbom", "sbom"), ("provenance", "att"), ("signature", "sig")):
        manifest = plain_client.get_manifest(repository, fallback_tag(entry.digest, suffix))
        assert manifest is not None and manifest.digest == evidence.artifacts[kind]
        body = json.loads(manifest.body)
        assert body["subject"]["digest"] == entry.digest
        assert body["layers"][0]["digest"] == evidence.digests[kind]
    index = plain_client.get_manifest(repository, fallback_tag(entry.digest))
    assert (
        index is not None and json.loads(index.body)["mediaType"] == "application/vnd.oci.image.index.v1+json"
    )
    referrers = list_referrers(plain_client, repository, entry.digest)
    assert sorted(r["annotations"][KIND_ANNOTATION] for r in referrers) == ["att", "sbom", "sig"]
    assert {r["artifactType"] for r in referrers} == {
        "application/vnd.cyclonedx+json",
        "application/vnd.dsse.envelope.v1+json",
    }
    result = verify(entry, plain_client, key)
    assert result.sbom_digest == evidence.digests["sbom"] and result.keyid == key.keyid


def test_signing_again_changes_nothing_and_keeps_other_referrers(pushed, plain_client, keys):
    chain, entries = pushed
    signer, _ = keys
    entry = entries["app"]
    repository = entry.ref.repository
    first = sign(chain, entries, "app", plain_client, signer)
    manifest = plain_client.get_manifest(repository, entry.digest)
    subject = Subject(manifest.media_type, manifest.digest, len(manifest.body))
    push_documents(
        plain_client, repository, subject, [Document("note", "text/plain", "note.txt", b"hi")], EPOCH
    )
    again = sign(chain, entries, "app", plain_client, signer)
    assert again.artifacts == first.artifacts and again.digests == first.digests
    kinds = sorted(
        r["annotations"][KIND_ANNOTATION] for r in list_referrers(plain_client, repository, entry.digest)
    )
    assert kinds == ["att", "note", "sbom", "sig"]


def test_a_document_replaced_in_the_registry_is_refused(pushed, plain_client, keys):
    chain, entries = pushed
    signer, key = keys
    evidence = sign(chain, entries, "base", plain_client, signer)
    entry = entries["base"]
    repository = entry.ref.repository
    manifest = plain_client.get_manifest(repository, entry.digest)
    subject = Subject(manifest.media_type or OCI_MANIFEST, manifest.digest, len(manifest.body))
    sbom = json.loads(evidence.sbom)
    sbom["components"] = [{"type": "library", "name": "innocent", "version": "1"}]
    push_documents(
        plain_client,
        repository,
        subject,
        [Document("sbom", "application/vnd.cyclonedx+json", "sbom.cdx.json", json.dumps(sbom).encode())],
        EPOCH,
    )
    with pytest.raises(SignatureInvalid, match="the sbom .* is not the one the signature names"):
        verify(entry, plain_client, key)


def test_an_artifact_about_another_image_is_refused(pushed, plain_client, keys):
    chain, entries = pushed
    signer, _ = keys
    sign(chain, entries, "tool", plain_client, signer)
    tool, app = entries["tool"], entries["app"]
    # copy the tool's signature artifact under the tag of another digest in the same repository
    stolen = plain_client.get_manifest(tool.ref.repository, fallback_tag(tool.digest, "sig"))
    other = "sha256:" + "5" * 64
    plain_client.put_manifest(tool.ref.repository, fallback_tag(other, "sig"), stolen.body, OCI_MANIFEST)
    with pytest.raises(ReferrerError, match=f"is about {tool.digest}, not {other}"):
        fetch_document(plain_client, tool.ref.repository, other, "sig")
    assert (
        fetch_document(plain_client, app.ref.repository, app.digest, "sig") is None
    )  # app was never signed here

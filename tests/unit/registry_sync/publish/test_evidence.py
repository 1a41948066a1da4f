"""The evidence of real default-plan images, checked offline from an evidence directory the way a user does:
valid as written; refused when any document is swapped, when the signature is for another digest, when
images.lock.json records other documents, and when images.lock.json changed after it was signed."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from registry_sync.publish.attest import (
    SignatureInvalid,
    generate_keypair,
    load_public_key,
    load_signer,
    lock_signature_path,
    sign_lock_file,
    verify_lock_file,
)
from registry_sync.publish.evidence import (
    PROVENANCE_FILE,
    SBOM_FILE,
    SIGNATURE_FILE,
    SUMMARY_FILE,
    Checkout,
    build_evidence,
    directory_documents,
    documents_of,
    evidence_dir,
    verify_image,
    write_evidence,
    write_index,
)
from registry_sync.publish.images_lock import ImagesLock, write_images_lock

REPO = Path(__file__).resolve().parents[4]
EPOCH = 1700000000
COMMIT = "e" * 40


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    out = tmp_path_factory.mktemp("keys")
    private, public = generate_keypair(out, None)
    other_private, other_public = generate_keypair(tmp_path_factory.mktemp("other"), None)
    return load_signer(private, None), load_public_key(public), load_signer(other_private, None)


@pytest.fixture(scope="module")
def signed(published, signing, tmp_path_factory):
    """Evidence of user-example-tf2.13.1-cpu and its parent, written as `strata sign` writes it."""
    signer, _, _ = signing
    entries = [published(n)[0] for n in ("tools-tf2.13.1-cpu", "user-example-tf2.13.1-cpu")]
    lock = ImagesLock({e.reference: e for e in entries})
    checkout = Checkout(REPO, "matrix.yaml", COMMIT, False)
    entry, chain = published("user-example-tf2.13.1-cpu")
    evidence = build_evidence(entry, chain, lock, checkout, signer, EPOCH, {"io.strata.compression": "gzip"})
    out = tmp_path_factory.mktemp("evidence")
    directory = write_evidence(out, evidence)
    return entry, evidence, out, directory


def copy_of(directory: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(directory, target)
    return target


def verify(entry, key, directory, digest=None, recorded=None):
    return verify_image(
        entry.reference,
        digest or entry.digest,
        [key],
        directory_documents(directory),
        digest_from="test",
        source=str(directory),
        recorded=recorded,
    )


def test_written_evidence_verifies_offline(signed, signing):
    entry, evidence, out, directory = signed
    _, key, _ = signing
    assert (
        directory
        == evidence_dir(out, entry.reference)
        == out / "strata/example" / "2.13.1-cpu-py3.11-bookworm-r2"
    )
    result = verify(entry, key, directory, recorded=evidence.digests)
    assert result.keyid == key.keyid
    assert result.matrix_commit == COMMIT
    assert result.sbom_digest == evidence.digests["sbom"]
    assert result.sbom_components > 250  # 122 Debian packages, the root filesystem, every wheel of the chain
    summary = json.loads((directory / SUMMARY_FILE).read_text())
    assert summary["signature"]["digest"] == evidence.digests["signature"]
    assert summary["sbom"]["by_type"]["deb"] == 122


def test_provenance_names_the_locks_the_parent_and_the_policy(signed):
    _, evidence, _, directory = signed
    payload = json.loads(base64.b64decode(json.loads((directory / PROVENANCE_FILE).read_bytes())["payload"]))
    deps = payload["predicate"]["buildDefinition"]["resolvedDependencies"]
    names = [d["name"] for d in deps]
    assert names[0] == "matrix" and deps[0]["digest"] == {"gitCommit": COMMIT}
    for lock in ("base-bookworm", "tf2.13.1-cpu-py3.11", "tools-tf2.13.1-cpu", "user-example-tf2.13.1-cpu"):
        path = f"locks/hermetic/{lock}.lock"
        dep = next(d for d in deps if d["name"] == path)
        assert dep["digest"]["sha256"] == hashlib.sha256((REPO / path).read_bytes()).hexdigest()
    assert any(n.startswith("rootfs:base-bookworm") for n in names)
    assert "127.0.0.1:5000/strata/tensorflow" in names  # the parent image, by digest
    assert payload["predicate"]["buildDefinition"]["internalParameters"]["canonical"]["compression"] == "gzip"


@pytest.mark.parametrize("name", [SBOM_FILE, PROVENANCE_FILE])
def test_a_swapped_document_is_refused(signed, signing, tmp_path, name):
    entry, _, _, directory = signed
    _, key, _ = signing
    copy = copy_of(directory, tmp_path)
    data = json.loads((copy / name).read_bytes())
    data["tampered"] = True
    (copy / name).write_text(json.dumps(data))
    kind = "sbom" if name == SBOM_FILE else "provenance"
    with pytest.raises(SignatureInvalid, match=f"the {kind} .* is not the one the signature names"):
        verify(entry, key, copy)


def test_a_signature_by_another_key_is_refused(signed, signing, published, tmp_path):
    entry, evidence, _, directory = signed
    _, key, other = signing
    copy = copy_of(directory, tmp_path)
    _, chain = published("user-example-tf2.13.1-cpu")
    forged = build_evidence(
        entry, chain, ImagesLock({}), Checkout(REPO, "matrix.yaml", "", False), other, EPOCH, {}
    )
    for document in (SIGNATURE_FILE, SBOM_FILE, PROVENANCE_FILE):
        (copy / document).write_bytes(
            {SIGNATURE_FILE: forged.signature, SBOM_FILE: forged.sbom, PROVENANCE_FILE: forged.provenance}[
                document
            ]
        )
    with pytest.raises(SignatureInvalid, match="does not verify with the public key"):
        verify(entry, key, copy)


def test_a_signature_for_another_image_is_refused(signed, signing):
    entry, _, _, directory = signed
    _, key, _ = signing
    with pytest.raises(SignatureInvalid, match="changed after signing"):
        verify(entry, key, directory, digest="sha256:" + "9" * 64)


def test_documents_other_than_the_lock_records_are_refused(signed, signing):
    entry, evidence, _, directory = signed
    _, key, _ = signing
    recorded = dict(evidence.digests, sbom="sha256:" + "8" * 64)
    with pytest.raises(SignatureInvalid, match="not the one images.lock.json records"):
        verify(entry, key, directory, recorded=recorded)


def test_missing_documents_are_named(signed, signing, tmp_path):
    entry, _, _, directory = signed
    _, key, _ = signing
    copy = copy_of(directory, tmp_path)
    (copy / SBOM_FILE).unlink()
    with pytest.raises(SignatureInvalid, match="no sbom in"):
        verify(entry, key, copy)
    (copy / SIGNATURE_FILE).unlink()
    with pytest.raises(SignatureInvalid, match="no signature in .*run `strata sign`"):
        verify(entry, key, copy)


def test_documents_as_registry_artifacts(signed):
    _, evidence, _, _ = signed
    documents = {d.kind: d for d in documents_of(evidence)}
    assert set(documents) == {"sbom", "att", "sig"}
    assert documents["sbom"].media_type == "application/vnd.cyclonedx+json"
    assert documents["att"].annotations == {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v1"}


def test_signed_images_lock_verifies_until_it_changes(signed, signing, tmp_path):
    entry, evidence, out, _ = signed
    signer, key, other = signing
    lock = ImagesLock({entry.reference: entry}).with_evidence({entry.reference: evidence.digests})
    path = tmp_path / "images.lock.json"
    write_images_lock(path, lock)
    assert '"evidence"' in path.read_text()
    with pytest.raises(SignatureInvalid, match="not signed .*run `strata sign`"):
        verify_lock_file(path, [key])
    assert sign_lock_file(path, signer) == lock_signature_path(path) == tmp_path / "images.lock.json.sig"
    assert verify_lock_file(path, [key]).images == 1
    index = json.loads(write_index(out, lock).read_text())
    assert index["images"][entry.reference]["evidence"] == evidence.digests
    path.write_text(path.read_text().replace(entry.digest, "sha256:" + "7" * 64))
    with pytest.raises(SignatureInvalid, match="changed after signing"):
        verify_lock_file(path, [key])
    write_images_lock(path, lock)
    sign_lock_file(path, other)
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify_lock_file(path, [key])


def test_a_new_push_keeps_the_evidence_of_an_unchanged_digest(signed):
    entry, evidence, _, _ = signed
    lock = ImagesLock({entry.reference: entry}).with_evidence({entry.reference: evidence.digests})
    again = lock.merged([entry])  # push of the same digest: the entry comes without evidence
    assert again.images[entry.reference].evidence == evidence.digests
    moved = lock.merged([replace(entry, digest="sha256:" + "6" * 64)])  # a forced push of other content
    assert moved.images[entry.reference].evidence == {}

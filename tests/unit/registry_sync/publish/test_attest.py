"""Signing keys, in-toto statements and DSSE envelopes, offline: a round trip verifies, and every tampering
(payload, signature bytes, payload type, key, subject digest, predicate type) is refused with one line."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner, SSlibKey

from registry_sync.publish.attest import (
    IMAGE_EVIDENCE,
    IMAGES_LOCK,
    PAYLOAD_TYPE,
    SLSA_PROVENANCE,
    ProvenanceFacts,
    ResolvedInput,
    SignatureInvalid,
    SigningError,
    generate_keypair,
    image_evidence_statement,
    images_lock_statement,
    load_public_key,
    load_signer,
    provenance_statement,
    sha256_hex,
    sign_statement,
    verify_statement,
)

MANIFEST = "sha256:" + "1" * 64
CONFIG = "sha256:" + "2" * 64
PASS = b"correct horse"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    out = tmp_path_factory.mktemp("keys")
    private, public = generate_keypair(out, PASS)
    return private, public, load_signer(private, PASS), load_public_key(public)


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory):
    out = tmp_path_factory.mktemp("other")
    private, public = generate_keypair(out, None)
    return load_signer(private, None), load_public_key(public)


def evidence(signer: CryptoSigner) -> bytes:
    stmt = image_evidence_statement(
        "127.0.0.1:5000/strata/base",
        "127.0.0.1:5000/strata/base:bookworm-r1",
        MANIFEST,
        CONFIG,
        "c" * 64,
        b"sbom",
        b"prov",
    )
    return sign_statement(stmt, signer)


def check(envelope: bytes, key: SSlibKey, digest: str = MANIFEST, predicate: str = IMAGE_EVIDENCE):
    return verify_statement(envelope, [key], subject_digest=digest, predicate_type=predicate, what="img")


def reenvelope(envelope: bytes, **changes) -> bytes:
    doc = json.loads(envelope)
    doc.update(changes)
    return json.dumps(doc).encode()


def test_keygen_writes_an_encrypted_private_key_readable_only_by_its_owner(keys, tmp_path):
    private, public, signer, key = keys
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in private.read_bytes()
    assert b"PUBLIC KEY" in public.read_bytes()
    assert signer.public_key.keyid == key.keyid  # both sides derive the key id from the key itself
    with pytest.raises(SigningError, match="already exists"):
        generate_keypair(private.parent, PASS)


def test_a_key_is_refused_with_a_wrong_or_missing_passphrase(keys, tmp_path):
    private, public, _, _ = keys
    with pytest.raises(SigningError, match="wrong passphrase"):
        load_signer(private, b"wrong")
    with pytest.raises(SigningError, match="STRATA_SIGNING_PASSPHRASE"):
        load_signer(private, None)
    with pytest.raises(SigningError, match="no private key here"):
        load_signer(tmp_path / "missing.key", None)
    with pytest.raises(SigningError, match="not a PEM public key"):
        load_public_key(private)


def test_an_ecdsa_key_made_elsewhere_signs_too(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "ec.key").write_bytes(pem)
    signer = load_signer(tmp_path / "ec.key", None)
    public = SSlibKey.from_crypto(key.public_key())
    assert check(evidence(signer), public).keyid == public.keyid


def test_round_trip(keys):
    _, _, signer, key = keys
    envelope = evidence(signer)
    doc = json.loads(envelope)
    assert doc["payloadType"] == PAYLOAD_TYPE and len(doc["signatures"]) == 1
    verified = check(envelope, key)
    assert verified.keyid == key.keyid
    assert verified.predicate["sbom"]["digest"] == f"sha256:{sha256_hex(b'sbom')}"
    assert verified.predicate["provenance"]["digest"] == f"sha256:{sha256_hex(b'prov')}"
    assert evidence(signer) == envelope  # ed25519 is deterministic: same statement, same bytes


def test_an_edited_payload_is_refused(keys):
    _, _, signer, key = keys
    envelope = evidence(signer)
    stmt = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    stmt["predicate"]["sbom"]["digest"] = "sha256:" + "0" * 64
    payload = base64.b64encode(json.dumps(stmt).encode()).decode()
    with pytest.raises(SignatureInvalid, match="does not verify with the public key"):
        check(reenvelope(envelope, payload=payload), key)


def test_a_flipped_signature_byte_is_refused(keys):
    _, _, signer, key = keys
    doc = json.loads(evidence(signer))
    sig = bytearray(base64.b64decode(doc["signatures"][0]["sig"]))
    sig[7] ^= 1
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(SignatureInvalid, match="does not verify"):
        check(json.dumps(doc).encode(), key)


def test_a_changed_payload_type_is_refused(keys):
    _, _, signer, key = keys
    with pytest.raises(SignatureInvalid, match="not an in-toto statement"):
        check(reenvelope(evidence(signer), payloadType="application/json"), key)


def test_another_key_is_refused_even_when_it_claims_our_key_id(keys, other_keys):
    _, _, signer, key = keys
    other_signer, other = other_keys
    envelope = evidence(signer)
    with pytest.raises(SignatureInvalid, match="does not verify"):
        check(envelope, other)
    forged = SSlibKey(key.keyid, other.keytype, other.scheme, other.keyval)
    with pytest.raises(SignatureInvalid, match="does not verify"):
        check(envelope, forged)
    with pytest.raises(SignatureInvalid, match="does not verify"):
        check(evidence(other_signer), key)


def test_a_valid_signature_for_another_digest_or_kind_is_refused(keys):
    _, _, signer, key = keys
    envelope = evidence(signer)
    with pytest.raises(SignatureInvalid, match="vouches for sha256:1111111111111111…, not for sha256:3333"):
        check(envelope, key, digest="sha256:" + "3" * 64)
    with pytest.raises(SignatureInvalid, match="not a 'https://slsa.dev/provenance/v1'"):
        check(envelope, key, predicate=SLSA_PROVENANCE)


def test_garbage_is_not_an_envelope(keys):
    _, _, _, key = keys
    for garbage in (b"", b"{}", b"[1]", b'{"payload": "!!", "payloadType": "x", "signatures": []}'):
        with pytest.raises(SignatureInvalid):
            check(garbage, key)


def test_images_lock_statement_is_about_the_exact_bytes(keys):
    _, _, signer, key = keys
    lock = json.dumps({"schema": 1, "images": {"r:1": {"digest": MANIFEST}}}).encode()
    envelope = sign_statement(images_lock_statement("images.lock.json", lock), signer)
    verified = verify_statement(
        envelope, [key], subject_digest=f"sha256:{sha256_hex(lock)}", predicate_type=IMAGES_LOCK, what="lock"
    )
    assert verified.predicate == {"images": {"r:1": MANIFEST}}
    edited = lock.replace(b"1111", b"1112")
    with pytest.raises(SignatureInvalid, match="changed after signing"):
        verify_statement(
            envelope,
            [key],
            subject_digest=f"sha256:{sha256_hex(edited)}",
            predicate_type=IMAGES_LOCK,
            what="lock",
        )


def test_provenance_records_commit_locks_builder_and_canonical_policy():
    facts = ProvenanceFacts(
        repository="127.0.0.1:5000/strata/tensorflow",
        reference="127.0.0.1:5000/strata/tensorflow:2.13.1-cpu-r1",
        manifest_digest=MANIFEST,
        config_digest=CONFIG,
        node="tools-tf2.13.1-cpu",
        layer="tools",
        cells=("tf2.13.1-cpu",),
        profile="hermetic",
        content_hash="c" * 64,
        matrix_file="matrix.yaml",
        matrix_commit="a" * 40,
        matrix_dirty=False,
        inputs=(
            ResolvedInput("locks/hermetic/tools.lock", {"sha256": "d" * 64}, uri="locks/hermetic/tools.lock"),
        ),
        builder_version="0.1.0",
        canonical_policy={"planFormat": 1, "sourceDateEpoch": 1700000000, "compression": "gzip"},
    )
    stmt = provenance_statement(facts)
    assert stmt["_type"] == "https://in-toto.io/Statement/v1"
    assert stmt["predicateType"] == SLSA_PROVENANCE
    assert stmt["subject"] == [{"name": facts.repository, "digest": {"sha256": "1" * 64}}]
    build = stmt["predicate"]["buildDefinition"]
    assert build["resolvedDependencies"][0] == {
        "name": "matrix",
        "digest": {"gitCommit": "a" * 40},
        "uri": "matrix.yaml",
    }
    assert build["resolvedDependencies"][1]["digest"] == {"sha256": "d" * 64}
    assert build["internalParameters"]["canonical"]["compression"] == "gzip"
    assert stmt["predicate"]["runDetails"]["builder"]["id"].startswith("urn:io.strata:builder")

"""Signed evidence, offline: signing keys held by the maintainer, in-toto Statement v1 documents, DSSE envelopes.

Everything here is files and values: no registry, no network, no transparency log. The signing library is
securesystemslib (DSSE `Envelope`, `CryptoSigner`, `SSlibKey`), with `cryptography` reading PEM key files (a
private key may be passphrase-protected). Three statements are signed, each as a DSSE envelope of payload type
`application/vnd.in-toto+json`:

    provenance   SLSA provenance v1 of one image; subject: the image's repository and manifest sha256; records the
                 matrix commit, every lock file's sha256, the root filesystem / base image, the builder and the
                 canonical-image policy
    signature    Strata's image evidence statement; subject: the same manifest sha256; predicate: the version tag,
                 config digest, content hash, and the sha256 of the SBOM and of the provenance envelope, so one
                 valid signature vouches for the SBOM and the provenance a user holds
    images-lock  subject: `images.lock.json` and the sha256 of its exact bytes; predicate: every reference with
                 its digest and evidence digests

A signature is valid only when the envelope verifies with the public key AND its statement's subject digest is
the digest of the thing being checked (the manifest digest a user pins, the bytes of the file on disk):
`verify_statement` does both, and the predicate type, in one call.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import Error as SslibError
from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from builder.errors import StrataError
from builder.oci.digest import sha256_hex
from builder.oci.media_types import CYCLONEDX_JSON, DSSE_ENVELOPE

PAYLOAD_TYPE = "application/vnd.in-toto+json"
ENVELOPE_MEDIA_TYPE = DSSE_ENVELOPE
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
# Strata's own predicate and build types (URNs: stable names that need no web site).
IMAGE_EVIDENCE = "urn:io.strata:predicate:image-evidence:v1"
IMAGES_LOCK = "urn:io.strata:predicate:images-lock:v1"
BUILD_TYPE = "urn:io.strata:build-type:layer-node:v1"
BUILDER_ID = "urn:io.strata:builder:strata"
LOCK_SIGNATURE_SUFFIX = ".sig"  # images.lock.json.sig: the DSSE envelope of the lock, next to it
PRIVATE_KEY_NAME = "strata-signing.key"
PUBLIC_KEY_NAME = "strata-signing.pub"


class SigningError(StrataError):
    """A key cannot be read or used, or a document cannot be signed."""


class SignatureInvalid(StrataError):
    """A signature does not verify, was made by another key, or vouches for other bytes than those checked."""


# ---------------------------------------------------------------------------------------------- keys


def generate_keypair(out_dir: Path, passphrase: bytes | None) -> tuple[Path, Path]:
    """Write a new ed25519 key pair to `out_dir`: the private key (PKCS#8 PEM, encrypted when `passphrase`,
    mode 0600) and the public key (SubjectPublicKeyInfo PEM). Existing files are never overwritten."""
    private, public = out_dir / PRIVATE_KEY_NAME, out_dir / PUBLIC_KEY_NAME
    for path in (private, public):
        if path.exists():
            raise SigningError(f"{path}: already exists; move it away or choose another --out")
    key = Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        public.write_bytes(public_pem)
    except OSError as exc:
        raise SigningError(f"{out_dir}: cannot write the key pair ({exc.strerror})") from None
    return private, public


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningError(f"{path}: no {what} here") from None
    except OSError as exc:
        raise SigningError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def load_signer(path: Path, passphrase: bytes | None) -> CryptoSigner:
    """A signer for the PEM private key at `path` (ed25519, ECDSA or RSA), decrypted with `passphrase`."""
    pem = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError:
        if passphrase:
            raise SigningError(f"{path}: the key is not encrypted, but a passphrase was given") from None
        raise SigningError(
            f"{path}: the key is encrypted; set STRATA_SIGNING_PASSPHRASE or run from a terminal"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningError(f"{path}: wrong passphrase, or not a PEM private key") from None
    try:
        return CryptoSigner(key)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path}: unsupported key type ({exc})") from None


def load_public_key(path: Path) -> SSlibKey:
    """The PEM public key at `path`; its keyid is computed from the key itself, so signer and verifier agree."""
    pem = _read(path, "public key")
    try:
        return SSlibKey.from_crypto(serialization.load_pem_public_key(pem))
    except (ValueError, UnsupportedAlgorithm):
        raise SigningError(f"{path}: not a PEM public key") from None


def key_fingerprint(key: SSlibKey) -> str:
    """The keyid a user compares with the one published next to the key (sha256 of its canonical form)."""
    return key.keyid


# ---------------------------------------------------------------------------------------------- statements


def _hex(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64:
        raise SigningError(f"not a sha256 digest: {digest}")
    return value


def statement(
    subject_name: str, subject_digest: str, predicate_type: str, predicate: Mapping[str, Any]
) -> dict:
    """An in-toto Statement v1 about one subject (`subject_digest` is `sha256:<hex>`)."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": _hex(subject_digest)}}],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


@dataclass(frozen=True)
class ResolvedInput:
    """Something a build read, by digest: a lock file, a root filesystem, a base or parent image, the matrix."""

    name: str
    digest: Mapping[str, str]  # {"sha256": hex} or {"gitCommit": sha}
    uri: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "digest": dict(self.digest)}
        if self.uri:
            doc["uri"] = self.uri
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc


@dataclass(frozen=True)
class ProvenanceFacts:
    """What the provenance of one image states; every field is a value the caller read (no I/O here)."""

    repository: str  # registry/repository
    reference: str  # registry/repository:tag
    manifest_digest: str
    config_digest: str
    node: str
    layer: str
    cells: tuple[str, ...]
    profile: str
    content_hash: str
    matrix_file: str  # as named relative to the checkout
    matrix_commit: str  # git commit of the checkout, "" when not a git checkout
    matrix_dirty: bool  # the checkout had uncommitted changes when signing
    inputs: tuple[ResolvedInput, ...]  # locks, root filesystem, base image, parent image
    builder_version: str
    canonical_policy: Mapping[str, Any]  # how the image was made canonical (plan format, epoch, compression)


def provenance_statement(facts: ProvenanceFacts) -> dict:
    """SLSA provenance v1 for one published image (see the module docstring)."""
    dependencies = [i.to_json() for i in facts.inputs]
    if facts.matrix_commit:
        dependencies.insert(
            0, ResolvedInput("matrix", {"gitCommit": facts.matrix_commit}, uri=facts.matrix_file).to_json()
        )
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "matrix": facts.matrix_file,
                "profile": facts.profile,
                "node": facts.node,
                "layer": facts.layer,
                "cells": list(facts.cells),
                "reference": facts.reference,
            },
            "internalParameters": {
                "contentHash": facts.content_hash,
                "canonical": dict(facts.canonical_policy),
                "matrixDirty": facts.matrix_dirty,
            },
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": BUILDER_ID, "version": {"strata": facts.builder_version}},
            "metadata": {"invocationId": f"{facts.node}@{facts.content_hash}"},
            "byproducts": [
                {
                    "name": "config",
                    "digest": {"sha256": _hex(facts.config_digest)},
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                }
            ],
        },
    }
    return statement(facts.repository, facts.manifest_digest, SLSA_PROVENANCE, predicate)


@dataclass(frozen=True)
class EvidenceDigests:
    """sha256 digests (`sha256:<hex>`) of the documents stored next to an image, as images.lock.json records them."""

    sbom: str
    provenance: str
    signature: str

    def to_json(self) -> dict[str, str]:
        return {"sbom": self.sbom, "provenance": self.provenance, "signature": self.signature}


def image_evidence_statement(
    repository: str,
    reference: str,
    manifest_digest: str,
    config_digest: str,
    content_hash: str,
    sbom: bytes,
    provenance_envelope: bytes,
) -> dict:
    """The statement `strata sign` signs for one image: it binds the manifest digest to its SBOM and provenance."""
    predicate = {
        "reference": reference,
        "configDigest": config_digest,
        "contentHash": content_hash,
        "sbom": {"mediaType": CYCLONEDX_JSON, "digest": f"sha256:{sha256_hex(sbom)}"},
        "provenance": {
            "mediaType": ENVELOPE_MEDIA_TYPE,
            "digest": f"sha256:{sha256_hex(provenance_envelope)}",
        },
    }
    return statement(repository, manifest_digest, IMAGE_EVIDENCE, predicate)


def images_lock_statement(name: str, lock_bytes: bytes) -> dict:
    """The statement about images.lock.json's exact bytes; the predicate lists what it pins, for a reader."""
    try:
        images = json.loads(lock_bytes).get("images") or {}
    except (ValueError, AttributeError):
        raise SigningError(f"{name}: not JSON; sign only a lock `strata push` wrote") from None
    predicate = {
        "images": {ref: images[ref].get("digest") for ref in sorted(images) if isinstance(images[ref], dict)}
    }
    return statement(name, f"sha256:{sha256_hex(lock_bytes)}", IMAGES_LOCK, predicate)


# ---------------------------------------------------------------------------------------------- DSSE


def sign_statement(stmt: Mapping[str, Any], signer: CryptoSigner) -> bytes:
    """The DSSE envelope of `stmt` signed by `signer`, as stable JSON bytes (same statement and key, same bytes
    for ed25519, whose signatures are deterministic)."""
    payload = json.dumps(stmt, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    envelope = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    envelope.sign(signer)
    return (json.dumps(envelope.to_dict(), indent=2, sort_keys=True) + "\n").encode()


def envelope_statement(envelope_bytes: bytes, what: str) -> dict:
    """The statement inside an envelope, NOT verified: for showing what a document claims before checking it."""
    try:
        doc = json.loads(envelope_bytes)
        statement_doc = json.loads(base64.b64decode(doc["payload"], validate=True))
    except (ValueError, KeyError, TypeError):
        raise SignatureInvalid(f"{what}: not a DSSE envelope") from None
    if not isinstance(statement_doc, dict):
        raise SignatureInvalid(f"{what}: the envelope's payload is not an in-toto statement")
    return statement_doc


@dataclass(frozen=True)
class VerifiedStatement:
    """A statement whose envelope verified with `keyid` and whose subject digest is the one expected."""

    statement: Mapping[str, Any]
    keyid: str

    @property
    def predicate(self) -> Mapping[str, Any]:
        return self.statement.get("predicate") or {}


def verify_statement(
    envelope_bytes: bytes,
    keys: Sequence[SSlibKey],
    *,
    subject_digest: str,
    predicate_type: str,
    what: str,
) -> VerifiedStatement:
    """Check the DSSE envelope with `keys` (any one signature of one of them suffices), then that the statement is an
    in-toto Statement v1 of `predicate_type` with a subject whose sha256 is `subject_digest`.

    Every failure is a one-line SignatureInvalid naming `what`. Example:
    verify_statement(env, [load_public_key(Path("strata-signing.pub"))], subject_digest=digest,
                     predicate_type=IMAGE_EVIDENCE, what="127.0.0.1:5000/strata/base:bookworm-r1")
    """
    try:
        doc = json.loads(envelope_bytes)
        envelope = Envelope.from_dict(copy.deepcopy(doc))  # from_dict rewrites the dict it is given
    except (ValueError, KeyError, TypeError, AttributeError, SslibError):
        raise SignatureInvalid(f"{what}: the signature is not a DSSE envelope") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise SignatureInvalid(
            f"{what}: the envelope carries {envelope.payload_type!r}, not an in-toto statement"
        )
    try:
        verified = envelope.verify(list(keys), 1)
    except (UnverifiedSignatureError, VerificationError):
        ids = ", ".join(k.keyid[:16] for k in keys)
        signers = ", ".join(str(s.keyid)[:16] for s in envelope.signatures.values()) or "none"
        raise SignatureInvalid(
            f"{what}: the signature does not verify with the public key (key {ids}; signed by {signers})"
        ) from None
    try:
        stmt = json.loads(envelope.payload)
    except ValueError:
        raise SignatureInvalid(f"{what}: the signed payload is not JSON") from None
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        raise SignatureInvalid(f"{what}: the signed payload is not an in-toto Statement v1")
    if stmt.get("predicateType") != predicate_type:
        raise SignatureInvalid(
            f"{what}: the signed statement is a {stmt.get('predicateType')!r}, not a {predicate_type!r}"
        )
    want = _hex(subject_digest)
    subjects = stmt.get("subject")
    if not isinstance(subjects, list):
        subjects = []
    digests = [s.get("digest", {}).get("sha256") for s in subjects if isinstance(s, dict)]
    if want not in digests:
        signed = ", ".join(f"sha256:{d[:16]}…" for d in digests if isinstance(d, str)) or "nothing"
        raise SignatureInvalid(
            f"{what}: the signature vouches for {signed}, not for sha256:{want[:16]}… (changed after signing?)"
        )
    return VerifiedStatement(stmt, next(iter(verified)))


# ---------------------------------------------------------------------------------------------- images.lock.json


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a reader never sees half a document)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SigningError(f"{path}: cannot write ({exc.strerror})") from None


def lock_signature_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + LOCK_SIGNATURE_SUFFIX)


def sign_lock_file(lock_path: Path, signer: CryptoSigner) -> Path:
    """Sign the exact bytes of images.lock.json into `<lock>.sig`; returns that path."""
    try:
        data = lock_path.read_bytes()
    except OSError as exc:
        raise SigningError(f"{lock_path}: cannot read ({exc.strerror})") from None
    envelope = sign_statement(images_lock_statement(lock_path.name, data), signer)
    target = lock_signature_path(lock_path)
    write_file(target, envelope)
    return target


@dataclass(frozen=True)
class LockVerification:
    path: Path
    signature: Path
    keyid: str
    images: int


def verify_lock_file(
    lock_path: Path, keys: Sequence[SSlibKey], signature: Path | None = None
) -> LockVerification:
    """Check `<lock>.sig` (or `signature`) against the exact bytes of `lock_path`; SignatureInvalid otherwise."""
    signature = signature or lock_signature_path(lock_path)
    try:
        data = lock_path.read_bytes()
    except OSError as exc:
        raise SigningError(f"{lock_path}: cannot read ({exc.strerror})") from None
    try:
        envelope = signature.read_bytes()
    except FileNotFoundError:
        raise SignatureInvalid(f"{lock_path}: not signed (no {signature.name}; run `strata sign`)") from None
    except OSError as exc:
        raise SigningError(f"{signature}: cannot read ({exc.strerror})") from None
    verified = verify_statement(
        envelope,
        keys,
        subject_digest=f"sha256:{sha256_hex(data)}",
        predicate_type=IMAGES_LOCK,
        what=str(lock_path),
    )
    return LockVerification(lock_path, signature, verified.keyid, len(verified.predicate.get("images") or {}))

"""`strata sign` and `strata verify-signature`: the evidence of each published image, stored next to it.

Signing, per entry of images.lock.json (the image must be in the registry, its plan node must have the content hash
that was published, so the locks describe exactly what was pushed):

1. the SBOM (sbom.py), the SLSA provenance envelope and the signature envelope (attest.py) are built and signed
   with the maintainer's key;
2. they are pushed as artifacts about the image's manifest (referrers.py): tags `sha256-<hex>.sbom`,
   `sha256-<hex>.att`, `sha256-<hex>.sig` and the referrers index `sha256-<hex>`;
3. they are written to the evidence directory (default build/evidence), one directory per version tag
   `<repository>/<tag>/` with sbom.cdx.json, provenance.intoto.dsse.json, signature.intoto.dsse.json and
   evidence.json (what a catalog shows: digests, component counts, key id, where the registry has them);
4. their sha256 digests are recorded in the entry's `evidence` of images.lock.json.

Then images.lock.json itself is signed: `images.lock.json.sig` (a DSSE envelope next to the file). A user who has
images.lock.json, its .sig and the public key checks the file offline; a signed lock vouches, through the
evidence digests, for every image's SBOM, provenance and signature. When `strata push` stored the lock in the
registry (`<namespace>/images-lock:<plan digest>`), the signed lock replaces it there, its signature next to it,
and the lock channel's `r<release>` and `latest` tags (lock_channel.py) name it too.

Verifying an image (`verify_image`) needs the public key and the three documents, from the registry or from an
evidence directory (offline); the signature must be over the pinned manifest digest, and the SBOM and provenance
must be the bytes it names.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, SSlibKey

from builder.errors import StrataError
from builder.oci.media_types import OCI_MANIFEST
from builder.plan.graph import PLAN_FORMAT, LayerNode
from registry_sync.publish.attest import (
    ENVELOPE_MEDIA_TYPE,
    IMAGE_EVIDENCE,
    IMAGES_LOCK,
    LOCK_SIGNATURE_SUFFIX,
    SLSA_PROVENANCE,
    ProvenanceFacts,
    ResolvedInput,
    SignatureInvalid,
    image_evidence_statement,
    provenance_statement,
    sha256_hex,
    sign_statement,
    verify_statement,
    write_file,
)
from registry_sync.publish.images_lock import ImagesLock, LockedImage
from registry_sync.publish.lock_channel import publish_channel
from registry_sync.publish.push_plan import LOCK_REPOSITORY, push_lock_artifact
from registry_sync.publish.referrers import (
    PREDICATE_ANNOTATION,
    Document,
    Subject,
    fetch_document,
    push_documents,
)
from registry_sync.publish.sbom import MEDIA_TYPE as SBOM_MEDIA_TYPE
from registry_sync.publish.sbom import SPEC_VERSION, sbom_bytes
from registry_sync.publish.tag_policy import AuditLog
from registry_sync.registry.client import RegistryClient
from registry_sync.registry.reference import ImageRef

STRATA_VERSION = "0.1.0"
SBOM_FILE = "sbom.cdx.json"
PROVENANCE_FILE = "provenance.intoto.dsse.json"
SIGNATURE_FILE = "signature.intoto.dsse.json"
SUMMARY_FILE = "evidence.json"
VULNERABILITIES_FILE = "vulnerabilities.json"  # written by `strata audit` (validate/vulns/report.py)
INDEX_FILE = "index.json"
COMPRESSION_ANNOTATION = "io.strata.compression"
# Tag suffix and file of each kind of document (images.lock.json's evidence keys are the kinds).
KINDS = {
    "sbom": ("sbom", SBOM_FILE),
    "provenance": ("att", PROVENANCE_FILE),
    "signature": ("sig", SIGNATURE_FILE),
}

EventCallback = Callable[[str, str], None]


class EvidenceError(StrataError):
    """Evidence cannot be made or found for an image; the message names the image."""


@dataclass(frozen=True)
class Checkout:
    """Where the matrix lives and which commit it is at (recorded in every provenance)."""

    root: Path
    matrix_file: str
    commit: str
    dirty: bool


def checkout_of(matrix_path: Path) -> Checkout:
    """The git commit of the checkout holding `matrix_path` ("" outside git) and whether it has changes."""
    root = matrix_path.resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD") or ""
    dirty = bool(commit) and bool(git("status", "--porcelain", "--untracked-files=no"))
    return Checkout(root, matrix_path.name, commit, dirty)


def evidence_dir(out: Path, reference: str) -> Path:
    """`<out>/<repository>/<tag>`: where the documents of one version tag are written."""
    ref = ImageRef.require(reference, "images.lock.json")
    return out / ref.repository / (ref.tag or "untagged")


# ---------------------------------------------------------------------------------------------- sign


@dataclass(frozen=True)
class ImageEvidence:
    """The three documents of one image, and where they went."""

    entry: LockedImage
    sbom: bytes
    provenance: bytes
    signature: bytes
    keyid: str
    artifacts: Mapping[str, str] = field(default_factory=dict)  # kind -> artifact manifest digest

    @property
    def digests(self) -> dict[str, str]:
        return {
            "sbom": f"sha256:{sha256_hex(self.sbom)}",
            "provenance": f"sha256:{sha256_hex(self.provenance)}",
            "signature": f"sha256:{sha256_hex(self.signature)}",
        }

    def summary(self, registry_repository: str) -> dict[str, Any]:
        """evidence.json: what a catalog shows for this image."""
        sbom = json.loads(self.sbom)
        components = sbom.get("components") or []
        kinds = {c.get("purl", "").split(":", 1)[-1].split("/", 1)[0] for c in components}
        digest = self.entry.digest
        return {
            "reference": self.entry.reference,
            "digest": digest,
            "node": self.entry.node,
            "keyid": self.keyid,
            "signature": {"file": SIGNATURE_FILE, "digest": self.digests["signature"], "status": "signed"},
            "provenance": {"file": PROVENANCE_FILE, "digest": self.digests["provenance"]},
            "sbom": {
                "file": SBOM_FILE,
                "digest": self.digests["sbom"],
                "format": f"CycloneDX {SPEC_VERSION}",
                "components": len(components),
                "by_type": {
                    k: sum(1 for c in components if c.get("purl", "").startswith(f"pkg:{k}/"))
                    for k in sorted(kinds)
                    if k
                },
            },
            "registry": {
                kind: f"{registry_repository}:{tag_suffix(digest, suffix)}@{self.artifacts[kind]}"
                for kind, (suffix, _) in KINDS.items()
                if kind in self.artifacts
            },
        }


def tag_suffix(digest: str, suffix: str) -> str:
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}-{value}.{suffix}"


def _sha256_file(path: Path) -> str:
    try:
        return sha256_hex(path.read_bytes())
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read ({exc.strerror})") from None


def provenance_facts(
    entry: LockedImage,
    chain: Sequence[LayerNode],
    lock: ImagesLock,
    checkout: Checkout,
    manifest_annotations: Mapping[str, str],
    epoch: int,
) -> ProvenanceFacts:
    """What the provenance of `entry` states: its locks by sha256, its root filesystem or base image, its parent."""
    inputs: list[ResolvedInput] = []
    for node in chain:
        if node.lock_path:
            inputs.append(
                ResolvedInput(
                    node.lock_path,
                    {"sha256": _sha256_file(checkout.root / node.lock_path)},
                    uri=node.lock_path,
                    annotations={"node": node.id},
                )
            )
        if node.lock is not None and node.lock.rootfs is not None:
            inputs.append(
                ResolvedInput(
                    f"rootfs:{node.id}",
                    {"sha256": node.lock.rootfs.sha256},
                    annotations={"size": str(node.lock.rootfs.size), "node": node.id},
                )
            )
        base = ImageRef.parse(node.base_image or "")
        if base is not None and base.digest:
            inputs.append(ResolvedInput(base.name, {"sha256": base.digest.split(":", 1)[1]}, uri=str(base)))
    parent = next((e for e in lock.entries() if e.node == entry.parent and e.profile == entry.profile), None)
    if parent is not None:
        inputs.append(
            ResolvedInput(
                parent.ref.name,
                {"sha256": parent.digest.split(":", 1)[1]},
                uri=parent.pinned,
                annotations={"node": parent.node},
            )
        )
    policy = {
        "planFormat": PLAN_FORMAT,
        "sourceDateEpoch": epoch,
        "compression": manifest_annotations.get(COMPRESSION_ANNOTATION, ""),
    }
    return ProvenanceFacts(
        repository=entry.ref.name,
        reference=entry.reference,
        manifest_digest=entry.digest,
        config_digest=entry.config_digest,
        node=entry.node,
        layer=entry.layer,
        cells=entry.cells,
        profile=entry.profile,
        content_hash=entry.content_hash,
        matrix_file=checkout.matrix_file,
        matrix_commit=checkout.commit,
        matrix_dirty=checkout.dirty,
        inputs=tuple(inputs),
        builder_version=STRATA_VERSION,
        canonical_policy=policy,
    )


def build_evidence(
    entry: LockedImage,
    chain: Sequence[LayerNode],
    lock: ImagesLock,
    checkout: Checkout,
    signer: CryptoSigner,
    epoch: int,
    manifest_annotations: Mapping[str, str],
) -> ImageEvidence:
    """The SBOM, the signed provenance and the signed evidence statement of one image (no registry, no network)."""
    sbom = sbom_bytes(entry, chain, epoch)
    facts = provenance_facts(entry, chain, lock, checkout, manifest_annotations, epoch)
    provenance = sign_statement(provenance_statement(facts), signer)
    statement = image_evidence_statement(
        entry.ref.name,
        entry.reference,
        entry.digest,
        entry.config_digest,
        entry.content_hash,
        sbom,
        provenance,
    )
    return ImageEvidence(entry, sbom, provenance, sign_statement(statement, signer), signer.public_key.keyid)


def documents_of(evidence: ImageEvidence) -> list[Document]:
    """The three documents as registry artifacts (kind = tag suffix)."""
    return [
        Document("sbom", SBOM_MEDIA_TYPE, SBOM_FILE, evidence.sbom),
        Document(
            "att",
            ENVELOPE_MEDIA_TYPE,
            PROVENANCE_FILE,
            evidence.provenance,
            {PREDICATE_ANNOTATION: SLSA_PROVENANCE},
        ),
        Document(
            "sig",
            ENVELOPE_MEDIA_TYPE,
            SIGNATURE_FILE,
            evidence.signature,
            {PREDICATE_ANNOTATION: IMAGE_EVIDENCE},
        ),
    ]


def sign_image(
    entry: LockedImage,
    chain: Sequence[LayerNode],
    lock: ImagesLock,
    checkout: Checkout,
    client: RegistryClient,
    signer: CryptoSigner,
    epoch: int,
) -> ImageEvidence:
    """Build, sign and push the evidence of one image (see the module docstring); nothing is written locally."""
    repository = entry.ref.repository
    manifest = client.get_manifest(repository, entry.digest)
    if manifest is None:
        raise EvidenceError(f"{entry.pinned}: not in registry {client.host}; run `strata push` first")
    try:
        annotations = json.loads(manifest.body).get("annotations") or {}
    except ValueError:
        annotations = {}
    evidence = build_evidence(entry, chain, lock, checkout, signer, epoch, annotations)
    subject = Subject(manifest.media_type, manifest.digest, len(manifest.body))
    pushed = push_documents(client, repository, subject, documents_of(evidence), epoch)
    return replace(evidence, artifacts={kind: pushed[suffix] for kind, (suffix, _) in KINDS.items()})


def write_evidence(out: Path, evidence: ImageEvidence) -> Path:
    """Write the documents and evidence.json of one image under `out`; returns its directory."""
    target = evidence_dir(out, evidence.entry.reference)
    summary = evidence.summary(evidence.entry.ref.name)
    files = {
        SBOM_FILE: evidence.sbom,
        PROVENANCE_FILE: evidence.provenance,
        SIGNATURE_FILE: evidence.signature,
        SUMMARY_FILE: (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode(),
    }
    for name, data in files.items():
        write_file(target / name, data)
    return target


def write_index(out: Path, lock: ImagesLock) -> Path:
    """`<out>/index.json`: every reference of the lock, its digest, evidence digests and evidence directory."""
    index = {
        "images": {
            e.reference: {
                "digest": e.digest,
                "node": e.node,
                "dir": str(evidence_dir(Path("."), e.reference)),
                "evidence": dict(e.evidence),
            }
            for e in lock.entries()
        }
    }
    path = out / INDEX_FILE
    write_file(path, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    return path


def update_lock_artifact(
    client: RegistryClient,
    namespace: str,
    lock_bytes: bytes,
    lock_signature: bytes,
    plan_digest: str,
    audit: AuditLog,
    epoch: int,
) -> str | None:
    """When `strata push` stored the lock as `<namespace>/images-lock:<plan digest>`, store the signed lock there
    instead (the tag moves, audited) with its signature next to it (`sha256-<hex>.sig`); returns the new reference,
    or None when the registry holds no lock artifact of this plan (push ran with --no-lock-artifact)."""
    repository = f"{namespace}/{LOCK_REPOSITORY}"
    if client.manifest_digest(repository, plan_digest) is None:
        return None
    digest = push_lock_artifact(client, namespace, lock_bytes, plan_digest, audit)
    manifest = client.get_manifest(repository, digest)
    if manifest is None:
        raise EvidenceError(f"registry {client.host} lost {repository}@{digest} while signing")
    subject = Subject(manifest.media_type or OCI_MANIFEST, digest, len(manifest.body))
    document = Document(
        "sig",
        ENVELOPE_MEDIA_TYPE,
        "images.lock.json" + LOCK_SIGNATURE_SUFFIX,
        lock_signature,
        {PREDICATE_ANNOTATION: IMAGES_LOCK},
    )
    push_documents(client, repository, subject, [document], epoch)
    channel = publish_channel(client, namespace, digest, audit)  # r<N> and latest name the signed lock too
    return f"{client.host}/{repository}:{','.join((plan_digest, *channel.tags))}@{digest}"


# ---------------------------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class ImageVerification:
    """A verified image: its pinned digest, the key that signed, the documents checked and what they say."""

    reference: str
    digest: str
    digest_from: str  # "reference", "images.lock.json" or "registry tag"
    keyid: str
    sbom_digest: str
    sbom_components: int
    provenance_digest: str
    matrix_commit: str
    source: str  # where the documents came from

    def lines(self) -> list[str]:
        commit = self.matrix_commit[:12] or "not recorded"
        return [
            f"{self.reference}@{self.digest}: signature valid (key {self.keyid[:16]}; digest from {self.digest_from})",
            f"  sbom {self.sbom_digest}: {self.sbom_components} components, the one the signature names",
            f"  provenance {self.provenance_digest}: signed, subject {self.digest[:19]}…, matrix commit {commit}",
            f"  documents from {self.source}",
        ]


DocumentSource = Callable[[str, str], bytes | None]  # (manifest digest, kind) -> bytes or None


def registry_documents(client: RegistryClient, repository: str) -> DocumentSource:
    """Documents from the registry's `sha256-<hex>.<kind>` tags."""
    return lambda digest, kind: fetch_document(client, repository, digest, KINDS[kind][0])


def directory_documents(directory: Path) -> DocumentSource:
    """Documents from an evidence directory of one image (sbom.cdx.json, ...; offline)."""

    def read(digest: str, kind: str) -> bytes | None:
        path = directory / KINDS[kind][1]
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise EvidenceError(f"{path}: cannot read ({exc.strerror})") from None

    return read


def verify_image(
    reference: str,
    digest: str,
    keys: Sequence[SSlibKey],
    documents: DocumentSource,
    *,
    digest_from: str,
    source: str,
    recorded: Mapping[str, str] | None = None,
) -> ImageVerification:
    """Check the signature of image `reference@digest`, then that the SBOM and provenance are the ones it names
    (and, with `recorded`, the digests images.lock.json holds). Every failure is a one-line SignatureInvalid."""
    what = f"{reference}@{digest}"
    signature = documents(digest, "signature")
    if signature is None:
        raise SignatureInvalid(f"{what}: no signature in {source}; run `strata sign`")
    verified = verify_statement(
        signature, keys, subject_digest=digest, predicate_type=IMAGE_EVIDENCE, what=what
    )
    named = verified.predicate
    fetched: dict[str, bytes] = {"signature": signature}
    for kind in ("sbom", "provenance"):
        data = documents(digest, kind)
        if data is None:
            raise SignatureInvalid(f"{what}: no {kind} in {source}")
        want = (named.get(kind) or {}).get("digest")
        got = f"sha256:{sha256_hex(data)}"
        if got != want:
            raise SignatureInvalid(
                f"{what}: the {kind} ({got[:23]}…) is not the one the signature names ({str(want)[:23]}…)"
            )
        fetched[kind] = data
    provenance = verify_statement(
        fetched["provenance"],
        keys,
        subject_digest=digest,
        predicate_type=SLSA_PROVENANCE,
        what=f"{what} provenance",
    )
    for kind, expected in (recorded or {}).items():
        held = f"sha256:{sha256_hex(fetched[kind])}" if kind in fetched else expected
        if held != expected:
            raise SignatureInvalid(
                f"{what}: the {kind} from {source} ({held[:23]}…) is not the one images.lock.json records "
                f"({expected[:23]}…)"
            )
    try:
        components = len(json.loads(fetched["sbom"]).get("components") or [])
    except (ValueError, AttributeError):
        raise SignatureInvalid(f"{what}: the signed SBOM is not JSON") from None
    deps = provenance.predicate.get("buildDefinition", {}).get("resolvedDependencies") or []
    commit = next((d.get("digest", {}).get("gitCommit", "") for d in deps if d.get("name") == "matrix"), "")
    return ImageVerification(
        reference,
        digest,
        digest_from,
        verified.keyid,
        f"sha256:{sha256_hex(fetched['sbom'])}",
        components,
        f"sha256:{sha256_hex(fetched['provenance'])}",
        commit,
        source,
    )

"""The lock channel: images.lock.json in the registry under stable tags, for users who know only the registry.

    <namespace>/images-lock:r<N>           the lock of release N (matrix.yaml's `release:`, recorded in the lock);
                                           moves only when release N is published again (a cell added, signed)
    <namespace>/images-lock:latest         the lock of the newest release: it never moves back to an older one
    <namespace>/images-lock:<plan digest>  the lock of one exact plan (push_plan.py)

All of them name the same OCI artifact manifest `strata push` stores (media type
`application/vnd.strata.images-lock.v1+json`, one layer holding the file's exact bytes; `skopeo inspect` and `oras`
read it), so the DSSE signature `strata sign` stores next to that manifest (`sha256-<hex>.sig`, referrers.py) is
found from any of the tags. Every move of a tag is audited.

`pull_lock` reads a lock back: the manifest must be a lock artifact with one layer, the blob's sha256 must be the
layer's digest (the client checks it while streaming), the bytes must be a valid images lock (images_lock.py's
strict schema) of the release the tag names. `verify_pulled` checks the signature with a public key, offline.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import SSlibKey

from builder.errors import StrataError
from builder.oci.digest import sha256_digest
from builder.oci.media_types import LOCK_ARTIFACT_MEDIA_TYPE, LOCK_CONFIG_MEDIA_TYPE
from registry_sync.publish.attest import (
    IMAGES_LOCK,
    SignatureInvalid,
    VerifiedStatement,
    lock_signature_path,
    verify_statement,
    write_file,
)
from registry_sync.publish.images_lock import DEFAULT_LOCK_NAME, MAX_LOCK_BYTES, ImagesLock, parse_images_lock
from registry_sync.publish.push_plan import LOCK_REPOSITORY
from registry_sync.publish.referrers import fetch_document
from registry_sync.publish.tag_policy import AuditLog
from registry_sync.registry.client import Manifest, RegistryClient

LATEST = "latest"
RELEASE_TAG = re.compile(r"r(0|[1-9][0-9]{0,8})")


class LockChannelError(StrataError):
    """The lock channel in the registry is missing or holds something that is not an images lock."""


def release_tag(release: int) -> str:
    """`r3` for release 3."""
    return f"r{release}"


def lock_repository(namespace: str) -> str:
    return f"{namespace}/{LOCK_REPOSITORY}"


@dataclass(frozen=True)
class ChannelUpdate:
    """What publishing a lock did to the channel: its release, the tags now naming it, and where latest stayed."""

    manifest_digest: str
    release: int | None
    tags: tuple[str, ...]  # channel tags that name the manifest now
    latest_release: int | None  # the release `latest` names (newer than this one when it did not move)

    def describe(self, host: str, namespace: str) -> str:
        if self.release is None:
            return "the lock records no release (written before the lock channel); no channel tag set"
        where = f"{host}/{lock_repository(namespace)}"
        line = f"lock channel: {where}:{','.join(self.tags)}@{self.manifest_digest}"
        if LATEST not in self.tags:
            line += f" ({LATEST} stays at release {self.latest_release}, newer than {self.release})"
        return line


@dataclass(frozen=True)
class PulledLock:
    """A lock read from the channel: where from, its manifest digest, its exact bytes, parsed, and its signature."""

    reference: str  # host/namespace/images-lock:tag
    manifest_digest: str
    data: bytes
    lock: ImagesLock
    signature: bytes | None

    @property
    def pinned(self) -> str:
        return f"{self.reference}@{self.manifest_digest}"


def _lock_layer(manifest: Manifest, where: str) -> dict[str, Any]:
    """The one layer of a lock artifact manifest; LockChannelError when the manifest is anything else."""
    try:
        doc = json.loads(manifest.body)
        config = doc["config"]
        layers = doc["layers"]
    except (ValueError, KeyError, TypeError):
        raise LockChannelError(f"{where}: not an OCI image manifest") from None
    if not isinstance(config, dict) or config.get("mediaType") != LOCK_CONFIG_MEDIA_TYPE:
        raise LockChannelError(
            f"{where}: not an images lock artifact (config media type is not {LOCK_CONFIG_MEDIA_TYPE})"
        )
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        raise LockChannelError(f"{where}: an images lock artifact has exactly one layer")
    layer = layers[0]
    digest, size = layer.get("digest"), layer.get("size")
    if layer.get("mediaType") != LOCK_ARTIFACT_MEDIA_TYPE:
        raise LockChannelError(f"{where}: its layer is not of media type {LOCK_ARTIFACT_MEDIA_TYPE}")
    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise LockChannelError(f"{where}: its layer has no sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_LOCK_BYTES:
        raise LockChannelError(f"{where}: its layer size {size!r} is not that of an images lock")
    return layer


def _read_lock_blob(client: RegistryClient, repository: str, layer: dict[str, Any], where: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="strata-lock-pull-") as scratch:
        target = Path(scratch) / DEFAULT_LOCK_NAME
        size = client.download_blob(repository, str(layer["digest"]), target)  # checks the sha256
        if size != layer["size"]:
            raise LockChannelError(f"{where}: the lock is {size} bytes, the manifest says {layer['size']}")
        data = target.read_bytes()
    if sha256_digest(data) != layer["digest"]:  # the client checked it; a lock a user pins is checked twice
        raise LockChannelError(f"{where}: the lock's bytes do not hash to {layer['digest']}")
    return data


def _decode(data: bytes, where: str) -> ImagesLock:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LockChannelError(
            f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    return parse_images_lock(text, where)


def read_channel_lock(
    client: RegistryClient, namespace: str, tag: str
) -> tuple[Manifest, bytes, ImagesLock] | None:
    """The manifest, bytes and parsed lock under `<namespace>/images-lock:<tag>`, or None when the tag is absent."""
    repository = lock_repository(namespace)
    where = f"{client.host}/{repository}:{tag}"
    manifest = client.get_manifest(repository, tag)
    if manifest is None:
        return None
    layer = _lock_layer(manifest, where)
    data = _read_lock_blob(client, repository, layer, where)
    return manifest, data, _decode(data, where)


def published_releases(client: RegistryClient, namespace: str) -> list[int]:
    """The releases the channel holds (`r<N>` tags), oldest first."""
    tags = client.list_tags(lock_repository(namespace))
    return sorted(int(m.group(1)) for t in tags if (m := RELEASE_TAG.fullmatch(t)))


def publish_channel(
    client: RegistryClient, namespace: str, manifest_digest: str, audit: AuditLog
) -> ChannelUpdate:
    """Point `r<N>` (N: the release the lock records) and, unless it names a newer release, `latest` at the lock
    artifact `manifest_digest` (already in `<namespace>/images-lock`, pushed by push_plan.push_lock_artifact)."""
    repository = lock_repository(namespace)
    where = f"{client.host}/{repository}@{manifest_digest}"
    manifest = client.get_manifest(repository, manifest_digest)
    if manifest is None:
        raise LockChannelError(f"{where}: not in the registry; push the lock artifact first")
    lock = _decode(_read_lock_blob(client, repository, _lock_layer(manifest, where), where), where)
    if lock.release is None:
        return ChannelUpdate(manifest.digest, None, (), None)
    tags = [release_tag(lock.release)]
    current = read_channel_lock(client, namespace, LATEST)
    latest_release = current[2].release if current is not None else None
    if latest_release is None or latest_release <= lock.release:
        tags.append(LATEST)
        latest_release = lock.release
    for tag in tags:
        old = client.manifest_digest(repository, tag)
        if old != manifest.digest:
            client.put_manifest(repository, tag, manifest.body, manifest.media_type)
            if old is not None:
                audit.append("lock-channel", client.host, repository, tag, old, manifest.digest)
    return ChannelUpdate(manifest.digest, lock.release, tuple(tags), latest_release)


def pull_lock(client: RegistryClient, namespace: str, release: int | None = None) -> PulledLock:
    """The lock of `release` (`r<N>`), or the newest (`latest`), checked as the module docstring says."""
    tag = LATEST if release is None else release_tag(release)
    repository = lock_repository(namespace)
    where = f"{client.host}/{repository}:{tag}"
    found = read_channel_lock(client, namespace, tag)
    if found is None:
        have = ", ".join(release_tag(r) for r in published_releases(client, namespace)) or "none"
        raise LockChannelError(
            f"{where}: no images lock published under this tag (releases published: {have})"
        )
    manifest, data, lock = found
    if release is not None and lock.release != release:
        raise LockChannelError(
            f"{where}: the lock under this tag is of release {lock.release}, not {release}"
        )
    signature = fetch_document(client, repository, manifest.digest, "sig")
    return PulledLock(where, manifest.digest, data, lock, signature)


def verify_pulled(pulled: PulledLock, keys: Sequence[SSlibKey]) -> VerifiedStatement:
    """Check the signature `strata sign` stored next to the pulled lock against its exact bytes (offline)."""
    if pulled.signature is None:
        raise SignatureInvalid(
            f"{pulled.pinned}: not signed (no sha256-<hex>.sig next to it in the registry; run `strata sign`)"
        )
    return verify_statement(
        pulled.signature,
        keys,
        subject_digest=sha256_digest(pulled.data),
        predicate_type=IMAGES_LOCK,
        what=pulled.pinned,
    )


def write_pulled(out: Path, pulled: PulledLock) -> list[Path]:
    """Write the lock's exact bytes to `out` and its signature to `<out>.sig` (each atomically); a stale
    `<out>.sig` of another lock is removed when the pulled lock has none. Returns the files written."""
    written = [out]
    write_file(out, pulled.data)
    signature = lock_signature_path(out)
    if pulled.signature is not None:
        write_file(signature, pulled.signature)
        written.append(signature)
    else:
        signature.unlink(missing_ok=True)
    return written

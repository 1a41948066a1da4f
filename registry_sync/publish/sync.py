"""`strata sync`: copy images between registries by tag or digest, keeping their digests.

Manifests (and manifest lists / OCI indexes with every child) are copied byte for byte, so `SRC@sha256:X` is
`DST@sha256:X`. Blobs go only when missing: HEAD at the destination first, then a cross-repository mount when the
destination may already hold the blob in another repository, and only then a download from the source streamed
through a temporary file. This is how pinned upstream bases reach the private registry:

    strata sync docker.io/nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04@sha256:85fb... 127.0.0.1:5000/mirror/nvidia/cuda

Tags at the destination follow the tag policy: an existing tag that names another digest is refused (both digests
named) unless `force`, and then the move is audited.
"""

from __future__ import annotations

import fnmatch
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import StrataError
from builder.oci.media_types import FOREIGN_LAYER_MEDIA_TYPES, INDEX_MEDIA_TYPES
from registry_sync.publish.tag_policy import AuditLog, TagAction, TagPolicy, plan_tags
from registry_sync.registry.client import Manifest, RegistryClient, RegistryError
from registry_sync.registry.reference import ImageRef

# Docker Hub's names for itself, and where its registry API really answers.
DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
DOCKER_HUB_API = "registry-1.docker.io"
# Mirrors keep every tag as it is at the source: none floats, a tag naming another digest needs --force.
ALL_IMMUTABLE = TagPolicy(alias_patterns=())


class SyncError(StrataError):
    """A copy between registries cannot be done as asked (bad endpoint, missing source, refused tag)."""


@dataclass(frozen=True)
class Endpoint:
    """One side of a sync: the registry's API host, the repository and an optional tag and digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        text += f":{self.tag}" if self.tag else ""
        return text + (f"@{self.digest}" if self.digest else "")


def parse_endpoint(text: str, what: str) -> Endpoint:
    """Parse `host:port/repository[:tag][@digest]`; Docker Hub names (`docker.io/ubuntu`) go to its API host.

    Example: parse_endpoint("docker.io/ubuntu:22.04", "SRC") -> Endpoint("registry-1.docker.io", "library/ubuntu", "22.04").
    """
    ref = ImageRef.parse(text)
    if ref is None or ref.registry is None:
        raise SyncError(
            f"{what} {text!r} must be host:port/repository[:tag|@digest], e.g. 127.0.0.1:5000/strata/base"
        )
    registry, repository = ref.registry, ref.repository
    if registry in DOCKER_HUB_NAMES:
        registry = DOCKER_HUB_API
        if "/" not in repository:
            repository = f"library/{repository}"
    return Endpoint(registry, repository, ref.tag, ref.digest)


@dataclass
class CopyResult:
    """What one image copy did."""

    source: str
    destination: str  # registry/repository@digest
    manifest_digest: str
    tags: tuple[str, ...]
    manifests_copied: int = 0
    blobs_copied: list[str] = field(default_factory=list)
    blobs_mounted: list[str] = field(default_factory=list)
    blobs_present: list[str] = field(default_factory=list)
    bytes_copied: int = 0
    tags_changed: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """`copied` when any manifest or blob moved, `tagged` when only tags changed, else `unchanged`."""
        if self.manifests_copied or self.blobs_copied or self.blobs_mounted:
            return "copied"
        return "tagged" if self.tags_changed else "unchanged"

    def describe(self) -> str:
        return (
            f"{self.status} {self.source} -> {self.destination}"
            f" ({len(self.blobs_copied)} blobs copied, {self.bytes_copied / 1e6:.1f} MB;"
            f" {len(self.blobs_mounted)} mounted; {len(self.blobs_present)} already there)"
            + (f"; tags: {', '.join(self.tags_changed)}" if self.tags_changed else "")
        )


@dataclass
class _Copier:
    src: RegistryClient
    src_repo: str
    dst: RegistryClient
    dst_repo: str
    mount_from: tuple[str, ...]
    work: Path
    result: CopyResult
    on_event: Callable[[str], None]

    def copy_manifest(self, manifest: Manifest) -> None:
        """Copy `manifest` and everything it references, children first; nothing when the destination has it."""
        if self.dst.manifest_digest(self.dst_repo, manifest.digest) is not None:
            return  # a registry stores a manifest only once everything it references is present
        body = _json(manifest)
        if manifest.media_type in INDEX_MEDIA_TYPES or "manifests" in body:
            for child in body.get("manifests") or []:
                child_manifest = self.src.get_manifest(self.src_repo, str(child["digest"]))
                if child_manifest is None:
                    raise SyncError(
                        f"{self.src.host}/{self.src_repo}: index {manifest.digest} names "
                        f"{child['digest']}, which the source does not have"
                    )
                self.copy_manifest(child_manifest)
        else:
            blobs = [body["config"], *(body.get("layers") or [])]
            for blob in blobs:
                if blob.get("mediaType") in FOREIGN_LAYER_MEDIA_TYPES:
                    continue  # non-distributable: pulled from its URLs, never stored by registries
                self.copy_blob(str(blob["digest"]), int(blob.get("size") or 0))
        self.dst.put_manifest(self.dst_repo, manifest.digest, manifest.body, manifest.media_type)
        self.result.manifests_copied += 1

    def copy_blob(self, digest: str, size: int) -> None:
        if self.dst.blob_size(self.dst_repo, digest) is not None:
            self.result.blobs_present.append(digest)
            return
        candidates = list(self.mount_from)
        if self.src.host == self.dst.host and self.src_repo not in candidates:
            candidates.insert(0, self.src_repo)
        session = None
        for source in candidates:
            if source == self.dst_repo:
                continue
            session = self.dst.mount_blob(self.dst_repo, digest, source)
            if session is None:
                self.result.blobs_mounted.append(digest)
                return
        self.on_event(f"copying {digest[:19]} ({size / 1e6:.1f} MB)")
        with tempfile.NamedTemporaryFile(dir=self.work, prefix="blob-") as scratch:
            path = Path(scratch.name)
            self.src.download_blob(self.src_repo, digest, path)
            sent = self.dst.upload_file(self.dst_repo, digest, path, session=session)
        self.result.blobs_copied.append(digest)
        self.result.bytes_copied += sent


def _json(manifest: Manifest) -> dict[str, Any]:
    try:
        body = json.loads(manifest.body)
    except ValueError:
        raise SyncError(f"manifest {manifest.digest} is not JSON") from None
    if not isinstance(body, dict):
        raise SyncError(f"manifest {manifest.digest} is not a JSON object")
    return body


def copy_image(
    src: RegistryClient,
    src_repo: str,
    reference: str,
    dst: RegistryClient,
    dst_repo: str,
    tags: Sequence[str],
    *,
    policy: TagPolicy = ALL_IMMUTABLE,
    force: bool = False,
    audit: AuditLog | None = None,
    mount_from: Sequence[str] = (),
    work_dir: Path | None = None,
    on_event: Callable[[str], None] = lambda message: None,
) -> CopyResult:
    """Copy `src_repo:reference` (a tag or digest) to `dst_repo`, tagging it with `tags`; digests are kept.

    Tags are decided before anything is copied (an immutable tag naming another digest raises TagPolicyError).
    Example: copy_image(a, "strata/base", "bookworm-1700000000", b, "strata/base", ["bookworm-1700000000"]).
    """
    if force and audit is None:
        raise SyncError("a forced sync needs an audit log to record the moved tags")
    manifest = src.get_manifest(src_repo, reference)
    if manifest is None:
        raise SyncError(f"{src.host}/{src_repo}:{reference} does not exist")
    decisions = plan_tags(dst, dst_repo, list(tags), manifest.digest, policy, force=force)
    sep = "@" if reference.startswith("sha256:") else ":"
    result = CopyResult(
        source=f"{src.host}/{src_repo}{sep}{reference}",
        destination=f"{dst.host}/{dst_repo}@{manifest.digest}",
        manifest_digest=manifest.digest,
        tags=tuple(tags),
    )
    with tempfile.TemporaryDirectory(prefix="strata-sync-", dir=work_dir) as work:
        copier = _Copier(src, src_repo, dst, dst_repo, tuple(mount_from), Path(work), result, on_event)
        copier.copy_manifest(manifest)
    if dst.manifest_digest(dst_repo, manifest.digest) != manifest.digest:
        raise RegistryError(f"registry {dst.host} does not show {dst_repo}@{manifest.digest} after the copy")
    for decision in decisions:
        if decision.action is TagAction.UNCHANGED:
            continue
        dst.put_manifest(dst_repo, decision.tag, manifest.body, manifest.media_type)
        result.tags_changed.append(decision.tag)
        if decision.action is TagAction.FORCED_MOVE and audit is not None:
            audit.append("force-sync", dst.host, dst_repo, decision.tag, decision.old, manifest.digest)
    return result


@dataclass(frozen=True)
class SyncItem:
    """One image to copy: the source reference (tag or digest) and the destination tags."""

    reference: str
    tags: tuple[str, ...]


def plan_sync(
    src: Endpoint, dst: Endpoint, only: Sequence[str] | None, source_tags: Callable[[], list[str]]
) -> list[SyncItem]:
    """What to copy for SRC, DST and --only globs (pure apart from `source_tags`, called only for globs).

    `repo:tag` copies that tag (DST may rename it: `dst/repo:other`); `repo@digest` copies by digest (tagged at DST
    only when DST names a tag); `repo:tag@digest` copies the digest and tags it `tag`; `repo` with --only copies
    every source tag matching a glob under the same tag.
    """
    if dst.digest:
        raise SyncError(
            f"DST {dst} names a digest; the copy keeps the source's digest, so give only a repository or tag"
        )
    if src.tag or src.digest:
        if only:
            raise SyncError("--only selects tags of a repository; SRC already names one image")
        reference = src.digest or src.tag
        assert reference is not None
        tag = dst.tag or src.tag
        return [SyncItem(reference, (tag,) if tag else ())]
    if not only:
        raise SyncError(
            f"SRC {src} names no tag or digest: give one, or select tags with --only GLOB (e.g. --only '*')"
        )
    if dst.tag:
        raise SyncError(
            f"DST {dst} names a tag, but --only may select several; give DST as host:port/repository"
        )
    tags = sorted(t for t in source_tags() if any(fnmatch.fnmatchcase(t, pattern) for pattern in only))
    if not tags:
        raise SyncError(f"no tag of {src} matches {', '.join(only)}")
    return [SyncItem(t, (t,)) for t in tags]

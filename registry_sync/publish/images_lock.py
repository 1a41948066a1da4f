"""`images.lock.json`: what every published version tag is, by digest, for users to pin and read.

One entry per version tag (key: `host:port/repository:tag`), with the manifest and config digests, the node and
cell(s) it belongs to, its versions (TensorFlow, CUDA, cuDNN, Python, OS), its sizes and its content hash. The file is
rendered with sorted keys and no timestamps, so writing the same entries twice gives the same bytes:

    {
      "images": {
        "127.0.0.1:5000/strata/tensorflow:2.13.1-cpu-py3.11-bookworm": {
          "cells": ["tf2.13.1-cpu"], "config_digest": "sha256:...", "content_hash": "676a...",
          "digest": "sha256:...", "layer": "tools", "node": "tools-tf2.13.1-cpu", "parent": "tf2.13.1-cpu-py3.11",
          "profile": "hermetic", "size": {"compressed": 612345678, "uncompressed": 1812345678},
          "versions": {"cuda": null, "cudnn": null, "flavor": "cpu", "os": "bookworm", "python": "3.11",
                       "tensorflow": "2.13.1"}
        }
      },
      "schema": 1
    }

An entry `strata sign` has covered also has `"evidence": {"provenance": "sha256:...", "sbom": "sha256:...",
"signature": "sha256:..."}`: the sha256 of each document stored next to the image in the registry (see
registry_sync/publish/evidence.py). The key is optional, so locks written before it still read.

Also here: `ImageRef`, the parsed form of an image reference (`registry/repository[:tag][@digest]`), which
pin, sync, publish and the cache share.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from builder.errors import StrataError
from registry_sync.registry.reference import ImageRef

LOCK_SCHEMA = 1
DEFAULT_LOCK_NAME = "images.lock.json"
EVIDENCE_KINDS = ("sbom", "provenance", "signature")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


class LockFileError(StrataError):
    """images.lock.json is unreadable or not in the format this Strata writes."""


@dataclass(frozen=True)
class LockedImage:
    """One published version tag and everything a user needs to choose and pin it."""

    reference: str  # registry/repository:tag (the version tag)
    digest: str  # manifest digest
    config_digest: str  # the image id engines show
    node: str
    layer: str
    parent: str | None
    cells: tuple[str, ...]
    content_hash: str
    profile: str
    versions: Mapping[str, str | None]  # tensorflow, flavor, python, cuda, cudnn, os
    compressed_size: int
    uncompressed_size: int | None
    evidence: Mapping[str, str] = field(default_factory=dict)  # kind -> sha256 of the document (strata sign)

    @property
    def ref(self) -> ImageRef:
        return ImageRef.require(self.reference, "images.lock.json")

    @property
    def pinned(self) -> str:
        """`registry/repository:tag@sha256:...`, the line to pull or put in a FROM."""
        return f"{self.reference}@{self.digest}"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"evidence": dict(sorted(self.evidence.items()))} if self.evidence else {}
        return doc | {
            "digest": self.digest,
            "config_digest": self.config_digest,
            "node": self.node,
            "layer": self.layer,
            "parent": self.parent,
            "cells": list(self.cells),
            "content_hash": self.content_hash,
            "profile": self.profile,
            "versions": dict(sorted(self.versions.items())),
            "size": {"compressed": self.compressed_size, "uncompressed": self.uncompressed_size},
        }

    @classmethod
    def from_json(cls, reference: str, data: Mapping[str, Any]) -> LockedImage:
        size = data.get("size") or {}
        return cls(
            reference=reference,
            digest=str(data["digest"]),
            config_digest=str(data["config_digest"]),
            node=str(data["node"]),
            layer=str(data["layer"]),
            parent=data.get("parent"),
            cells=tuple(str(c) for c in data.get("cells") or ()),
            content_hash=str(data["content_hash"]),
            profile=str(data.get("profile") or ""),
            versions={
                str(k): (None if v is None else str(v)) for k, v in (data.get("versions") or {}).items()
            },
            compressed_size=int(size.get("compressed") or 0),
            uncompressed_size=None if size.get("uncompressed") is None else int(size["uncompressed"]),
            evidence=_evidence(data.get("evidence")),
        )


def _evidence(value: Any) -> dict[str, str]:
    """The optional `evidence` object: known kinds, each a sha256 digest."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("evidence")
    for kind, digest in value.items():
        if kind not in EVIDENCE_KINDS or not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ValueError(f"evidence.{kind}")
    return {str(k): str(v) for k, v in value.items()}


@dataclass(frozen=True)
class ImagesLock:
    """Every entry of an images.lock.json, keyed by version reference."""

    images: Mapping[str, LockedImage] = field(default_factory=dict)

    def render(self) -> str:
        """Stable JSON text: sorted keys, two-space indent, trailing newline, no timestamps."""
        doc = {
            "schema": LOCK_SCHEMA,
            "images": {ref: self.images[ref].to_json() for ref in sorted(self.images)},
        }
        return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"

    def entries(self) -> list[LockedImage]:
        """Entries sorted by reference."""
        return [self.images[ref] for ref in sorted(self.images)]

    def lookup(self, ref: ImageRef) -> LockedImage | None:
        """The entry for `ref` by its tag (registry/repository:tag), else by its digest within the repository."""
        if ref.tag:
            return self.images.get(ref.tagged)
        if ref.digest:
            for entry in self.entries():
                if entry.digest == ref.digest and entry.ref.name == ref.name:
                    return entry
        return None

    def merged(self, newer: Iterable[LockedImage], keep: set[str] | None = None) -> ImagesLock:
        """This lock with `newer` entries added or replacing theirs; with `keep`, older entries whose
        reference is not in `keep` are dropped (tags no longer in the matrix)."""
        images = {ref: e for ref, e in self.images.items() if keep is None or ref in keep}
        for entry in newer:
            old = images.get(entry.reference)
            if old is not None and old.digest == entry.digest and old.evidence and not entry.evidence:
                entry = replace(entry, evidence=old.evidence)  # the evidence is about the digest: still true
            images[entry.reference] = entry
        return ImagesLock(images)

    def with_evidence(self, evidence: Mapping[str, Mapping[str, str]]) -> ImagesLock:
        """This lock with the evidence digests of some references (reference -> {kind: sha256}) set."""
        images = dict(self.images)
        for reference, digests in evidence.items():
            images[reference] = replace(images[reference], evidence=dict(digests))
        return ImagesLock(images)


def parse_images_lock(text: str, source: str) -> ImagesLock:
    """Parse images.lock.json text; errors name `source`."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise LockFileError(f"{source}: not valid JSON ({exc})") from None
    if (
        not isinstance(doc, dict)
        or doc.get("schema") != LOCK_SCHEMA
        or not isinstance(doc.get("images"), dict)
    ):
        raise LockFileError(
            f"{source}: not an images lock of schema {LOCK_SCHEMA} (written by `strata push`)"
        )
    images: dict[str, LockedImage] = {}
    for reference, data in doc["images"].items():
        try:
            images[reference] = LockedImage.from_json(reference, data)
        except (KeyError, TypeError, ValueError) as exc:
            raise LockFileError(f"{source}: entry {reference}: missing or malformed field {exc}") from None
    return ImagesLock(images)


def read_images_lock(path: Path, *, missing_ok: bool = False) -> ImagesLock:
    """Read `path`; with `missing_ok`, a missing file is an empty lock."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return ImagesLock()
        raise LockFileError(f"{path}: no images lock here; run `strata push` first") from None
    except OSError as exc:
        raise LockFileError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_images_lock(text, str(path))


def write_images_lock(path: Path, lock: ImagesLock) -> bool:
    """Write `lock` to `path` atomically; False (and nothing written) when the file already has these bytes."""
    text = lock.render()
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    except OSError as exc:
        raise LockFileError(f"{path}: cannot read ({exc.strerror})") from None
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LockFileError(f"{path}: cannot write ({exc.strerror})") from None
    return True


def lock_plan_digest(lock: ImagesLock, node_order: list[str]) -> str:
    """The plan digest of the nodes `lock` describes: sha256 over their content hashes in plan order.

    When the lock covers a plan with current hashes this equals `builder.plan.graph.plan_digest(plan)`, so
    `images-lock:<plan digest>` is found from a checkout with `strata plan`. Nodes outside `node_order` come last.
    """
    hashes = {e.node: e.content_hash for e in lock.entries()}
    rank = {node: i for i, node in enumerate(node_order)}
    ordered = sorted(hashes, key=lambda n: (rank.get(n, len(rank)), n))
    return hashlib.sha256("".join(hashes[n] for n in ordered).encode()).hexdigest()

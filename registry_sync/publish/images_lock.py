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

Reading is strict: the whole file is checked against its schema before any entry is used (every key path of a
wrong shape named in one line each; digests are `sha256:` + 64 lower-case hex, references carry a tag and no
digest), within bounds (size, nesting, no duplicate keys, no NaN), because `strata pin` writes these digests
into other people's Dockerfiles.

An entry `strata sign` has covered also has `"evidence": {"provenance": "sha256:...", "sbom": "sha256:...",
"signature": "sha256:..."}`: the sha256 of each document stored next to the image in the registry (see
registry_sync/publish/evidence.py). The key is optional, so locks written before it still read.

Two optional top-level keys (absent from locks written before them, omitted when empty):

    "release": 2                      the matrix's `release:` the version tags were published under (lock_channel.py
                                      stores the lock as `<namespace>/images-lock:r2` and `:latest`)
    "aliases": {"127.0.0.1:5000/strata/tensorflow:2.13-cpu":
                {"digest": "sha256:...", "tag": "127.0.0.1:5000/strata/tensorflow:2.13.1-cpu-py3.11-bookworm-r2"}}
                                      each floating alias as the registry had it when the lock was published: the
                                      version tag (an entry of `images`, same repository) and its digest, so
                                      `strata pin` can pin `...:2.13-cpu` to `...:2.13-cpu@sha256:...`
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from builder.errors import ErrorList, StrataError
from builder.matrix.types import show
from registry_sync.registry.reference import ImageRef

LOCK_SCHEMA = 1
DEFAULT_LOCK_NAME = "images.lock.json"
MAX_LOCK_BYTES = 64 << 20  # ~1 kB per entry: room for tens of thousands of tags
MAX_ERRORS = 20
MAX_RELEASE = 1_000_000
MAX_ALIASES = 10_000
EVIDENCE_KINDS = ("sbom", "provenance", "signature")
_KEY_SHOWN = 200  # a reference is shown whole in a key path (it is the key a reader looks for)


class LockFileError(StrataError):
    """images.lock.json is unreadable or not in the format this Strata writes."""


class LockFileErrors(ErrorList, LockFileError):
    """Several schema errors of one images.lock.json, one line each."""


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


@dataclass(frozen=True)
class LockedAlias:
    """A floating alias as published: `reference` (registry/repository:alias) named `tag`'s digest `digest`."""

    reference: str
    tag: str  # the version reference (a key of the lock's images)
    digest: str

    @property
    def pinned(self) -> str:
        return f"{self.reference}@{self.digest}"

    def to_json(self) -> dict[str, str]:
        return {"digest": self.digest, "tag": self.tag}


@dataclass(frozen=True)
class ImagesLock:
    """Every entry of an images.lock.json, keyed by version reference; the aliases by alias reference."""

    images: Mapping[str, LockedImage] = field(default_factory=dict)
    aliases: Mapping[str, LockedAlias] = field(default_factory=dict)
    release: int | None = None

    def render(self) -> str:
        """Stable JSON text: sorted keys, two-space indent, trailing newline, no timestamps."""
        doc: dict[str, Any] = {
            "schema": LOCK_SCHEMA,
            "images": {ref: self.images[ref].to_json() for ref in sorted(self.images)},
        }
        if self.aliases:
            doc["aliases"] = {ref: self.aliases[ref].to_json() for ref in sorted(self.aliases)}
        if self.release is not None:
            doc["release"] = self.release
        return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"

    def entries(self) -> list[LockedImage]:
        """Entries sorted by reference."""
        return [self.images[ref] for ref in sorted(self.images)]

    def lookup(self, ref: ImageRef) -> LockedImage | None:
        """The entry for `ref` by its tag (registry/repository:tag; an alias of `aliases` gives the entry it named
        when the lock was published), else by its digest within the repository."""
        if ref.tag:
            alias = self.aliases.get(ref.tagged)
            return self.images.get(alias.tag if alias is not None else ref.tagged)
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
        aliases = {
            ref: a for ref, a in self.aliases.items() if a.tag in images and images[a.tag].digest == a.digest
        }
        return ImagesLock(images, aliases, self.release)

    def with_aliases(self, aliases: Iterable[LockedAlias], release: int | None) -> ImagesLock:
        """This lock with exactly these aliases (each must name an entry, by its digest) and this release."""
        found = {a.reference: a for a in aliases}
        for alias in found.values():
            entry = self.images.get(alias.tag)
            if entry is None or entry.digest != alias.digest:
                raise LockFileError(
                    f"alias {alias.reference}: {alias.tag}@{alias.digest} is not an entry of the lock"
                )
        return ImagesLock(self.images, found, release)

    def with_evidence(self, evidence: Mapping[str, Mapping[str, str]]) -> ImagesLock:
        """This lock with the evidence digests of some references (reference -> {kind: sha256}) set."""
        images = dict(self.images)
        for reference, digests in evidence.items():
            images[reference] = replace(images[reference], evidence=dict(digests))
        return ImagesLock(images, self.aliases, self.release)


# ---------------------------------------------------------------------------------------------- schema


def _matching(regex: str, rule: str) -> AfterValidator:
    compiled = re.compile(regex, re.ASCII)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{rule}, got {show(value)}")
        return value

    return AfterValidator(check)


def _reference(value: str) -> str:
    ref = ImageRef.parse(value) if len(value) <= 512 else None
    if ref is None or not ref.tag or ref.digest or str(ref) != value:
        raise ValueError(
            f"must be an image reference with a tag and no digest (host:port/repository:tag), got {show(value)}"
        )
    return value


Digest = Annotated[
    str, _matching(r"sha256:[0-9a-f]{64}", "must be sha256: followed by 64 lower-case hex digits")
]
ContentHash = Annotated[str, _matching(r"[0-9a-f]{64}", "must be 64 lower-case hex digits")]
Ident = Annotated[
    str, _matching(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", "must be a name of letters, digits, . _ -")
]
Word = Annotated[
    str,
    _matching(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", "must be a version or name (letters, digits, . _ + -)"),
]
Reference = Annotated[str, AfterValidator(_reference)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _SizeDoc(_Strict):
    compressed: int = Field(default=0, ge=0)
    uncompressed: int | None = Field(default=None, ge=0)


class _EntryDoc(_Strict):
    digest: Digest
    config_digest: Digest
    node: Ident
    layer: Ident
    parent: Ident | None = None
    cells: list[Ident] = []
    content_hash: ContentHash
    profile: Ident | Literal[""] = ""
    versions: dict[Ident, Word | None] = {}
    size: _SizeDoc = _SizeDoc()
    evidence: dict[Literal["sbom", "provenance", "signature"], Digest] = {}


class _AliasDoc(_Strict):
    digest: Digest
    tag: Reference


class _LockDoc(_Strict):
    schema_: Literal[1] = Field(alias="schema")
    images: dict[Reference, _EntryDoc]
    aliases: dict[Reference, _AliasDoc] = Field(default={}, max_length=MAX_ALIASES)
    release: int | None = Field(default=None, ge=0, le=MAX_RELEASE)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {show(key, _KEY_SHOWN)}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            out += " (key)"
        elif isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{show(str(part), _KEY_SHOWN)}]"
    return out or "<top>"


def _schema_error(source: str, err: Any) -> LockFileError:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "missing":
        return LockFileError(f"{source}: {_key_path(loc)}: missing")
    if kind == "extra_forbidden":
        return LockFileError(f"{source}: {_key_path(loc)}: unknown key")
    msg = err["msg"].removeprefix("Value error, ")
    if kind.endswith("_type") or kind == "literal_error":
        expected = msg.removeprefix("Input should be ").removeprefix("a valid ")
        msg = f"must be {expected}, got {type(err['input']).__name__} {show(err['input'])}"
    return LockFileError(f"{source}: {_key_path(loc)}: {msg}")


def parse_images_lock(text: str, source: str) -> ImagesLock:
    """Parse images.lock.json text against its schema; every error is one line naming `source` and the key path."""
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise LockFileError(f"{source}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN, a 5,000-digit integer
        raise LockFileError(f"{source}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or doc.get("schema") != LOCK_SCHEMA or "images" not in doc:
        raise LockFileError(
            f"{source}: not an images lock of schema {LOCK_SCHEMA} (written by `strata push`)"
        )
    try:
        checked = _LockDoc.model_validate(doc)
    except ValidationError as exc:
        found = exc.errors()
        errors: list[StrataError] = [_schema_error(source, e) for e in found[:MAX_ERRORS]]
        if len(found) > MAX_ERRORS:
            errors.append(LockFileError(f"{source}: ... and {len(found) - MAX_ERRORS} more errors"))
        raise LockFileErrors(errors) from None
    images = {
        reference: LockedImage(
            reference=reference,
            digest=e.digest,
            config_digest=e.config_digest,
            node=e.node,
            layer=e.layer,
            parent=e.parent,
            cells=tuple(e.cells),
            content_hash=e.content_hash,
            profile=e.profile,
            versions=dict(e.versions),
            compressed_size=e.size.compressed,
            uncompressed_size=e.size.uncompressed,
            evidence={str(kind): digest for kind, digest in e.evidence.items()},
        )
        for reference, e in checked.images.items()
    }
    aliases = {ref: LockedAlias(ref, a.tag, a.digest) for ref, a in checked.aliases.items()}
    errors = _alias_errors(source, aliases, images)
    if errors:
        raise LockFileErrors(errors[:MAX_ERRORS])
    return ImagesLock(images, aliases, checked.release)


def _alias_errors(
    source: str, aliases: Mapping[str, LockedAlias], images: Mapping[str, LockedImage]
) -> list[StrataError]:
    """An alias must name an entry of the same repository, by that entry's digest, and not be a version tag."""
    errors: list[StrataError] = []
    for ref, alias in aliases.items():
        where = f"{source}: {_key_path(('aliases', ref))}"
        entry = images.get(alias.tag)
        if ref in images:
            errors.append(LockFileError(f"{where} (key): is a version tag of images, not an alias"))
        elif entry is None:
            errors.append(
                LockFileError(f"{where}.tag: {show(alias.tag, _KEY_SHOWN)} is not an entry of images")
            )
        elif ImageRef.require(ref, source).name != entry.ref.name:
            errors.append(
                LockFileError(
                    f"{where}.tag: {show(alias.tag, _KEY_SHOWN)} is in another repository than the alias"
                )
            )
        elif entry.digest != alias.digest:
            errors.append(
                LockFileError(
                    f"{where}.digest: {alias.digest} is not the digest of {alias.tag} ({entry.digest})"
                )
            )
    return errors


def read_images_lock(path: Path, *, missing_ok: bool = False) -> ImagesLock:
    """Read `path`; with `missing_ok`, a missing file is an empty lock."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # checked before opening: a FIFO would block the open
            raise LockFileError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            raw = f.read(MAX_LOCK_BYTES + 1)
    except FileNotFoundError:
        if missing_ok:
            return ImagesLock()
        raise LockFileError(f"{path}: no images lock here; run `strata push` first") from None
    except OSError as exc:
        raise LockFileError(f"{path}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_LOCK_BYTES:
        raise LockFileError(f"{path}: larger than {MAX_LOCK_BYTES >> 20} MB; not an images lock")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LockFileError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
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

"""OSV advisory files (https://ossf.github.io/osv-schema/): read them and tell which records affect a package version.

A file is a JSON list of records, one record, or a .zip of `*.json` records (osv.dev's `PyPI/all.zip` export).
Matching follows the OSV schema for the PyPI ecosystem: a record affects `name==version` when one of its
`affected` entries names the package (ecosystem `PyPI`, names compared as PEP 503 canonical names) and either lists
the version in `versions` or has an `ECOSYSTEM` range containing it (`introduced` inclusive, `fixed` exclusive,
`last_affected` inclusive, `introduced: "0"` meaning from the first release). Withdrawn records never match.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.errors import StrataError

ECOSYSTEM = "PyPI"
MAX_FILE_BYTES = 1 << 30


class AdvisoryFileError(StrataError):
    """An advisory file cannot be read or is not OSV JSON."""


@dataclass(frozen=True)
class AdvisoryFile:
    """The records of one advisory file, and what identifies it in a report."""

    path: Path
    sha256: str
    records: tuple[Mapping[str, Any], ...]


def read_advisories(path: Path) -> AdvisoryFile:
    """Read an OSV file (JSON list, one record, or a .zip of records)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AdvisoryFileError(f"{path}: cannot read the advisory file ({exc.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise AdvisoryFileError(f"{path}: larger than 1 GB; not an advisory file")
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                records = [
                    json.loads(archive.read(n)) for n in sorted(archive.namelist()) if n.endswith(".json")
                ]
        else:
            doc = json.loads(data)
            records = doc if isinstance(doc, list) else [doc]
    except (ValueError, zipfile.BadZipFile) as exc:
        raise AdvisoryFileError(f"{path}: not OSV JSON ({str(exc).splitlines()[0]})") from None
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict) or "id" not in r), None)
    if bad is not None:
        raise AdvisoryFileError(f"{path}: record {bad} is not an OSV record (no id)")
    return AdvisoryFile(path, hashlib.sha256(data).hexdigest(), tuple(records))


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def in_range(version: Version, events: Sequence[Mapping[str, str]]) -> bool:
    """Whether `version` lies in one OSV ECOSYSTEM range, e.g. [{"introduced": "0"}, {"fixed": "1.2"}] holds 1.1."""
    bounds: list[tuple[Version, int, str]] = []
    for event in events:
        for kind, value in event.items():
            if kind not in ("introduced", "fixed", "last_affected"):
                continue  # "limit" bounds git ranges only
            bound = Version("0") if value == "0" else _version(value)
            if bound is not None:
                # at equal versions: last_affected still holds it, fixed does not, introduced opens it
                bounds.append((bound, {"fixed": 0, "introduced": 1, "last_affected": 2}[kind], kind))
    affected = False
    for bound, _, kind in sorted(bounds):
        if kind == "introduced" and bound <= version:
            affected = True
        elif kind == "fixed" and bound <= version:
            affected = False
        elif kind == "last_affected" and bound < version:
            affected = False
    return affected


@dataclass(frozen=True)
class Match:
    """One advisory that affects a package version."""

    id: str
    aliases: tuple[str, ...]
    summary: str
    fixed: tuple[str, ...]
    published: str | None


def matches(records: Sequence[Mapping[str, Any]], name: str, version: str) -> Iterator[Match]:
    """Every non-withdrawn PyPI record affecting `name==version`."""
    wanted, parsed = canonicalize_name(name), _version(version)
    for record in records:
        if record.get("withdrawn"):
            continue
        for affected in record.get("affected") or []:
            package = affected.get("package") or {}
            if package.get("ecosystem") != ECOSYSTEM or canonicalize_name(package.get("name", "")) != wanted:
                continue
            ranges = [r for r in affected.get("ranges") or [] if r.get("type") == "ECOSYSTEM"]
            listed = affected.get("versions") or []
            hit = version in listed
            if not hit and parsed is not None:
                hit = parsed in {v for v in map(_version, listed) if v is not None} or any(
                    in_range(parsed, r.get("events") or []) for r in ranges
                )
            if hit:
                fixed = tuple(e["fixed"] for r in ranges for e in r.get("events") or [] if "fixed" in e)
                summary = str(record.get("summary") or record.get("details") or "").strip().splitlines()
                yield Match(
                    str(record["id"]),
                    tuple(str(a) for a in record.get("aliases") or ()),
                    summary[0] if summary else "",
                    fixed,
                    record.get("published"),
                )
                break

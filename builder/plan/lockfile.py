"""The lock file format: one line per pinned artifact, under a header that says what the lock was resolved from
and carries a digest of the rest of the file, so a lock verifies itself.

Python layers (pip reads these lines directly with --require-hashes):
    # strata lock v2 node=tools-tf2.13.1-cpu profile=hermetic
    # inputs=sha256:<hex>
    # digest=sha256:<hex>
    pandas==2.0.3 --hash=sha256:<hex>  # https://files.pythonhosted.org/.../pandas-2.0.3-...whl
Base layers (a hash-pinned root filesystem and the Debian packages in it):
    rootfs sha256:<hex> size=<bytes>
    deb python3.11 3.11.2-6+deb12u6 amd64

`digest` is the sha256 of the file's exact bytes without the digest line itself (the two header lines above it
and every line below it): an edited pin, a deleted line or a changed `inputs=` no longer matches it. It is a
checksum, not a signature: it catches edits made without `strata lock`; review of lock diffs and the checks of
`strata lock --check` (builder.lock.resolve.lock_states) cover the rest.

v1 locks (no digest line) are still read, so `strata lock` can rewrite their header without resolving again;
`strata lock --check` reports them as stale until it has.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import Location, StrataError

FORMAT_VERSION = 2
FORMAT = f"strata lock v{FORMAT_VERSION}"
_WHEEL = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s]+) --hash=sha256:(?P<sha>[0-9a-f]{64})\s+#\s+(?P<url>\S+)$"
)
_ROOTFS = re.compile(r"^rootfs sha256:(?P<sha>[0-9a-f]{64}) size=(?P<size>\d+)$")
_DEB = re.compile(r"^deb (?P<name>\S+) (?P<version>\S+) (?P<arch>\S+)$")
_HEADER = re.compile(r"^# strata lock v(?P<version>\d+) node=(?P<node>\S+) profile=(?P<profile>\S+)$")
_INPUTS = re.compile(r"^# inputs=sha256:(?P<sha>[0-9a-f]{64})$")
_DIGEST = re.compile(r"^# digest=sha256:(?P<sha>[0-9a-f]{64})$")
# A wheel's file name becomes a path in the wheelhouse: nothing but a plain *.whl name is accepted.
_WHEEL_FILE = re.compile(r"^[A-Za-z0-9_.+!-]+\.whl$")


class LockError(StrataError):
    """A lock file is malformed or does not match its own digest (edited by hand, truncated, tampered with)."""


@dataclass(frozen=True)
class PinnedWheel:
    name: str
    version: str
    sha256: str
    url: str
    # The line of the lock file this pin was read from (0 when it was not read from a file); not part of its value.
    line: int = field(default=0, compare=False, repr=False)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1].split("#", 1)[0]

    def line_text(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}  # {self.url}"


@dataclass(frozen=True)
class PinnedRootfs:
    sha256: str
    size: int


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    arch: str


@dataclass(frozen=True)
class Lock:
    node: str
    profile: str
    inputs: str
    wheels: tuple[PinnedWheel, ...] = ()
    rootfs: PinnedRootfs | None = None
    debs: tuple[DebPackage, ...] = field(default=())
    format_version: int = FORMAT_VERSION  # the format of the file it was read from (2 for a new lock)

    def _body(self) -> list[str]:
        lines = []
        if self.rootfs:
            lines.append(f"rootfs sha256:{self.rootfs.sha256} size={self.rootfs.size}")
        lines += [
            f"deb {d.name} {d.version} {d.arch}" for d in sorted(self.debs, key=lambda d: (d.name, d.arch))
        ]
        lines += [w.line_text() for w in sorted(self.wheels, key=lambda w: canonical_name(w.name))]
        return lines

    def render(self) -> str:
        """The file's text: header with the digest, then entries sorted by name (same pins → same bytes)."""
        head = f"# {FORMAT} node={self.node} profile={self.profile}\n# inputs=sha256:{self.inputs}\n"
        body = "".join(line + "\n" for line in self._body())
        return f"{head}# digest=sha256:{text_digest(head + body)}\n{body}"

    def pinned_text(self) -> str:
        """Node, profile, inputs and every pin as stable text: what content hashes and the inputs of child locks
        are computed from. It is the v1 file layout, kept byte for byte, so that a change of the file's header
        format never moves a content hash or makes a child lock stale."""
        head = [f"# strata lock v1 node={self.node} profile={self.profile}", f"# inputs=sha256:{self.inputs}"]
        return "\n".join(head + self._body()) + "\n"

    def pins(self) -> dict[str, str]:
        return {canonical_name(w.name): w.version for w in self.wheels}


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def text_digest(text: str) -> str:
    """sha256 hex of text as UTF-8: the `# digest=` of a lock is this over the file without that line."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_lock(text: str, file: str) -> Lock:
    """Parse and verify a lock file; a malformed line or a digest that does not match is a LockError at file:line.

    A v2 file is exactly three header lines and then entries, nothing else (no blank lines, no comments): the
    digest covers exact bytes, and a file `strata lock` wrote never has anything else.
    """
    lines = text.splitlines(keepends=True)
    first = _HEADER.match(lines[0].rstrip("\n")) if lines else None
    if first is None:
        raise LockError(f"missing '# {FORMAT} node=… profile=…' header", Location(file, 1))
    version = int(first["version"])
    if version == 1:
        return _parse_v1(lines, file)
    if version != FORMAT_VERSION:
        raise LockError(
            f"lock format v{version} is not one this Strata reads (v1, v{FORMAT_VERSION})", Location(file, 1)
        )
    inputs = _INPUTS.match(lines[1].rstrip("\n")) if len(lines) > 1 else None
    if inputs is None:
        raise LockError("line 2 must be '# inputs=sha256:<hex>'", Location(file, 2))
    digest = _DIGEST.match(lines[2].rstrip("\n")) if len(lines) > 2 else None
    if digest is None:
        raise LockError("line 3 must be '# digest=sha256:<hex>'", Location(file, 3))
    actual = text_digest(lines[0] + lines[1] + "".join(lines[3:]))
    if actual != digest["sha"]:
        raise LockError(
            f"the file does not match its digest (sha256:{digest['sha'][:16]}… in the header, sha256:{actual[:16]}… "
            "of the file): it was changed after `strata lock` wrote it; re-run `strata lock` and review the diff",
            Location(file, 3),
        )
    wheels, rootfs, debs = _entries(lines[3:], file, first_line=4, strict=True)
    return Lock(first["node"], first["profile"], inputs["sha"], wheels, rootfs, debs, FORMAT_VERSION)


def _parse_v1(lines: list[str], file: str) -> Lock:
    inputs = next((m["sha"] for raw in lines if (m := _INPUTS.match(raw.strip()))), None)
    if inputs is None:
        raise LockError("missing '# inputs=' header", Location(file, 1))
    first = _HEADER.match(lines[0].rstrip("\n"))
    assert first is not None
    wheels, rootfs, debs = _entries(lines[1:], file, first_line=2, strict=False)
    return Lock(first["node"], first["profile"], inputs, wheels, rootfs, debs, format_version=1)


def _entries(
    lines: list[str], file: str, first_line: int, strict: bool
) -> tuple[tuple[PinnedWheel, ...], PinnedRootfs | None, tuple[DebPackage, ...]]:
    wheels: list[PinnedWheel] = []
    debs: list[DebPackage] = []
    rootfs: PinnedRootfs | None = None
    for no, raw in enumerate(lines, start=first_line):
        line = raw.rstrip("\n") if strict else raw.strip()
        if not strict and (not line or line.startswith("#")):
            continue
        if m := _WHEEL.match(line):
            wheel = PinnedWheel(m["name"], m["version"], m["sha"], m["url"], line=no)
            if not _WHEEL_FILE.match(wheel.filename):
                raise LockError(f"{wheel.url[:80]} does not name a wheel file (*.whl)", Location(file, no))
            wheels.append(wheel)
        elif (m := _ROOTFS.match(line)) and rootfs is None:
            rootfs = PinnedRootfs(m["sha"], int(m["size"]))
        elif m := _DEB.match(line):
            debs.append(DebPackage(m["name"], m["version"], m["arch"]))
        else:
            raise LockError(f"unrecognised lock line: {line[:80]}", Location(file, no))
    return tuple(wheels), rootfs, tuple(debs)


def read_lock(path: Path) -> Lock | None:
    """The lock at `path` (verified), None when there is none; a LockError when it is malformed or tampered."""
    if not path.is_file():
        return None
    try:
        shown = str(path.absolute().relative_to(Path.cwd()))  # errors name the file as a user would type it
    except ValueError:
        shown = str(path)
    return parse_lock(path.read_text(encoding="utf-8"), shown)


def digest_inputs(inputs: dict[str, Any]) -> str:
    """sha256 over canonical JSON: what a lock (or a content hash) was computed from."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return hashlib.sha256(blob).hexdigest()

"""The lock file format: one line per pinned artifact, a header that says what inputs it was resolved from.

Python layers (pip reads these lines directly with --require-hashes):
    # strata lock v1 node=tools-tf2.13.1-cpu profile=hermetic
    # inputs=sha256:<hex>
    pandas==2.0.3 --hash=sha256:<hex>  # https://files.pythonhosted.org/.../pandas-2.0.3-...whl
Base layers (a hash-pinned root filesystem and the Debian packages in it):
    rootfs sha256:<hex> size=<bytes>
    deb python3.11 3.11.2-6+deb12u6 amd64
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import Location, StrataError

FORMAT = "strata lock v1"
_WHEEL = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s]+) --hash=sha256:(?P<sha>[0-9a-f]{64})\s+#\s+(?P<url>\S+)$"
)
_ROOTFS = re.compile(r"^rootfs sha256:(?P<sha>[0-9a-f]{64}) size=(?P<size>\d+)$")
_DEB = re.compile(r"^deb (?P<name>\S+) (?P<version>\S+) (?P<arch>\S+)$")
_HEADER = re.compile(r"^# strata lock v1 node=(?P<node>\S+) profile=(?P<profile>\S+)$")
_INPUTS = re.compile(r"^# inputs=sha256:(?P<sha>[0-9a-f]{64})$")


@dataclass(frozen=True)
class PinnedWheel:
    name: str
    version: str
    sha256: str
    url: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1].split("#", 1)[0]

    def line(self) -> str:
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

    def render(self) -> str:
        """Stable text: header, then entries sorted by name (same inputs → same bytes)."""
        lines = [f"# {FORMAT} node={self.node} profile={self.profile}", f"# inputs=sha256:{self.inputs}"]
        if self.rootfs:
            lines.append(f"rootfs sha256:{self.rootfs.sha256} size={self.rootfs.size}")
        lines += [
            f"deb {d.name} {d.version} {d.arch}" for d in sorted(self.debs, key=lambda d: (d.name, d.arch))
        ]
        lines += [w.line() for w in sorted(self.wheels, key=lambda w: canonical_name(w.name))]
        return "\n".join(lines) + "\n"

    def pins(self) -> dict[str, str]:
        return {canonical_name(w.name): w.version for w in self.wheels}


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str, file: str) -> Lock:
    """Parse a lock file; malformed lines are errors naming file:line."""
    node = profile = inputs = None
    wheels: list[PinnedWheel] = []
    debs: list[DebPackage] = []
    rootfs: PinnedRootfs | None = None
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if m := _HEADER.match(line):
            node, profile = m["node"], m["profile"]
        elif m := _INPUTS.match(line):
            inputs = m["sha"]
        elif line.startswith("#"):
            continue
        elif m := _WHEEL.match(line):
            wheels.append(PinnedWheel(m["name"], m["version"], m["sha"], m["url"]))
        elif m := _ROOTFS.match(line):
            rootfs = PinnedRootfs(m["sha"], int(m["size"]))
        elif m := _DEB.match(line):
            debs.append(DebPackage(m["name"], m["version"], m["arch"]))
        else:
            raise StrataError(f"unrecognised lock line: {line[:80]}", Location(file, no, 1))
    if node is None or profile is None or inputs is None:
        raise StrataError(
            f"missing '# {FORMAT} node=… profile=…' or '# inputs=' header", Location(file, 1, 1)
        )
    return Lock(
        node=node, profile=profile, inputs=inputs, wheels=tuple(wheels), rootfs=rootfs, debs=tuple(debs)
    )


def read_lock(path: Path) -> Lock | None:
    if not path.is_file():
        return None
    return parse_lock(path.read_text(encoding="utf-8"), str(path))


def digest_inputs(inputs: dict[str, Any]) -> str:
    """sha256 over canonical JSON: what a lock (or a content hash) was computed from."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return hashlib.sha256(blob).hexdigest()

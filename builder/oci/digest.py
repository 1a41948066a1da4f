"""sha256, the one hash Strata names content by: `sha256:<hex>` for OCI blobs, bare hex for lock files.

Example: `sha256_digest(b"")` -> `"sha256:e3b0c442..."`; `file_sha256(Path("a.whl"))` -> `"e3b0c442..."`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PREFIX = "sha256:"
FILE_CHUNK = 1 << 20


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_digest(data: bytes) -> str:
    """`sha256:<hex>` of bytes, the form OCI uses for every blob reference."""
    return PREFIX + sha256_hex(data)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MB pieces (the form lock files record)."""
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while chunk := data.read(FILE_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """`sha256:<hex>` of a file's bytes."""
    return PREFIX + file_sha256(path)


class StreamDigest:
    """The sha256 and length of bytes seen piece by piece (a layer being copied, a blob being downloaded)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)

    @property
    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    @property
    def digest(self) -> str:
        """`sha256:<hex>` of everything seen so far."""
        return PREFIX + self._hash.hexdigest()

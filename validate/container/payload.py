"""The files a container gets before it starts, as the tar `put_archive` takes; and one file read back out.

Example: `container.put_archive("/", payload_archive(Payload("/tmp/strata-smoke", {"checks.py": source})))`
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass

DIRECTORY_MODE = 0o755  # any uid may enter and list: image users run as 1000, not as the tar's owner (root)
FILE_MODE = 0o644  # any uid may read


@dataclass(frozen=True)
class Payload:
    """Files for one directory in the container: `directory` is absolute, `files` maps a plain name to bytes."""

    directory: str
    files: Mapping[str, bytes]

    def path(self, name: str) -> str:
        """Where file `name` lands in the container."""
        return f"{self.directory.rstrip('/')}/{name}"


def payload_archive(payload: Payload, mtime: float | None = None) -> bytes:
    """A tar to put at `/`: the directory and its files, readable by any uid. mtime: now unless given."""
    if not payload.directory.startswith("/"):
        raise ValueError(f"payload directory must be absolute, not {payload.directory!r}")
    bad = [name for name in payload.files if not name or "/" in name or name in (".", "..")]
    if bad:
        raise ValueError(f"payload file names must be plain names, not {bad[0]!r}")
    stamp = int(time.time() if mtime is None else mtime)
    top = payload.directory.strip("/")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo(top)
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, DIRECTORY_MODE, stamp
        tar.addfile(directory)
        for name, data in payload.files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), FILE_MODE, stamp
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def file_from_archive(archive: bytes) -> bytes | None:
    """The first regular file of a tar (what `get_archive` returns for one file); None when it holds none."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                extracted = tar.extractfile(member)
                return extracted.read() if extracted is not None else None
    return None

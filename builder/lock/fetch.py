"""`strata fetch`: download every locked wheel once into a content-addressed wheelhouse, verifying sha256.

Layout: <cache>/wheels/<sha256>/<filename>. A wheel used by six cells is stored (and downloaded) once.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from builder.engine.gc import remove_cached_files, tree_size
from builder.errors import StrataError
from builder.oci.digest import file_sha256
from builder.plan.lockfile import PinnedWheel
from builder.plan.retention import CachedFile

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


class WheelhouseError(StrataError):
    """A wheel is missing, tampered with or truncated."""


@dataclass(frozen=True)
class FetchResult:
    downloaded: int
    reused: int
    bytes_downloaded: int
    repaired: tuple[str, ...]


def wheel_path(cache: Path, wheel: PinnedWheel) -> Path:
    return cache / "wheels" / wheel.sha256 / wheel.filename


def verify_wheel(cache: Path, wheel: PinnedWheel) -> str | None:
    """None if the stored file matches the lock, else a one-line reason."""
    path = wheel_path(cache, wheel)
    if not path.is_file():
        return "missing"
    actual = file_sha256(path)
    if actual != wheel.sha256:
        return f"sha256 {actual[:16]}… differs from the lock's {wheel.sha256[:16]}… (tampered or truncated)"
    return None


def unique_wheels(wheels: Iterable[PinnedWheel]) -> list[PinnedWheel]:
    seen: dict[str, PinnedWheel] = {}
    for w in wheels:
        seen.setdefault(w.sha256, w)
    return sorted(seen.values(), key=lambda w: w.filename)


def fetch_wheels(
    cache: Path,
    wheels: Iterable[PinnedWheel],
    *,
    repair: bool = True,
    jobs: int = 4,
    progress: Callable[[str, int], None] | None = None,
    environ: Mapping[str, str],
) -> FetchResult:
    """Make every wheel present and verified. With repair=False a corrupt file is an error, never replaced.

    Downloads trust $SSL_CERT_FILE of `environ` (the run's environment), else the host's CA bundle.
    """
    todo: list[PinnedWheel] = []
    repaired: list[str] = []
    reused = 0
    for w in unique_wheels(wheels):
        problem = verify_wheel(cache, w)
        if problem is None:
            reused += 1
        elif problem == "missing":
            todo.append(w)
        elif repair:
            repaired.append(w.filename)
            wheel_path(cache, w).unlink()
            todo.append(w)
        else:
            raise WheelhouseError(
                f"wheelhouse: {wheel_path(cache, w)}: {problem}; refusing to install it (run `strata fetch` to re-download)"
            )
    total = 0
    if todo:
        cafile = environ.get("SSL_CERT_FILE") or (CA_BUNDLE if os.path.exists(CA_BUNDLE) else None)
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=cafile) if cafile else True
        with httpx.Client(
            verify=verify, timeout=httpx.Timeout(60.0, connect=20.0), follow_redirects=True
        ) as client:
            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                for size in pool.map(lambda w: _download(client, cache, w, progress), todo):
                    total += size
    return FetchResult(downloaded=len(todo), reused=reused, bytes_downloaded=total, repaired=tuple(repaired))


def _download(
    client: httpx.Client, cache: Path, wheel: PinnedWheel, progress: Callable[[str, int], None] | None
) -> int:
    target = wheel_path(cache, wheel)
    target.parent.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _attempt in range(3):
        h = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(prefix=".part-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out, client.stream("GET", wheel.url) as resp:
                if resp.status_code != 200:
                    raise WheelhouseError(f"{wheel.url}: HTTP {resp.status_code}")
                for chunk in resp.iter_bytes(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
                    if progress:
                        progress(wheel.filename, len(chunk))
            if h.hexdigest() != wheel.sha256:
                raise WheelhouseError(
                    f"{wheel.filename}: downloaded sha256 {h.hexdigest()[:16]}… does not match the lock ({wheel.sha256[:16]}…)"
                )
            os.replace(tmp_name, target)
            return size
        except (httpx.HTTPError, WheelhouseError) as exc:
            last_error = str(exc)
            if isinstance(exc, WheelhouseError) and "does not match" in last_error:
                break  # the index serves other bytes than were locked: retrying will not help
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    raise WheelhouseError(f"cannot fetch {wheel.filename}: {last_error}")


def link_wheelhouse(cache: Path, wheels: Iterable[PinnedWheel], dest: Path) -> Path:
    """A flat find-links directory for one node: hard links into the cache (copies across filesystems)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for w in wheels:
        src = wheel_path(cache, w)
        try:
            os.link(src, dest / w.filename)
        except OSError:
            shutil.copy2(src, dest / w.filename)
    return dest


def list_wheelhouse(cache: Path) -> list[CachedFile]:
    """Every wheel of the wheelhouse, keyed by its sha256, and every partial download a killed fetch left (key "")."""
    root = cache / "wheels"
    entries: list[CachedFile] = []
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        if not directory.is_dir() or not _SHA256.match(directory.name):
            entries.append(CachedFile("", (directory,), tree_size(directory)))
            continue
        partial = [p for p in directory.iterdir() if p.name.startswith(".part-")]
        entries += [CachedFile("", (p,), tree_size(p)) for p in partial]
        size = tree_size(directory) - sum(tree_size(p) for p in partial)
        entries.append(CachedFile(directory.name, (directory,), size))
    return entries


def prune_wheelhouse(entries: Iterable[CachedFile]) -> int:
    """Delete the wheelhouse entries `entries` (from list_wheelhouse); returns the bytes freed."""
    return remove_cached_files(entries)

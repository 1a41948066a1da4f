"""`strata fetch`: download every locked wheel once into a content-addressed wheelhouse, verifying sha256.

Layout: <cache>/wheels/<sha256>/<filename>. A wheel used by six cells is stored (and downloaded) once.

The sha256 is a wheel's identity, its URL only where to look first. A wheel is fetched from its locked URL when
that URL is allowed (PyPI's file host or a configured index, see builder.lock.indexes); when it is not, or that
host fails, the configured indexes are searched for the same file name (their PEP 503 project pages, http(s) or
file:) and the first copy whose bytes hash to the locked sha256 is taken.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from builder.engine.gc import remove_cached_files, tree_size
from builder.errors import StrataError
from builder.lock.indexes import project_page_url, wheel_url_problem
from builder.oci.digest import file_sha256
from builder.plan.lockfile import PinnedWheel, canonical_name
from builder.plan.retention import CachedFile

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20
ATTEMPTS = 3
_HREF = re.compile(r"""<a\s[^>]*href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


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
    indexes: Sequence[str] = (),
) -> FetchResult:
    """Make every wheel present and verified. With repair=False a corrupt file is an error, never replaced.

    `indexes` are the configured package indexes (settings.package_indexes): where a wheel may also be found.
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
                for size in pool.map(lambda w: _download(client, cache, w, progress, indexes), todo):
                    total += size
    return FetchResult(downloaded=len(todo), reused=reused, bytes_downloaded=total, repaired=tuple(repaired))


class _WrongBytes(WheelhouseError):
    """A source served bytes that do not hash to the locked sha256: never worth asking it again."""


def _download(
    client: httpx.Client,
    cache: Path,
    wheel: PinnedWheel,
    progress: Callable[[str, int], None] | None,
    indexes: Sequence[str],
) -> int:
    target = wheel_path(cache, wheel)
    target.parent.mkdir(parents=True, exist_ok=True)
    refused = wheel_url_problem(wheel.url, indexes)
    sources = [] if refused else [wheel.url]
    looked_up = False
    errors: dict[str, str] = {}
    wrong: set[str] = set()  # sources that served other bytes: never asked again
    for _attempt in range(ATTEMPTS):
        for url in list(sources):
            try:
                return _download_from(client, url, target, wheel, progress)
            except _WrongBytes as exc:
                errors[url] = str(exc)
                wrong.add(url)
                sources.remove(url)
            except (httpx.HTTPError, OSError, WheelhouseError) as exc:
                errors[url] = str(exc) or type(exc).__name__
        if not looked_up and indexes:
            looked_up = True
            sources += [u for u in mirror_urls(client, wheel, indexes) if u not in sources and u not in wrong]
            if sources:
                continue  # try the mirrors at once, before another round on a failing host
        if not sources:
            break
    if refused and not errors:
        raise WheelhouseError(
            f"cannot fetch {wheel.filename}: its locked URL is not allowed ({refused}) and no configured "
            "index has it"
        )
    last = "; ".join(f"{u}: {e}" for u, e in list(errors.items())[-2:])
    raise WheelhouseError(f"cannot fetch {wheel.filename}: {last}")


def _download_from(
    client: httpx.Client,
    url: str,
    target: Path,
    wheel: PinnedWheel,
    progress: Callable[[str, int], None] | None,
) -> int:
    """Download `url` into `target` if its bytes hash to the wheel's sha256 (an http(s) or file: URL)."""
    h = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=".part-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in _read(client, url):
                out.write(chunk)
                h.update(chunk)
                size += len(chunk)
                if progress:
                    progress(wheel.filename, len(chunk))
        if h.hexdigest() != wheel.sha256:
            raise _WrongBytes(
                f"{wheel.filename}: downloaded sha256 {h.hexdigest()[:16]}… does not match the lock ({wheel.sha256[:16]}…)"
            )
        os.replace(tmp_name, target)
        return size
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _read(client: httpx.Client, url: str) -> Iterable[bytes]:
    if urlsplit(url).scheme == "file":
        with open(unquote(urlsplit(url).path), "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
        return
    with client.stream("GET", url) as resp:
        if resp.status_code != 200:
            raise WheelhouseError(f"HTTP {resp.status_code}")
        yield from resp.iter_bytes(CHUNK)


def mirror_urls(client: httpx.Client, wheel: PinnedWheel, indexes: Sequence[str]) -> list[str]:
    """URLs of files named like `wheel` on the PEP 503 project pages of `indexes` (unreadable pages are skipped).

    A link whose `#sha256=` fragment names other bytes is left out; the rest are checked when downloaded.
    """
    found: list[str] = []
    for index in indexes:
        page = project_page_url(index, canonical_name(wheel.name))
        try:
            text = _page_text(client, page)
        except (httpx.HTTPError, OSError, WheelhouseError):
            continue
        for href in _HREF.findall(text):
            url = urljoin(page, html.unescape(href))
            base, _, fragment = url.partition("#")
            if base.rsplit("/", 1)[-1] != wheel.filename:
                continue
            if fragment.startswith("sha256=") and fragment[7:] != wheel.sha256:
                continue
            if base not in found:
                found.append(base)
    return found


def _page_text(client: httpx.Client, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
        return (path / "index.html" if path.is_dir() else path).read_text(encoding="utf-8", errors="replace")
    resp = client.get(url, headers={"Accept": "text/html"})
    if resp.status_code != 200:
        raise WheelhouseError(f"HTTP {resp.status_code}")
    return resp.text


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

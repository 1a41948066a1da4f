"""The Debian security suite's index, fetched from the archive and verified like apt does.

`dists/<codename>-security/InRelease` is checked with gpgv against the host's debian-archive-keyring, then
`main/binary-<arch>/Packages.xz` must have the sha256 and size InRelease gives. Anything that fails (no network,
a bad signature, a changed index) is a `SecurityIndexUnavailable` naming the URL and the reason; the report turns
it into an `unavailable` status, never into an empty list of updates.
"""

from __future__ import annotations

import hashlib
import lzma
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from builder.errors import StrataError
from validate.vulns.debian import ReleaseInfo, parse_release

MIRROR = "http://deb.debian.org/debian-security"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class SecurityIndexUnavailable(StrataError):
    """The security suite's index could not be fetched or did not verify."""


@dataclass(frozen=True)
class SuiteIndex:
    release: ReleaseInfo
    packages: bytes  # the decompressed Packages index
    url: str


def verify_inrelease(data: bytes, keyring: Path = KEYRING) -> str:
    """Check InRelease's OpenPGP signature with gpgv; returns the signers gpgv names."""
    if not keyring.is_file():
        raise SecurityIndexUnavailable(f"{keyring} is missing (apt-get install debian-archive-keyring)")
    with tempfile.NamedTemporaryFile(suffix=".InRelease") as file:
        file.write(data)
        file.flush()
        try:
            done = subprocess.run(
                ["gpgv", "--keyring", str(keyring), file.name], capture_output=True, text=True, timeout=60
            )
        except FileNotFoundError:
            raise SecurityIndexUnavailable("gpgv is not installed (apt-get install gpgv)") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SecurityIndexUnavailable(f"InRelease signature does not verify with {keyring} ({last})")
    return "; ".join(re.findall(r'Good signature from "([^"]+)"', done.stderr)) or "a key of the keyring"


def _get(client: httpx.Client, url: str) -> bytes:
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        raise SecurityIndexUnavailable(f"{url}: {type(exc).__name__}: {str(exc)[:120]}") from None
    if response.status_code != 200:
        raise SecurityIndexUnavailable(f"{url}: HTTP {response.status_code}")
    return response.content


def fetch_suite(
    codename: str, arch: str, *, mirror: str = MIRROR, keyring: Path = KEYRING, timeout: float = 60.0
) -> SuiteIndex:
    """The verified index of `<codename>-security` for `arch`, e.g. fetch_suite("bookworm", "amd64")."""
    suite = f"{codename}-security"
    base = f"{mirror.rstrip('/')}/dists/{suite}"
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        inrelease = _get(client, f"{base}/InRelease")
        release = parse_release(inrelease, verify_inrelease(inrelease, keyring))
        path = f"main/binary-{arch}/Packages.xz"
        if path not in release.hashes:
            raise SecurityIndexUnavailable(f"{base}/InRelease lists no {path}")
        compressed = _get(client, f"{base}/{path}")
    want, size = release.hashes[path]
    if hashlib.sha256(compressed).hexdigest() != want or len(compressed) != size:
        raise SecurityIndexUnavailable(f"{base}/{path}: sha256 or size differs from InRelease")
    try:
        packages = lzma.decompress(compressed)
    except lzma.LZMAError as exc:
        raise SecurityIndexUnavailable(f"{base}/{path}: not xz ({exc})") from None
    return SuiteIndex(release, packages, f"{base}/{path}")

"""Find secret material in every layer of an image, read as a `docker save` tar stream.

Pure stream processing, no Docker: `validate.smoke.runner` hands in the engine's stream. Every layer is scanned,
not just the final filesystem, because a key copied in one layer and deleted in the next still ships.
Evidence names the path and layer, never the secret itself.
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import hashlib
import io
import json
import posixpath
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from validate.smoke.check_result import CheckResult

KINDS = ("private-key", "docker-auths", "registry-credentials", "host-ca-bundle")
CHECK_NAMES = {kind: "secrets:" + kind for kind in KINDS}
DEBIAN_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

# Paths whose hits are named in the report but not failed; empty by default: package content is
# recognised by the hashes its package manager recorded (dpkg md5sums, wheel RECORD), not by path.
DEFAULT_IGNORE_GLOBS: tuple[str, ...] = ()

# A PEM header followed by real base64 body lines: docstrings that only show the header do not match.
PRIVATE_KEY_RE = re.compile(
    rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n(?:[A-Za-z-]+: [^\n]*\n)*\r?\n?(?:[A-Za-z0-9+/=]{40,}\r?\n)+"
)
CHUNK = 8 << 20
OVERLAP = 8 << 10
CREDENTIAL_FILES = {
    ".netrc",
    "netrc",
    ".git-credentials",
    ".pypirc",
    "pip.conf",
    "pip.ini",
    ".npmrc",
    "auth.json",
}
CREDENTIAL_LINE_RES = (
    re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),  # https://user:secret@host
    re.compile(r"^\s*password\s*[=:]?\s*\S+", re.IGNORECASE | re.MULTILINE),
    re.compile(r"\bpassword\s+\S+"),  # netrc: machine h login u password p
    re.compile(r"_(authToken|auth|password)\s*=\s*\S+"),  # npmrc
)


@dataclass(frozen=True)
class Finding:
    kind: str
    path: str
    layer: str  # "3/12 sha256:ab12..", or the archive member when the layer is unknown
    detail: str
    sha256: str = field(default="", compare=False)  # of the file, to match package manifests
    md5: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.detail} at {self.path} (layer {self.layer})"


@dataclass
class ScanResult:
    findings: list[Finding] = field(default_factory=list)
    ignored: list[Finding] = field(default_factory=list)
    layers_scanned: int = 0
    host_bundle_checked: bool = False


def private_key_hits(data: bytes) -> bool:
    return b"PRIVATE KEY-----" in data and PRIVATE_KEY_RE.search(data) is not None


def docker_auths(text: str) -> list[str]:
    """Registries with stored credentials in a Docker/containers auth file (names only, never values)."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return []
    keys = ("auth", "identitytoken", "password", "registrytoken")
    return sorted(r for r, v in auths.items() if isinstance(v, dict) and any(v.get(k) for k in keys))


def credential_lines(text: str) -> list[int]:
    """1-based line numbers that carry a password or a URL with user:secret@ (values never returned)."""
    lines = set()
    for pattern in CREDENTIAL_LINE_RES:
        for m in pattern.finditer(text):
            lines.add(text.count("\n", 0, m.start()) + 1)
    return sorted(lines)


def dpkg_has_ca_certificates(status: str) -> bool:
    """True when dpkg's status file lists ca-certificates as installed."""
    for stanza in status.split("\n\n"):
        if re.search(r"^Package: ca-certificates$", stanza, re.MULTILINE) and re.search(
            r"^Status: install ok installed$", stanza, re.MULTILINE
        ):
            return True
    return False


class _IterStream(io.RawIOBase):
    """A readable file over an iterator of byte chunks (the engine's save stream)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class _HashingReader(io.RawIOBase):
    """Hashes what passes through, so a layer's diff ID is known once it has been read to the end."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha.update(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def drain(self) -> str:
        while self.read(CHUNK):
            pass
        return "sha256:" + self.sha.hexdigest()


@dataclass
class _LayerFacts:
    findings: list[Finding] = field(default_factory=list)
    ca_candidates: list[str] = field(default_factory=list)
    dpkg_ca: bool | None = None  # None: this layer has no dpkg status file
    packaged: dict[str, str] = field(
        default_factory=dict
    )  # path -> "md5:.." or "sha256:.." a manifest records


def dpkg_md5sums(text: str) -> dict[str, str]:
    """A dpkg `info/*.md5sums` file: absolute path -> `md5:<hex>`."""
    out = {}
    for line in text.splitlines():
        digest, _, rel = line.partition("  ")
        if rel and re.fullmatch(r"[0-9a-f]{32}", digest):
            out["/" + rel.lstrip("/")] = "md5:" + digest
    return out


def wheel_record(record_path: str, text: str) -> dict[str, str]:
    """A wheel's `*.dist-info/RECORD`: absolute path -> `sha256:<hex>` (paths are relative to site-packages)."""
    site = posixpath.dirname(posixpath.dirname(record_path))
    out = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[1].startswith("sha256="):
            b64 = row[1][len("sha256=") :]
            raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
            out[posixpath.normpath(posixpath.join(site, row[0]))] = "sha256:" + raw.hex()
    return out


class SecretScanner:
    """Scans layers for secrets; `host_bundle` is the host's CA bundle whose verbatim copy is a leak."""

    def __init__(
        self, host_bundle: bytes | None, ignore_globs: tuple[str, ...] = DEFAULT_IGNORE_GLOBS
    ) -> None:
        self.host_digest = hashlib.sha256(host_bundle).hexdigest() if host_bundle else None
        self.host_size = len(host_bundle) if host_bundle else -1
        self.ignore_globs = ignore_globs

    def scan_layer(self, layer: tarfile.TarFile) -> _LayerFacts:
        facts = _LayerFacts()
        for member in layer:
            if not member.isfile() or "/.wh." in "/" + member.name:
                continue
            path = "/" + member.name.lstrip("./")
            fh = layer.extractfile(member)
            if fh is None:
                continue
            self._scan_file(path, member.size, fh, facts)
        return facts

    def _scan_file(self, path: str, size: int, fh: IO[bytes], facts: _LayerFacts) -> None:
        base = path.rsplit("/", 1)[-1]
        small = size <= CHUNK
        head = fh.read(CHUNK) if small else b""
        text = head.decode("utf-8", "replace") if small else ""
        found: list[Finding] = []
        if path == "/var/lib/dpkg/status":
            facts.dpkg_ca = dpkg_has_ca_certificates(text)
        if path.startswith("/var/lib/dpkg/info/") and path.endswith(".md5sums"):
            facts.packaged.update(dpkg_md5sums(text))
        if path.endswith(".dist-info/RECORD"):
            facts.packaged.update(wheel_record(path, text))
        if size == self.host_size and small and hashlib.sha256(head).hexdigest() == self.host_digest:
            facts.ca_candidates.append(path)
        if re.search(r"/\.docker/config\.json$|/containers/auth\.json$", path) and small:
            registries = docker_auths(text)
            if registries:
                found.append(Finding("docker-auths", path, "", "credentials for " + ", ".join(registries)))
        if base in CREDENTIAL_FILES and small:
            lines = credential_lines(text)
            if lines:
                detail = "credentials on line(s) " + ", ".join(str(n) for n in lines[:10])
                found.append(Finding("registry-credentials", path, "", detail))
        sha, md5 = hashlib.sha256(head), hashlib.md5(head, usedforsecurity=False)
        if small:
            hit = private_key_hits(head)
        else:
            hit, tail = False, b""
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                sha.update(chunk)
                md5.update(chunk)
                hit = hit or private_key_hits(tail + chunk)
                tail = chunk[-OVERLAP:]
        if hit:
            found.append(Finding("private-key", path, "", "PEM private key"))
        for f in found:
            facts.findings.append(
                replace(f, sha256="sha256:" + sha.hexdigest(), md5="md5:" + md5.hexdigest())
            )

    def scan_saved(self, chunks: Iterable[bytes], diff_ids: list[str]) -> ScanResult:
        """Scan a `docker save` stream (Docker archive or OCI layout); `diff_ids` orders the layers."""
        result = ScanResult(host_bundle_checked=self.host_digest is not None)
        per_layer: list[tuple[int, str, _LayerFacts]] = []
        with tarfile.open(fileobj=io.BufferedReader(_IterStream(chunks), CHUNK), mode="r|") as outer:
            for member in outer:
                if not member.isfile() or not (member.name.endswith("layer.tar") or "blobs/" in member.name):
                    continue
                raw = outer.extractfile(member)
                if raw is None:
                    continue
                reader = _HashingReader(raw)
                try:
                    with tarfile.open(fileobj=reader, mode="r|*") as layer:
                        facts = self.scan_layer(layer)
                except tarfile.ReadError:
                    continue  # an OCI config or manifest blob, not a layer
                diff_id = reader.drain()
                index = diff_ids.index(diff_id) if diff_id in diff_ids else -1
                where = f"{index + 1}/{len(diff_ids)} {diff_id[:19]}" if index >= 0 else member.name
                per_layer.append((index, where, facts))
        result.layers_scanned = len(per_layer)
        per_layer.sort(key=lambda item: item[0])
        dpkg_states = [f.dpkg_ca for _, _, f in per_layer if f.dpkg_ca is not None]
        packaged: dict[str, set[str]] = {}
        for _, _, facts in per_layer:
            for path, digest in facts.packaged.items():
                packaged.setdefault(path, set()).add(digest)
        debian_ca_installed = bool(dpkg_states and dpkg_states[-1])
        for _, where, facts in per_layer:
            for f in facts.findings:
                finding = replace(f, layer=where)
                # Unmodified content of a Debian package or a wheel is public, e.g. GnuTLS self-test keys.
                public = bool({f.sha256, f.md5} & packaged.get(f.path, set()))
                if public:
                    finding = replace(finding, detail=finding.detail + ", as its package ships it")
                ignored = public or any(fnmatch.fnmatch(f.path, g) for g in self.ignore_globs)
                (result.ignored if ignored else result.findings).append(finding)
            for path in facts.ca_candidates:
                if path == DEBIAN_BUNDLE and debian_ca_installed:
                    continue  # the image's own ca-certificates package built the same bundle as the host's
                result.findings.append(
                    Finding("host-ca-bundle", path, where, "verbatim copy of the host CA bundle")
                )
        return result


def secret_checks(result: ScanResult, host_bundle_path: str) -> list[CheckResult]:
    """One check per kind of secret: fail with every finding as evidence, pass naming what was ignored."""
    checks = []
    for kind in KINDS:
        name = CHECK_NAMES[kind]
        if kind == "host-ca-bundle" and not result.host_bundle_checked:
            checks.append(CheckResult.not_run(name, f"host has no CA bundle at {host_bundle_path}"))
            continue
        found = [f for f in result.findings if f.kind == kind]
        ignored = [f for f in result.ignored if f.kind == kind]
        if found:
            checks.append(CheckResult.failed(name, f"no {kind} in any layer", "; ".join(map(str, found))))
            continue
        detail = f"none in {result.layers_scanned} layer(s)"
        if ignored:
            detail += f"; ignored {len(ignored)} packaged file(s): " + "; ".join(map(str, ignored[:5]))
        checks.append(CheckResult.passed(name, detail))
    return checks


def read_host_bundle(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None

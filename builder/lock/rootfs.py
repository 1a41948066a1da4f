"""Hash-pinned Debian root filesystems for the base images, built with mmdebstrap.

`build_rootfs(spec, cache_dir)` runs mmdebstrap with SOURCE_DATE_EPOCH=spec.epoch and a customize hook
that removes what would differ between runs or hosts (apt lists and caches, logs, ldconfig aux-cache,
machine-id, hostname, resolv.conf, shadow change dates, postinst-written *.pyc), so the same spec and the
same archive state give a byte-identical tar. Results are cached content-addressed:

    <cache_dir>/rootfs/<sha256>.tar      the root filesystem
    <cache_dir>/rootfs/<sha256>.json     sidecar: spec, size, installed packages
    <cache_dir>/rootfs/by-spec/<key>     which sha256 a spec (hash of spec + recipe) produced
    <cache_dir>/debs/<suite>-<arch>/     downloaded .debs, reused by later builds (apt re-checks hashes)

A lock records the sha256; `expected_sha256` turns a moved archive into a clear error.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from builder.engine import host
from builder.engine.gc import remove_cached_files, tree_size
from builder.errors import HostError, StrataError
from builder.oci.digest import file_sha256, sha256_hex
from builder.oci.dpkg import DebPackage, packages_from_dpkg_status
from builder.plan.retention import CachedFile

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# What the TensorFlow images need at run time: TF's manylinux wheels need only glibc, libstdc++ and libgomp;
# CUDA comes from pip wheels. python3-venv gives the venv the image installs TF into.
TF_RUNTIME_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libgomp1", "libstdc++6")
# Bump when the recipe (hook, options) changes in a way that changes the output.
RECIPE_VERSION = 1
# Suites released before merged /usr became the default; newer ones get it via mmdebstrap's hook.
SPLIT_USR_SUITES = frozenset({"stretch", "buster", "bullseye"})
MERGED_USR_HOOK_DIR = "/usr/share/mmdebstrap/hooks/merged-usr"
ROOTFS_DISK_NEED = 2 * 2**30
REQUIRED_TOOLS = ("mmdebstrap", "debian-archive-keyring")

_SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_URL_RE = re.compile(r"^(https?|file)://[A-Za-z0-9._~:/%+@-]+$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+)?$")
_VARIANTS = (
    "extract",
    "custom",
    "essential",
    "apt",
    "required",
    "minbase",
    "buildd",
    "important",
    "standard",
)


@dataclass(frozen=True, kw_only=True)
class RootfsSpec:
    """What goes into one root filesystem; equal specs (and archive state) give identical tars.

    packages may pin versions apt-style (`libc6=2.36-9+deb12u9`). epoch is SOURCE_DATE_EPOCH: every
    mtime is clamped to it. security_mirror None leaves out `<suite>-security`; updates adds `<suite>-updates`.
    slim drops man pages, docs (keeping copyright files) and translations, also for later apt installs.
    """

    suite: str
    epoch: int
    mirror: str = DEBIAN_MIRROR
    variant: str = "minbase"
    packages: tuple[str, ...] = TF_RUNTIME_PACKAGES
    components: tuple[str, ...] = ("main",)
    security_mirror: str | None = DEBIAN_SECURITY_MIRROR
    updates: bool = True
    architecture: str = "amd64"
    slim: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not _SUITE_RE.match(self.suite):
            problems.append(f"suite {self.suite!r} is not a Debian suite name")
        for url in (self.mirror, self.security_mirror):
            if url is not None and not _URL_RE.match(url):
                problems.append(f"mirror {url!r} is not an http(s):// or file:// URL")
        if self.variant not in _VARIANTS:
            problems.append(f"variant {self.variant!r} is not one of {', '.join(_VARIANTS)}")
        bad = [p for p in (*self.packages, *self.components, self.architecture) if not _PACKAGE_RE.match(p)]
        if bad:
            problems.append(f"not package/component/architecture names: {', '.join(bad)}")
        if self.epoch < 0:
            problems.append(f"epoch {self.epoch} is negative")
        if problems:
            raise StrataError(f"rootfs spec for {self.suite!r}: {'; '.join(problems)}")


@dataclass(frozen=True)
class RootfsArtifact:
    """A built root filesystem tar in the cache, with what is installed in it (sorted)."""

    path: Path
    sha256: str
    size: int
    packages: tuple[DebPackage, ...] = field(default=())
    spec_key: str = ""


# --- pure logic ---------------------------------------------------------------------------------


def sources_lines(spec: RootfsSpec) -> list[str]:
    """The one-line apt sources for the spec: suite, optionally -updates and -security.

    >>> sources_lines(RootfsSpec(suite="bookworm", epoch=0, security_mirror=None, updates=False))
    ['deb http://deb.debian.org/debian bookworm main']
    """
    components = " ".join(spec.components)
    lines = [f"deb {spec.mirror} {spec.suite} {components}"]
    if spec.updates:
        lines.append(f"deb {spec.mirror} {spec.suite}-updates {components}")
    if spec.security_mirror is not None:
        lines.append(f"deb {spec.security_mirror} {spec.suite}-security {components}")
    return lines


def customize_script(spec: RootfsSpec) -> str:
    """The mmdebstrap customize hook (run on the host with the root directory as $1).

    It removes nondeterminism at the source so two runs, or two hosts, give the same bytes.
    """
    days = spec.epoch // 86400
    sources = " ".join(shlex.quote(line) for line in sources_lines(spec))
    return f"""#!/bin/sh
# Generated by strata (builder/rootfs.py): make the root filesystem reproducible across runs and hosts.
set -eu
root="$1"
printf '%s\\n' {sources} > "$root/etc/apt/sources.list"
rm -f "$root"/etc/apt/sources.list.d/*.list "$root"/etc/apt/sources.list.d/*.sources
find "$root/var/lib/apt/lists" -mindepth 1 -maxdepth 1 -type f -delete
find "$root/var/cache/apt" -type f -delete
rm -f "$root/var/log/dpkg.log" "$root/var/log/alternatives.log" "$root/var/log/bootstrap.log"
if [ -d "$root/var/log/apt" ]; then find "$root/var/log/apt" -type f -delete; fi
rm -f "$root/var/cache/ldconfig/aux-cache" "$root/var/lib/dbus/machine-id"
rm -f "$root"/var/lib/dpkg/*-old "$root"/var/cache/debconf/*-old
: > "$root/etc/machine-id"
# The engine bind-mounts the real ones into every container; the host's must not leak into the tar.
: > "$root/etc/hostname"
: > "$root/etc/resolv.conf"
for f in passwd group shadow gshadow subuid subgid; do rm -f "$root/etc/$f-"; done
# Password change dates are "days since epoch" of the build unless pinned to SOURCE_DATE_EPOCH.
if [ -f "$root/etc/shadow" ]; then sed -E -i 's/^([^:]*:[^:]*:)[0-9]+:/\\1{days}:/' "$root/etc/shadow"; fi
find "$root/usr" "$root/etc" -name '*.pyc' -type f -delete
find "$root/usr" "$root/etc" -depth -type d -name __pycache__ -empty -delete
# apt (run on the host) hands its partial/ dirs to the host's _apt only when _apt can reach them, which
# depends on the path the build runs under (a 0700 mktemp parent stops it): give them the owner apt gives
# when its sandbox works, whatever the path. The locked root filesystems were made that way.
apt_uid=$(id -u _apt 2>/dev/null || true)
for d in "$root/var/lib/apt/lists/partial" "$root/var/cache/apt/archives/partial"; do
  if [ -n "$apt_uid" ] && [ -d "$d" ]; then chown "$apt_uid:0" "$d"; fi
done
"""


def slim_dpkg_options() -> list[str]:
    """dpkg path filters that drop docs, man pages and translations but keep copyright files."""
    return [
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/locale/*",
        "path-include=/usr/share/locale/locale.alias",
    ]


def mmdebstrap_argv(spec: RootfsSpec, output: Path, hook: Path, deb_cache: Path, mode: str) -> list[str]:
    """The mmdebstrap command line that builds `spec` into the tar `output`.

    `hook` is the file holding customize_script(spec); `deb_cache` is synced in before and out after
    (its .debs are only a download cache: apt checks them against the signed indices).
    """
    argv = [
        "mmdebstrap",
        f"--mode={mode}",
        f"--variant={spec.variant}",
        f"--architectures={spec.architecture}",
        "--format=tar",
        '--aptopt=Acquire::Languages "none"',
        # Keep downloaded essential .debs so the sync-out hook can cache them.
        "--skip=essential/unlink",
        # Device nodes are the engine's business; without them the tar extracts anywhere.
        "--skip=output/dev",
    ]
    if spec.packages:
        argv.append(f"--include={','.join(spec.packages)}")
    if spec.slim:
        argv += [f"--dpkgopt={option}" for option in slim_dpkg_options()]
    if spec.suite not in SPLIT_USR_SUITES:
        argv.append(f"--hook-dir={MERGED_USR_HOOK_DIR}")
    archives = "/var/cache/apt/archives/"
    argv += [
        f'--setup-hook=mkdir -p "$1"{archives}',
        f"--setup-hook=sync-in {deb_cache} {archives}",
        f"--customize-hook=sync-out {archives} {deb_cache}",
        f"--customize-hook={hook}",
        spec.suite,
        str(output),
        *sources_lines(spec),
    ]
    return argv


def spec_key(spec: RootfsSpec) -> str:
    """Stable hash of everything that decides the output: the spec, the hook text and RECIPE_VERSION."""
    payload = {"recipe": RECIPE_VERSION, "spec": asdict(spec), "hook": customize_script(spec)}
    return sha256_hex(json.dumps(payload, sort_keys=True).encode())


def package_changes(old: list[DebPackage], new: list[DebPackage], limit: int = 5) -> str:
    """A short one-line summary of version changes between two package lists ('' if none known)."""
    before = {p.name: p.version for p in old}
    after = {p.name: p.version for p in new}
    changes = [
        f"{name} {before.get(name, '-')} -> {after.get(name, '-')}"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]
    more = f" (+{len(changes) - limit} more)" if len(changes) > limit else ""
    return ", ".join(changes[:limit]) + more


def mismatch_message(spec: RootfsSpec, expected: str, actual: str, changes: str) -> str:
    """The one-line error for a fresh build whose sha256 differs from the lock."""
    detail = f" (changed: {changes})" if changes else ""
    return (
        f"rootfs for {spec.suite} built as sha256:{actual} but the lock expects sha256:{expected}{detail}: "
        f"the Debian archive moved (point or security release); refresh the lock to accept the new rootfs"
    )


# --- effects ------------------------------------------------------------------------------------


def _dpkg_status_from_tar(path: Path) -> str:
    with tarfile.open(path) as tar:
        for name in ("./var/lib/dpkg/status", "var/lib/dpkg/status"):
            try:
                member = tar.getmember(name)
            except KeyError:
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                return handle.read().decode("utf-8", errors="replace")
    raise HostError(f"{path} has no /var/lib/dpkg/status; mmdebstrap produced an unexpected tar")


def _load_artifact(store: Path, sha256: str) -> RootfsArtifact | None:
    tar, sidecar = store / f"{sha256}.tar", store / f"{sha256}.json"
    if not (tar.is_file() and sidecar.is_file()):
        return None
    meta = json.loads(sidecar.read_text())
    if tar.stat().st_size != meta["size"]:
        return None  # a truncated copy: rebuild rather than hand it out
    packages = tuple(DebPackage(*p) for p in meta["packages"])
    return RootfsArtifact(tar, sha256, meta["size"], packages, meta.get("spec_key", ""))


def cached_rootfs(
    spec: RootfsSpec, cache_dir: Path, expected_sha256: str | None = None
) -> RootfsArtifact | None:
    """The cached artifact for `spec` (or for `expected_sha256` if that tar is cached), else None."""
    store = cache_dir / "rootfs"
    if expected_sha256:
        hit = _load_artifact(store, expected_sha256)
        if hit is not None:
            return hit
    pointer = store / "by-spec" / spec_key(spec)
    if not pointer.is_file():
        return None
    sha256 = pointer.read_text().strip()
    if expected_sha256 and sha256 != expected_sha256:
        return None  # built from an older archive state than the lock: build again
    return _load_artifact(store, sha256)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    tmp.replace(path)


def build_rootfs(
    spec: RootfsSpec, cache_dir: Path, expected_sha256: str | None = None, *, environ: Mapping[str, str]
) -> RootfsArtifact:
    """Build (or take from the cache) the root filesystem tar for `spec`.

    Raise HostError if mmdebstrap is missing and cannot be installed, if it fails (the log path is
    named), or if `expected_sha256` is given and a fresh build differs from it (the Debian archive moved;
    the new tar stays cached so refreshing the lock is instant).
    """
    cache_dir = Path(cache_dir).absolute()
    hit = cached_rootfs(spec, cache_dir, expected_sha256)
    if hit is not None:
        return hit
    host.ensure_tools(REQUIRED_TOOLS, environ)
    store, key = cache_dir / "rootfs", spec_key(spec)
    work = cache_dir / "tmp" / f"rootfs-{key[:16]}-{uuid.uuid4().hex[:8]}"
    deb_cache = cache_dir / "debs" / f"{spec.suite}-{spec.architecture}"
    for directory in (store / "by-spec", store / "logs", work / "tmp", deb_cache):
        directory.mkdir(parents=True, exist_ok=True)
    host.check_free_disk(cache_dir, ROOTFS_DISK_NEED)
    try:
        artifact = _run_mmdebstrap(spec, key, store, work, deb_cache, environ)
    finally:
        _remove_tree(work)
    _write_atomic(store / "by-spec" / key, artifact.sha256 + "\n")
    if expected_sha256 and artifact.sha256 != expected_sha256:
        old = _load_artifact(store, expected_sha256)
        changes = package_changes(list(old.packages), list(artifact.packages)) if old else ""
        raise HostError(mismatch_message(spec, expected_sha256, artifact.sha256, changes))
    return artifact


def _run_mmdebstrap(
    spec: RootfsSpec, key: str, store: Path, work: Path, deb_cache: Path, environ: Mapping[str, str]
) -> RootfsArtifact:
    hook = work / "customize.sh"
    hook.write_text(customize_script(spec))
    hook.chmod(0o755)
    output = work / "rootfs.tar"
    mode = "root" if host.is_root() else "unshare"
    argv = mmdebstrap_argv(spec, output, hook, deb_cache, mode)
    log_path = store / "logs" / f"{spec.suite}-{key[:16]}.log"
    env = {**environ, "SOURCE_DATE_EPOCH": str(spec.epoch), "TMPDIR": str(work / "tmp")}
    with open(log_path, "w") as log:
        proc = subprocess.run(
            argv, check=False, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    if proc.returncode != 0 or not output.is_file():
        errors = [line for line in log_path.read_text(errors="replace").splitlines() if line.startswith("E:")]
        why = errors[-1] if errors else f"exit status {proc.returncode}"
        raise HostError(f"mmdebstrap failed for {spec.suite}: {why}; full log in {log_path}")
    sha256 = file_sha256(output)
    packages = packages_from_dpkg_status(_dpkg_status_from_tar(output))
    size = output.stat().st_size
    meta = {
        "sha256": sha256,
        "size": size,
        "spec_key": key,
        "spec": asdict(spec),
        "packages": [list(p) for p in packages],
    }
    _write_atomic(store / f"{sha256}.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    output.replace(store / f"{sha256}.tar")
    return RootfsArtifact(store / f"{sha256}.tar", sha256, size, tuple(packages), key)


def _remove_tree(path: Path) -> None:
    # mmdebstrap cleans its own chroot; what remains here is our hook, a failed tar and an empty tmp.
    shutil.rmtree(path, ignore_errors=True)


# --- the cache, for `strata gc` -----------------------------------------------------------------


def list_rootfs(cache_dir: Path) -> list[CachedFile]:
    """Every cached root filesystem keyed by its sha256: the tar, its sidecar, the by-spec pointers naming it and
    the mmdebstrap logs of those specs."""
    store = cache_dir / "rootfs"
    pointers: dict[str, list[Path]] = {}
    for pointer in sorted((store / "by-spec").glob("*")) if (store / "by-spec").is_dir() else []:
        try:
            pointers.setdefault(pointer.read_text().strip(), []).append(pointer)
        except OSError:
            continue
    entries = []
    for tar in sorted(store.glob("*.tar")):
        sha256 = tar.stem
        named_by = pointers.get(sha256, [])
        logs = [log for p in named_by for log in store.glob(f"logs/*-{p.name[:16]}.log")]
        paths = (tar, store / f"{sha256}.json", *named_by, *logs)
        entries.append(CachedFile(sha256, paths, sum(tree_size(p) for p in paths if p.exists())))
    return entries


def list_debs(cache_dir: Path) -> list[CachedFile]:
    """Every downloaded .deb of the root filesystem builds, keyed by its file name (apt's `name_version_arch.deb`)."""
    return [
        CachedFile(deb.name, (deb,), deb.stat().st_size)
        for deb in sorted((cache_dir / "debs").glob("*/*.deb"))
    ]


def prune_rootfs(entries: list[CachedFile]) -> int:
    """Delete root filesystem or .deb entries (from list_rootfs / list_debs); returns the bytes freed."""
    return remove_cached_files(entries)

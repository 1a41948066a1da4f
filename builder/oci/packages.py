"""Which Python distributions and Debian packages an image has installed, and how two images differ in them.

Answers "what changed between 2.13.1-gpu of last week and today" in package versions rather than paths.
Layers are streamed lowest first, and only two kinds of small file are read: the `Name`/`Version` headers
of every `*.dist-info/METADATA`, and `var/lib/dpkg/status` (a few MB at most). Whiteouts, opaque
directories and directories replaced by non-directories in later layers hide what lower layers installed,
as in the merged filesystem.
"""

from __future__ import annotations

import contextlib
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from builder.errors import StrataError
from builder.oci.canonical import WHITEOUT_PREFIX, normalize_path
from builder.oci.changes import change_kind
from builder.oci.dpkg import packages_from_dpkg_status
from builder.oci.image import Image, LayerReader

DPKG_STATUS = "var/lib/dpkg/status"
OPAQUE_WHITEOUT = ".wh..wh..opq"
METADATA_HEADER_MAX_BYTES = 256 * 1024  # Name and Version come first; a header this long is not metadata


@dataclass(frozen=True)
class InstalledPackage:
    """One installed package. `where` is the site directory for Python, the architecture for Debian.

    Example: `InstalledPackage("numpy", "1.24.3", "usr/local/lib/python3.11/site-packages")`.
    """

    name: str
    version: str
    where: str


@dataclass(frozen=True)
class ImagePackages:
    """The packages installed in an image's merged filesystem, sorted by name and place."""

    python: tuple[InstalledPackage, ...] = ()
    debian: tuple[InstalledPackage, ...] = ()


@dataclass(frozen=True)
class PackageChange:
    """A package only in image a (`removed`), only in b (`added`), or in both at other versions or places."""

    name: str
    a: InstalledPackage | None
    b: InstalledPackage | None

    @property
    def kind(self) -> str:
        """`added`, `removed` or `changed`, like EntryChange."""
        return change_kind(self.a, self.b)


@dataclass(frozen=True)
class PackageDiff:
    """The Python and Debian packages that differ between two images."""

    python: tuple[PackageChange, ...] = ()
    debian: tuple[PackageChange, ...] = ()

    @property
    def empty(self) -> bool:
        """True when no package was added, removed or changed."""
        return not self.python and not self.debian


def python_name_key(name: str) -> str:
    """The PEP 503 form pip compares names in: `Typing_Extensions` and `typing-extensions` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_dist_metadata(path: str) -> bool:
    """Whether `path` (normalized) is the METADATA file of an installed Python distribution."""
    directory, _, name = path.rpartition("/")
    return name == "METADATA" and directory.endswith(".dist-info")


def parse_dist_metadata(stream: IO[bytes], path: str) -> InstalledPackage:
    """The Name and Version headers of a `*.dist-info/METADATA` stream; reads no further than the headers.

    Falls back to the directory name (`foo-1.0.dist-info`) for a header that is missing.
    Example: `parse_dist_metadata(io.BytesIO(b"Name: foo\\nVersion: 1.0\\n"), "s/foo-1.0.dist-info/METADATA")`
    is `InstalledPackage("foo", "1.0", "s")`.
    """
    headers: dict[str, str] = {}
    consumed = 0
    while consumed < METADATA_HEADER_MAX_BYTES and not {"name", "version"} <= headers.keys():
        raw = stream.readline()
        consumed += len(raw)
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line.strip():
            break
        key, colon, value = line.partition(":")
        if colon and not line[0].isspace():
            headers.setdefault(key.strip().lower(), value.strip())
    dist_info = path.rpartition("/")[0]
    stem_name, _, stem_version = dist_info.rpartition("/")[2].removesuffix(".dist-info").partition("-")
    return InstalledPackage(
        name=headers.get("name") or stem_name,
        version=headers.get("version") or stem_version or "unknown",
        where=dist_info.rpartition("/")[0] or ".",
    )


def parse_dpkg_status(data: bytes) -> tuple[InstalledPackage, ...]:
    """Installed packages (name, version, architecture) of a dpkg status file, by `rootfs`'s one parser.

    A package counts when its state is `installed`: `install ok installed`, and also `hold ok installed`
    (CUDA images hold cuDNN and NCCL with apt-mark); removed ones with config files left do not.
    """
    return tuple(
        InstalledPackage(p.name, p.version, p.arch)
        for p in packages_from_dpkg_status(data.decode("utf-8", "replace"))
    )


def _covers(hidden: str, path: str) -> bool:
    return path == hidden or path.startswith(hidden + "/")


class PackageScan:
    """The packages of a merged filesystem, built up one layer at a time (lowest layer first).

    Memory stays small: one record per dist-info and the dpkg package list, never file contents.
    Example: `scan = PackageScan("img"); [scan.add_layer(tar) for tar in layers]; scan.result()`.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self._dists: dict[str, InstalledPackage] = {}  # by METADATA path
        self._dpkg: tuple[InstalledPackage, ...] | None = None

    def _tracked(self) -> list[str]:
        return list(self._dists) + ([DPKG_STATUS] if self._dpkg is not None else [])

    def add_layer(self, layer: LayerReader, index: int = 0) -> None:
        """Apply one layer: its whiteouts hide what lower layers installed, then its own files count."""
        # A non-directory at a directory holding tracked files replaces that directory (and hides them).
        directories = {p[:i] for p in self._tracked() for i, ch in enumerate(p) if ch == "/"}
        hidden: list[str] = []
        opaque: list[str] = []
        dists: dict[str, InstalledPackage] = {}
        dpkg: tuple[InstalledPackage, ...] | None = None
        for member in layer:
            path = normalize_path(member.name)
            parent, _, name = path.rpartition("/")
            if name == OPAQUE_WHITEOUT:
                opaque.append(parent)
            elif name.startswith(WHITEOUT_PREFIX):
                hidden.append(
                    f"{parent}/{name[len(WHITEOUT_PREFIX) :]}" if parent else name[len(WHITEOUT_PREFIX) :]
                )
            elif path in directories and not member.isdir():
                hidden.append(path)
            elif path == DPKG_STATUS or is_dist_metadata(path):
                with self._open(layer, member, index) as stream:
                    if stream is None:  # a symlink or special file: nothing installed there
                        hidden.append(path)
                    elif path == DPKG_STATUS:
                        dpkg = parse_dpkg_status(stream.read())
                    else:
                        dists[path] = parse_dist_metadata(stream, path)
        for path in self._tracked():
            if any(_covers(h, path) for h in hidden) or any(
                path.startswith(d + "/") or not d for d in opaque
            ):
                if path == DPKG_STATUS:
                    self._dpkg = None
                else:
                    del self._dists[path]
        self._dists.update(dists)
        if dpkg is not None:
            self._dpkg = dpkg

    @contextlib.contextmanager
    def _open(self, layer: LayerReader, member: tarfile.TarInfo, index: int) -> Iterator[IO[bytes] | None]:
        if not (member.isreg() or member.islnk()):
            yield None
            return
        try:
            stream = layer.extractfile(member)
        except KeyError:
            raise StrataError(
                f"{self.label}: layer {index}: {member.name} is a hard link to {member.linkname}, "
                "which the layer does not hold"
            ) from None
        if stream is None:
            yield None
            return
        with stream:
            yield stream

    def result(self) -> ImagePackages:
        """The packages installed after the layers added so far."""
        python = sorted(self._dists.values(), key=lambda p: (python_name_key(p.name), p.where, p.version))
        return ImagePackages(python=tuple(python), debian=self._dpkg or ())


def image_packages(source: Image) -> ImagePackages:
    """The Python distributions and Debian packages installed in `source`'s merged filesystem.

    Example: `image_packages(read_image(Path("out/tf2.13.1-gpu"))).debian`.
    """
    scan = PackageScan(source.label)
    for index in range(len(source.layers)):
        with source.open_layer(index) as layer:
            scan.add_layer(layer, index)
    return scan.result()


def _diff_id(source: Image, index: int) -> str | None:
    ids = source.diff_ids
    return ids[index] if index < len(ids) else None


def same_layers(a: Image, b: Image) -> bool:
    """Whether both images stack the same layers (then their filesystems, and packages, are equal)."""
    return len(a.layers) == len(b.layers) == len(a.diff_ids) and a.diff_ids == b.diff_ids


def paired_layers(a: Image, b: Image) -> Iterator[tuple[int, LayerReader | None, LayerReader | None]]:
    """Layer `i` of both images, open, lowest first; None past an image's last layer.

    Where both images have the same layer (same diff_id) at `i` it is opened once and handed out twice.
    """
    for index in range(max(len(a.layers), len(b.layers))):
        with contextlib.ExitStack() as stack:
            left = stack.enter_context(a.open_layer(index)) if index < len(a.layers) else None
            shared = (
                left is not None
                and _diff_id(a, index) is not None
                and _diff_id(a, index) == _diff_id(b, index)
            )
            if shared:
                right = left
            else:
                right = stack.enter_context(b.open_layer(index)) if index < len(b.layers) else None
            yield index, left, right


def _pair(
    a: Iterable[InstalledPackage], b: Iterable[InstalledPackage], key: Callable[[str], str]
) -> tuple[PackageChange, ...]:
    """Match packages by name and place, then pair a name left over once on each side (a move: new site)."""
    groups: dict[tuple[str, str], tuple[list[InstalledPackage], list[InstalledPackage]]] = {}
    for side, packages in enumerate((a, b)):
        for package in packages:
            groups.setdefault((key(package.name), package.where), ([], []))[side].append(package)
    changes: list[PackageChange] = []
    removed: list[InstalledPackage] = []
    added: list[InstalledPackage] = []
    for left, right in groups.values():
        versions_b = [p.version for p in right]
        gone = [p for p in left if p.version not in versions_b]
        versions_a = [p.version for p in left]
        new = [p for p in right if p.version not in versions_a]
        if len(gone) == len(new) == 1:
            changes.append(PackageChange(new[0].name, gone[0], new[0]))
        else:
            removed.extend(gone)
            added.extend(new)
    for name in {key(p.name) for p in removed} & {key(p.name) for p in added}:
        gone = [p for p in removed if key(p.name) == name]
        new = [p for p in added if key(p.name) == name]
        if len(gone) == len(new) == 1:
            changes.append(PackageChange(new[0].name, gone[0], new[0]))
            removed.remove(gone[0])
            added.remove(new[0])
    changes.extend(PackageChange(p.name, p, None) for p in removed)
    changes.extend(PackageChange(p.name, None, p) for p in added)

    def order(change: PackageChange) -> tuple[str, str, str]:
        side = change.b or change.a
        assert side is not None
        return (key(change.name), side.where, side.version)

    return tuple(sorted(changes, key=order))


def diff_packages(a: ImagePackages, b: ImagePackages) -> PackageDiff:
    """What was added, removed or changed (version, or place) going from image a to image b."""
    return PackageDiff(
        python=_pair(a.python, b.python, python_name_key),
        debian=_pair(a.debian, b.debian, lambda name: name),
    )


def compare_image_packages(a: Image, b: Image) -> PackageDiff:
    """`diff_packages` of two images, reading each layer they share (same diff_id, same place) once."""
    if same_layers(a, b):
        return PackageDiff()
    scans = (PackageScan(a.label), PackageScan(b.label))
    for index, left, right in paired_layers(a, b):
        if left is not None:
            scans[0].add_layer(left, index)
        if right is not None:
            scans[1].add_layer(right, index)
    return diff_packages(scans[0].result(), scans[1].result())


def _describe(change: PackageChange) -> str:
    if change.a is None or change.b is None:
        package = change.b or change.a
        assert package is not None
        return f"  {'+' if change.a is None else '-'} {change.name} {package.version}  ({package.where})"
    where = change.a.where if change.a.where == change.b.where else f"{change.a.where} -> {change.b.where}"
    return f"  ~ {change.name} {change.a.version} -> {change.b.version}  ({where})"


def render_package_changes(diff: PackageDiff, limit: int | None = None) -> list[str]:
    """Report lines: a count line per ecosystem, then one line per change (at most `limit` each).

    Example line: `  ~ numpy 1.24.3 -> 1.26.4  (usr/local/lib/python3.11/site-packages)`.
    """
    lines = []
    for title, changes in (("python packages", diff.python), ("debian packages", diff.debian)):
        counts = {kind: sum(1 for c in changes if c.kind == kind) for kind in ("changed", "added", "removed")}
        summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "none differ"
        lines.append(f"{title}: {summary}")
        shown = changes if limit is None else changes[:limit]
        lines.extend(_describe(c) for c in shown)
        if len(shown) < len(changes):
            lines.append(f"  ... and {len(changes) - len(shown)} more")
    return lines


def package_diff_to_json(diff: PackageDiff) -> dict[str, Any]:
    """The package changes as plain JSON-able data, each with its `kind`."""

    def side(package: InstalledPackage | None) -> dict[str, str] | None:
        return (
            None
            if package is None
            else {"name": package.name, "version": package.version, "where": package.where}
        )

    return {
        ecosystem: [{"name": c.name, "kind": c.kind, "a": side(c.a), "b": side(c.b)} for c in changes]
        for ecosystem, changes in (("python", diff.python), ("debian", diff.debian))
    }

"""Explain why two images differ: packages, config fields, then layer by layer, file by file.

The questions it answers are "these two builds of one cell should be bit-for-bit equal; what stops them?"
and "what changed between 2.13.1-gpu of last week and today?". The report opens with the Python and Debian
packages added, removed or changed and counts of the paths that differ in the merged filesystems. When both
images have the same number of layers the file comparison is per layer (a difference is pinned to the build
step that made it; layers whose `diff_id` match are not compared); otherwise, or on request, the flattened
filesystems (whiteouts applied) are compared. Small text files that differ come with a unified diff.
A layer both images hold at the same place is read once.
"""

from __future__ import annotations

import difflib
import hashlib
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from builder.errors import StrataError
from builder.oci.canonical import WHITEOUT_PREFIX, XATTR_PAX_PREFIXES, normalize_path
from builder.oci.changes import change_kind
from builder.oci.image import Image, LayerReader
from builder.oci.packages import (
    OPAQUE_WHITEOUT,
    PackageDiff,
    PackageScan,
    diff_packages,
    package_diff_to_json,
    paired_layers,
    render_package_changes,
    same_layers,
)

TEXT_DIFF_MAX_BYTES = 64 * 1024
TEXT_DIFF_MAX_LINES = 40
ENTRY_FIELDS = ("kind", "mode", "uid", "gid", "owner", "size", "mtime", "link", "sha256", "xattrs")

_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.GNUTYPE_SPARSE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


@dataclass(frozen=True)
class FileEntry:
    """What a layer says about one path: the fields a container could observe, plus owner names."""

    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    owner: str
    size: int
    mtime: int
    link: str
    sha256: str | None
    xattrs: tuple[tuple[str, str], ...] = ()
    layer: int = 0

    def differing_fields(self, other: FileEntry, ignore: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """Names of the fields (from ENTRY_FIELDS, minus `ignore`) whose values differ."""
        return tuple(f for f in ENTRY_FIELDS if f not in ignore and getattr(self, f) != getattr(other, f))


@dataclass(frozen=True)
class EntryChange:
    """A path present in only one image, or present in both with differing fields."""

    path: str
    a: FileEntry | None
    b: FileEntry | None
    fields: tuple[str, ...] = ()
    text_diff: str | None = None

    @property
    def kind(self) -> str:
        """`added` (only in b), `removed` (only in a) or `changed`."""
        return change_kind(self.a, self.b)


@dataclass(frozen=True)
class ConfigChange:
    """One config field that differs; `a`/`b` is None where the field is absent."""

    path: str
    a: Any
    b: Any


@dataclass(frozen=True)
class LayerDiff:
    """Layer `index` of both images, whose diff_ids differ, and the files that explain it."""

    index: int
    a_diff_id: str
    b_diff_id: str
    created_by: str | None
    changes: tuple[EntryChange, ...]
    order_differs: bool = False


@dataclass(frozen=True)
class FileSummary:
    """How many paths of the merged filesystem b added, removed or changed relative to a."""

    added: int = 0
    removed: int = 0
    changed: int = 0

    @classmethod
    def of(cls, changes: Iterable[EntryChange]) -> FileSummary:
        """Count `changes` by kind."""
        kinds = [c.kind for c in changes]
        return cls(kinds.count("added"), kinds.count("removed"), kinds.count("changed"))


@dataclass(frozen=True)
class ImageDiff:
    """Everything that differs between images a and b."""

    a_label: str
    b_label: str
    a_id: str
    b_id: str
    config_changes: tuple[ConfigChange, ...] = ()
    layers: tuple[LayerDiff, ...] = ()
    layer_counts: tuple[int, int] = (0, 0)
    flattened: tuple[EntryChange, ...] | None = None
    ignored_fields: tuple[str, ...] = field(default=())
    packages: PackageDiff | None = None
    files: FileSummary | None = None

    @property
    def identical(self) -> bool:
        """Same config digest, hence the same layers and the same Docker image ID."""
        return self.a_id == self.b_id


def entry_from_member(member: tarfile.TarInfo, data_sha256: str | None, layer: int = 0) -> FileEntry:
    """A FileEntry from a tar header (and the sha256 of its data for regular files)."""
    return FileEntry(
        path=normalize_path(member.name),
        kind=_KINDS.get(member.type, f"type-{member.type!r}"),
        mode=member.mode & 0o7777,  # some writers put file-type bits in the mode field
        uid=member.uid,
        gid=member.gid,
        owner=f"{member.uname}:{member.gname}",
        size=member.size if member.isreg() else 0,
        mtime=int(member.mtime),
        link=normalize_path(member.linkname) if member.islnk() else member.linkname,
        sha256=data_sha256,
        xattrs=tuple(
            sorted((k, v) for k, v in member.pax_headers.items() if k.startswith(XATTR_PAX_PREFIXES))
        ),
        layer=layer,
    )


def layer_entries(layer: LayerReader, index: int = 0) -> tuple[dict[str, FileEntry], list[str]]:
    """Every path of a layer tar (last one wins, like extraction) and the order the tar stored them in."""
    entries: dict[str, FileEntry] = {}
    order: list[str] = []
    for member in layer:
        digest = None
        if member.isreg():
            hasher = hashlib.sha256()
            data = layer.extractfile(member)
            if data is not None:
                with data:
                    while chunk := data.read(1 << 20):
                        hasher.update(chunk)
            digest = hasher.hexdigest()
        entry = entry_from_member(member, digest, index)
        entries[entry.path] = entry
        order.append(entry.path)
    entries.pop(".", None)
    return entries, [p for p in order if p != "."]


def diff_entries(
    a: Mapping[str, FileEntry], b: Mapping[str, FileEntry], ignore: frozenset[str] = frozenset()
) -> list[EntryChange]:
    """Paths only in a, only in b, or in both with differing fields (sorted by path)."""
    changes = []
    for path in sorted(a.keys() | b.keys()):
        left, right = a.get(path), b.get(path)
        if left is None or right is None:
            changes.append(EntryChange(path, left, right))
            continue
        differing = left.differing_fields(right, ignore)
        if differing:
            changes.append(EntryChange(path, left, right, differing))
    return changes


def diff_json(a: Any, b: Any, path: str = "") -> list[ConfigChange]:
    """Leaf-level differences between two JSON values, named like `.config.Env[2]`."""
    if isinstance(a, dict) and isinstance(b, dict):
        changes = []
        for key in sorted(a.keys() | b.keys()):
            changes.extend(diff_json(a.get(key), b.get(key), f"{path}.{key}"))
        return changes
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [c for i, (x, y) in enumerate(zip(a, b)) for c in diff_json(x, y, f"{path}[{i}]")]
    return [] if a == b else [ConfigChange(path or ".", a, b)]


def apply_layer(filesystem: dict[str, FileEntry], layer: Mapping[str, FileEntry]) -> None:
    """Apply one layer's entries onto a flattened view, honouring whiteouts and opaque directories."""
    for path in sorted(layer):
        parent, _, name = path.rpartition("/")
        prefix = f"{parent}/" if parent else ""
        if name == OPAQUE_WHITEOUT:
            for existing in [p for p in filesystem if p.startswith(prefix) and p != parent]:
                del filesystem[existing]
        elif name.startswith(WHITEOUT_PREFIX):
            hidden = prefix + name[len(WHITEOUT_PREFIX) :]
            for existing in [p for p in filesystem if p == hidden or p.startswith(hidden + "/")]:
                del filesystem[existing]
    for path, entry in layer.items():
        if not path.rpartition("/")[2].startswith(WHITEOUT_PREFIX):
            filesystem[path] = entry


def _text_diff(left: bytes, right: bytes, path: str) -> str | None:
    try:
        old, new = left.decode(), right.decode()
    except UnicodeDecodeError:
        return None
    lines = list(
        difflib.unified_diff(old.splitlines(), new.splitlines(), f"a/{path}", f"b/{path}", n=1, lineterm="")
    )
    if len(lines) > TEXT_DIFF_MAX_LINES:
        lines = lines[:TEXT_DIFF_MAX_LINES] + [f"... {len(lines) - TEXT_DIFF_MAX_LINES} more lines"]
    return "\n".join(lines)


def _read_small_files(source: Image, wanted: Iterable[FileEntry]) -> dict[tuple[int, str], bytes]:
    by_layer: dict[int, set[str]] = {}
    for entry in wanted:
        by_layer.setdefault(entry.layer, set()).add(entry.path)
    contents = {}
    for index, paths in by_layer.items():
        with source.open_layer(index) as tar:
            for member in tar.getmembers():
                path = normalize_path(member.name)
                if path in paths and member.isreg():
                    data = tar.extractfile(member)
                    if data is not None:
                        contents[(index, path)] = data.read()
    return contents


def _with_text_diffs(changes: list[EntryChange], a: Image, b: Image) -> list[EntryChange]:
    candidates = [
        c
        for c in changes
        if c.a is not None
        and c.b is not None
        and "sha256" in c.fields
        and c.a.kind == c.b.kind == "file"
        and max(c.a.size, c.b.size) <= TEXT_DIFF_MAX_BYTES
    ]
    if not candidates:
        return changes
    left = _read_small_files(a, (c.a for c in candidates if c.a))
    right = _read_small_files(b, (c.b for c in candidates if c.b))
    wanted = {id(c) for c in candidates}
    result = []
    for change in changes:
        if id(change) in wanted and change.a and change.b:
            old = left.get((change.a.layer, change.path))
            new = right.get((change.b.layer, change.path))
            if old is not None and new is not None:
                change = EntryChange(
                    change.path, change.a, change.b, change.fields, _text_diff(old, new, change.path)
                )
        result.append(change)
    return result


def _created_by(config: Mapping[str, Any], layer_index: int) -> str | None:
    """The history line of the step that made layer `layer_index` (empty-layer steps skipped)."""
    steps = [h for h in config.get("history") or [] if not h.get("empty_layer")]
    return steps[layer_index].get("created_by") if layer_index < len(steps) else None


def diff_images(a: Image, b: Image, *, flatten: bool = False, ignore: Iterable[str] = ()) -> ImageDiff:
    """Compare two images read from files.

    `ignore` names FileEntry fields to leave out (e.g. `("mtime", "owner")` for images not canonicalized).
    Unless both stack the same layers, every layer is read (a layer both hold at the same place once), for
    the package section and the merged-filesystem counts.
    Example: `diff_images(read_image(Path("run1")), read_image(Path("run2"))).identical`.
    """
    ignored = frozenset(ignore)
    unknown = ignored - set(ENTRY_FIELDS)
    if unknown:
        raise StrataError(f"cannot ignore {', '.join(sorted(unknown))}: fields are {', '.join(ENTRY_FIELDS)}")
    base = ImageDiff(
        a_label=a.label,
        b_label=b.label,
        a_id=a.config_digest,
        b_id=b.config_digest,
        layer_counts=(len(a.layers), len(b.layers)),
        ignored_fields=tuple(sorted(ignored)),
    )
    if base.identical:
        return replace(base, packages=PackageDiff(), files=FileSummary())
    config_a = {k: v for k, v in a.config.items() if k != "rootfs"}
    config_b = {k: v for k, v in b.config.items() if k != "rootfs"}
    config_changes = tuple(diff_json(config_a, config_b))

    per_layer = not flatten and len(a.layers) == len(b.layers)
    if same_layers(a, b):  # only the config differs: no layer needs opening
        unchanged = replace(base, config_changes=config_changes, packages=PackageDiff(), files=FileSummary())
        return unchanged if per_layer else replace(unchanged, flattened=())
    views: tuple[dict[str, FileEntry], dict[str, FileEntry]] = ({}, {})
    scans = (PackageScan(a.label), PackageScan(b.label))
    layers = []
    for index, left_tar, right_tar in paired_layers(a, b):
        left = layer_entries(left_tar, index) if left_tar is not None else None
        if right_tar is left_tar:  # the same layer in both images: read it once
            right = left
        else:
            right = layer_entries(right_tar, index) if right_tar is not None else None
        for tar, layer, view, scan in zip((left_tar, right_tar), (left, right), views, scans):
            if tar is not None and layer is not None:
                apply_layer(view, layer[0])
                scan.add_layer(tar, index)
        if per_layer and right_tar is not left_tar and left is not None and right is not None:
            layers.append(
                LayerDiff(
                    index=index,
                    a_diff_id=a.diff_ids[index] if index < len(a.diff_ids) else "",
                    b_diff_id=b.diff_ids[index] if index < len(b.diff_ids) else "",
                    created_by=_created_by(b.config, index),
                    changes=tuple(diff_entries(left[0], right[0], ignored)),
                    order_differs=left[1] != right[1],
                )
            )
    merged = diff_entries(views[0], views[1], ignored)
    result = replace(
        base,
        config_changes=config_changes,
        packages=diff_packages(scans[0].result(), scans[1].result()),
        files=FileSummary.of(merged),
    )
    if not per_layer:
        return replace(result, flattened=tuple(_with_text_diffs(merged, a, b)))
    with_text = [
        replace(layer, changes=tuple(_with_text_diffs(list(layer.changes), a, b))) for layer in layers
    ]
    return replace(result, layers=tuple(with_text))


def _describe_change(change: EntryChange) -> str:
    if change.a is None:
        return f"  + {change.path}  (only in b: {change.b.kind if change.b else ''})"
    if change.b is None:
        return f"  - {change.path}  (only in a: {change.a.kind})"
    details = ", ".join(
        "content differs"
        if name == "sha256"
        else f"{name} {getattr(change.a, name)!r} -> {getattr(change.b, name)!r}"
        for name in change.fields
    )
    text = f"  ~ {change.path}  ({details})"
    if change.text_diff:
        text += "\n" + "\n".join("      " + line for line in change.text_diff.splitlines())
    return text


def _describe_changes(changes: Iterable[EntryChange], limit: int) -> list[str]:
    changes = list(changes)
    lines = [_describe_change(c) for c in changes[:limit]]
    if len(changes) > limit:
        lines.append(f"  ... and {len(changes) - limit} more")
    return lines


def render_text(diff: ImageDiff, limit: int = 50) -> str:
    """A report a person reads top to bottom: packages, file counts, config, then layers or files.

    At most `limit` lines per layer, per package ecosystem and for the flattened view.
    """
    if diff.identical:
        return f"identical: {diff.a_label} and {diff.b_label} are both {diff.a_id}"
    lines = [f"a: {diff.a_label}  {diff.a_id}", f"b: {diff.b_label}  {diff.b_id}"]
    if diff.packages is not None:
        lines.extend(render_package_changes(diff.packages, limit))
    if diff.ignored_fields:
        lines.append(f"ignoring file fields: {', '.join(diff.ignored_fields)}")
    if diff.files is not None:
        files = diff.files
        lines.append(
            f"merged filesystem: {files.added} added, {files.removed} removed, {files.changed} changed"
        )
    if diff.layer_counts[0] != diff.layer_counts[1]:
        lines.append(f"layer count differs: {diff.layer_counts[0]} vs {diff.layer_counts[1]}")
    for change in diff.config_changes:
        lines.append(f"config {change.path}: {change.a!r} -> {change.b!r}")
    for layer in diff.layers:
        step = f" ({layer.created_by})" if layer.created_by else ""
        lines.append(f"layer {layer.index}{step}: {len(layer.changes)} path(s) differ")
        lines.extend(_describe_changes(layer.changes, limit))
        if not layer.changes:
            note = (
                "member order"
                if layer.order_differs
                else "header details Strata does not compare (pax records)"
            )
            lines.append(f"  no file differs; the tar bytes differ in {note}")
    if diff.flattened is not None:
        lines.append(f"flattened filesystem: {len(diff.flattened)} path(s) differ")
        lines.extend(_describe_changes(diff.flattened, limit))
    return "\n".join(lines)


def diff_to_json(diff: ImageDiff) -> dict[str, Any]:
    """The diff as plain JSON-able data (for CI artifacts and other tools)."""
    data = asdict(diff)
    data["identical"] = diff.identical
    data["packages"] = package_diff_to_json(diff.packages) if diff.packages is not None else None
    return data

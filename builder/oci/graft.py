"""Grafts: an image whose layer holds an empty directory, read as if that directory held a tree kept elsewhere.

A stand-in build (`builder.plan.install_stage`) copies an empty directory where the real build copies an installed
tree; `graft_image` gives back the image the real build would have made: the layer holding the empty directory is
read with the tree's members under it. Nothing is copied: members are listed, and file data is read from wherever
the tree's reader reads it, when the canonicalizer asks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO

from builder.errors import StrataError
from builder.oci.image import Image, LayerReader, LayerStorage


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


@dataclass(frozen=True)
class Graft:
    """The tree `open_tree()` reads (member names relative to its root) belongs under `path` (e.g. `/opt/strata/x`)."""

    path: str
    open_tree: Callable[[], LayerReader]

    @property
    def name(self) -> str:
        return _norm(self.path)


class GraftedLayer:
    """A layer's members plus a grafted tree's, the tree's renamed under the graft's path."""

    def __init__(self, base: LayerReader, grafts: Sequence[tuple[str, LayerReader]]) -> None:
        self._members: list[tarfile.TarInfo] = []
        # id(member) -> (the reader holding its data, the member as that reader knows it)
        self._source: dict[int, tuple[LayerReader, tarfile.TarInfo]] = {}
        for member in base.getmembers():
            self._members.append(member)
            self._source[id(member)] = (base, member)
        for prefix, tree in grafts:
            for original in tree.getmembers():
                member = _renamed(original, prefix)
                self._members.append(member)
                self._source[id(member)] = (tree, original)

    def getmembers(self) -> list[tarfile.TarInfo]:
        return list(self._members)

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        return iter(self._members)

    def extractfile(self, member: tarfile.TarInfo) -> IO[bytes] | None:
        found = self._source.get(id(member))
        if found is None:
            raise StrataError(f"{member.name}: not a member of this grafted layer")
        reader, original = found
        return reader.extractfile(original)


def _renamed(original: tarfile.TarInfo, prefix: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(posixpath.join(prefix, _norm(original.name)))
    for attr in (
        "mode",
        "uid",
        "gid",
        "size",
        "mtime",
        "type",
        "linkname",
        "uname",
        "gname",
        "devmajor",
        "devminor",
    ):
        setattr(member, attr, getattr(original, attr))
    member.pax_headers = dict(original.pax_headers)
    if original.islnk():  # hard links name a path in the same layer
        member.linkname = posixpath.join(prefix, _norm(original.linkname))
    return member


def graft_target(members: Sequence[tarfile.TarInfo], graft: Graft) -> bool:
    """Whether a layer with `members` is where `graft` goes: it holds the graft's path as a directory and nothing
    under it (pure)."""
    name = graft.name
    holds_dir = any(_norm(m.name) == name and m.isdir() for m in members)
    return holds_dir and not any(_norm(m.name).startswith(name + "/") for m in members)


@dataclass(frozen=True)
class _GraftedStorage:
    base: LayerStorage
    label: str
    first_index: int
    grafts: tuple[Graft, ...]

    @contextlib.contextmanager
    def open_layer(self, index: int) -> Iterator[LayerReader]:
        with self.base.open_layer(index) as reader:
            if index < self.first_index:
                yield reader
                return
            members = reader.getmembers()
            here = [g for g in self.grafts if graft_target(members, g)]
            if not here:
                yield reader
                return
            with contextlib.ExitStack() as stack:
                trees = []
                for graft in here:
                    tree = graft.open_tree()
                    if isinstance(tree, contextlib.AbstractContextManager):
                        tree = stack.enter_context(tree)
                    trees.append((graft.name, tree))
                yield GraftedLayer(reader, trees)

    def open_layer_tar(self, index: int) -> AbstractContextManager[IO[bytes]]:
        raise StrataError(f"{self.label}: a grafted image has no stored layer tars; canonicalize it first")

    def stored_layer_size(self, index: int) -> tuple[int, bool]:
        return self.base.stored_layer_size(index)


def graft_image(image: Image, grafts: Sequence[Graft], first_index: int = 0) -> Image:
    """`image` read with each graft's tree under its path, in the layer (at `first_index` or later) that holds the
    path as an empty directory. The diff_ids in its config are the stand-in's: canonicalizing computes the real ones.

    Every graft must find its layer: a stand-in that lost its directory is an error, never an image without the tree.
    """
    missing = []
    for graft in grafts:
        found = False
        for index in range(first_index, len(image.layers)):
            with image.open_layer(index) as reader:
                if graft_target(reader.getmembers(), graft):
                    found = True
                    break
        if not found:
            missing.append(graft.path)
    if missing:
        raise StrataError(
            f"{image.label}: no layer holds the empty directory {', '.join(missing)} to graft onto"
        )
    storage = _GraftedStorage(image.storage, image.label, first_index, tuple(grafts))
    return dataclasses.replace(image, storage=storage)

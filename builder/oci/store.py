"""Image stores: the places an image can be found by its content, read from and written to.

Three implement `ImageStore`: the Docker engine (`builder.engine.store.EngineStore`), a registry
(`registry_sync.publish.store.RegistryStore`) and an OCI layout directory (`builder.oci.layout_store.LayoutStore`).
Moving an image is `destination.put(source.get(ref), tags)`: `strata push` is the registry's put of the engine's
get; a build that finds a node in the registry is the engine's put of the registry's get.

Images are found by their content tag (`[registry/]repository:h-<content hash>`): the hash alone names no
repository, and a store holding many repositories needs one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from builder.errors import StrataError
from builder.oci.image import Image


class ImageMismatch(StrataError):
    """A store was given one image and got another (another config digest): nothing was stored."""


@dataclass(frozen=True)
class Stored:
    """An image a store holds: the reference it goes by there (engine: image ID; registry: repository@digest;
    layout: manifest digest) and its size in bytes as the store counts it (0 when it does not say)."""

    ref: str
    size: int = 0


class ImageStore(Protocol):
    """Somewhere images live. `name` says which in messages (e.g. "registry cache")."""

    name: str

    def find(self, content_ref: str) -> str | None:
        """The reference of the complete image tagged `content_ref` here, or None when there is none."""
        ...

    def get(self, ref: str) -> Image:
        """The image `ref` (as `find` returned it, or a tag) as an Image to read or to put elsewhere."""
        ...

    def put(self, image: Image, tags: Sequence[str]) -> Stored:
        """Store `image` under `tags` and say how it is known here now."""
        ...

    def close(self) -> None:
        """Release connections and temporary files."""
        ...


class TargetStore(ImageStore, Protocol):
    """A store images are gathered into (the engine a build fills): it also names what it holds with more tags."""

    def tag(self, ref: str, tags: Sequence[str]) -> Stored:
        """Give the image `ref` (held here) `tags` as well; say how it is known here."""
        ...

    def untag(self, image_id: str, tags: Sequence[str]) -> None:
        """Remove each of `tags` that names the image `image_id` here (the image goes with its last tag)."""
        ...


@dataclass(frozen=True)
class Found:
    """Where `StoreList.find` found an image: the store and the image's reference there."""

    store: ImageStore
    ref: str


StoreOpener = Callable[[], "ImageStore | None"]


@dataclass
class StoreList:
    """Stores asked in order, each opened only when first asked (so a lookup the first store answers never opens
    the others: a no-op build never contacts the registry). An opener returns None for a store that is off or
    cannot be reached (it says why itself)."""

    openers: Sequence[StoreOpener]
    _opened: dict[int, ImageStore | None] = field(default_factory=dict)

    def stores(self) -> list[ImageStore]:
        """The stores opened so far (for closing)."""
        return [s for s in self._opened.values() if s is not None]

    def _store(self, index: int) -> ImageStore | None:
        if index not in self._opened:
            self._opened[index] = self.openers[index]()
        return self._opened[index]

    def find(
        self, content_ref: str, on_error: Callable[[ImageStore, StrataError], None] = lambda store, exc: None
    ) -> Found | None:
        """The first store holding `content_ref`, and its reference there. A store whose lookup fails is handed
        to `on_error` and passed over."""
        for index in range(len(self.openers)):
            store = self._store(index)
            if store is None:
                continue
            try:
                ref = store.find(content_ref)
            except StrataError as exc:
                on_error(store, exc)
                continue
            if ref is not None:
                return Found(store, ref)
        return None

    def close(self) -> None:
        """Close every store opened."""
        for store in self.stores():
            store.close()

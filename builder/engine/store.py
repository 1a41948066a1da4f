"""The Docker engine as an image store (`builder.oci.store.ImageStore`).

`find` answers "does the engine hold this node's image?" by its content tag and label; `get` reads an engine
image as an `Image`: straight from a local overlay2 storage when it can (`layer_store`), else through
`docker save` into a temporary file (a remote or rootless engine: `docker save` writes the manifest after every
layer, and canonicalizing visits a layer's members out of order, so the archive must be on disk; it is deleted
with the Image, or when the store closes). `put` brings an image into the engine: one a registry holds is
pulled by the engine itself, by digest (it checks what it got); any other is loaded from an OCI layout written
for the purpose.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import docker.errors

from builder.engine.layer_store import store_image
from builder.engine.transfer import engine_load, save_image
from builder.errors import StrataError
from builder.oci.archive import read_image
from builder.oci.image import Image, with_label
from builder.oci.layout_store import LayoutStore, pack_layout
from builder.oci.store import ImageMismatch, Stored
from builder.plan.graph import LABEL_HASH


class PullFailed(StrataError):
    """The engine could not pull an image from its registry."""


def content_hash_of(content_ref: str) -> str:
    """The content hash a content tag names: `repo:h-<hash>` -> `<hash>`."""
    return content_ref.rpartition(":")[2].removeprefix("h-")


class EngineStore:
    """The local engine's images. `layer_read` "save" (STRATA_LAYER_READ) never reads its storage directly;
    `scratch` is where `docker save` archives go when it must be used (default: the system's temporary dir)."""

    name = "engine"

    def __init__(self, client: Any, layer_read: str = "", scratch: Path | None = None) -> None:
        self.client = client
        self.layer_read = layer_read
        self.scratch = scratch
        self._saved: list[Path] = []

    def find(self, content_ref: str) -> str | None:
        """The ID of the image tagged `content_ref` when its content-hash label agrees with the tag, else None."""
        try:
            image = self.client.images.get(content_ref)
        except docker.errors.ImageNotFound:
            return None
        labels = (image.attrs.get("Config") or {}).get("Labels") or {}
        return str(image.id) if labels.get(LABEL_HASH) == content_hash_of(content_ref) else None

    def get(self, ref: str) -> Image:
        """The engine's image `ref`, read from its storage, or from a `docker save` archive where it must."""
        image = store_image(self.client, ref, self.layer_read)
        if image is not None:
            return image
        directory = Path(tempfile.mkdtemp(prefix="strata-save-", dir=self.scratch))
        self._saved.append(directory)
        try:
            saved = read_image(save_image(self.client, ref, directory / "image.tar"))
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        # The archive lives as long as something can still read the image's layers from it.
        weakref.finalize(saved.storage, shutil.rmtree, directory, True)
        return with_label(saved, ref)

    def put(self, image: Image, tags: Sequence[str]) -> Stored:
        """Bring `image` into the engine under `tags`; its ID there is its config digest, or this is an error."""
        if image.origin is not None:
            self._pull(image)
        else:
            with tempfile.TemporaryDirectory(prefix="strata-load-", dir=self.scratch) as work:
                layout = Path(work) / "layout"
                LayoutStore(layout).put(image, [])
                engine_load(
                    self.client,
                    lambda out: pack_layout(layout, out),
                    image.label,
                    partial=False,
                    expected=lambda: image.config_digest,
                )
        return self.tag(image.config_digest, tags)

    def _pull(self, image: Image) -> None:
        origin = image.origin
        assert origin is not None
        auth = None
        if origin.username is not None:
            auth = {"username": origin.username, "password": origin.password}
        try:
            errors = [
                str(event.get("error") or event.get("errorDetail"))
                for event in self.client.api.pull(
                    origin.repository, tag=origin.digest, stream=True, decode=True, auth_config=auth
                )
                if event.get("error") or event.get("errorDetail")
            ]
            if errors:
                raise PullFailed(f"docker pull {origin.reference} failed: {errors[-1].splitlines()[0]}")
            pulled = self.client.images.get(origin.reference)
        except docker.errors.DockerException as exc:
            text = getattr(exc, "explanation", None) or str(exc)
            raise PullFailed(f"docker pull {origin.reference} failed: {str(text).splitlines()[0]}") from None
        if pulled.id != image.config_digest:
            self._forget(origin.reference)
            raise ImageMismatch(
                f"its id is {pulled.id}, but the registry's config digest is {image.config_digest}"
            )

    def _forget(self, ref: str) -> None:
        try:
            self.client.images.remove(ref, noprune=False)
        except docker.errors.DockerException:
            pass

    def tag(self, ref: str, tags: Sequence[str]) -> Stored:
        """Give the engine's image `ref` every tag of `tags` (`repository:tag`); its ID and unpacked size."""
        image = self.client.images.get(ref)
        for name in tags:
            repository, tag = name.rsplit(":", 1)
            image.tag(repository, tag)
        return Stored(str(image.id), int(image.attrs.get("Size", 0)))

    def untag(self, image_id: str, tags: Sequence[str]) -> None:
        """Remove each of `tags` that names the engine's image `image_id` (a tag naming another image stays)."""
        for name in tags:
            try:
                if self.client.images.get(name).id == image_id:
                    self.client.images.remove(name, noprune=False)
            except docker.errors.ImageNotFound:
                continue

    def close(self) -> None:
        """Remove the `docker save` archives this store wrote."""
        for directory in self._saved:
            shutil.rmtree(directory, ignore_errors=True)
        self._saved.clear()

    def __enter__(self) -> EngineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

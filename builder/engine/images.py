"""Canonicalize the engine's images: read one (`EngineStore.get`), rewrite it, write a layout or load it back.

The only module of the canonical/diff feature that talks to Docker; everything else works on files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors

from builder.engine.client import engine_client
from builder.engine.layer_store import DiffDirLayer
from builder.engine.store import EngineStore
from builder.engine.transfer import MissingBaseLayers, engine_load
from builder.errors import StrataError
from builder.oci.archive import read_image
from builder.oci.canonical import (
    CanonicalImage,
    CanonicalPolicy,
    StreamedImage,
    canonicalize_source,
    write_docker_archive,
)
from builder.oci.graft import Graft, graft_image
from builder.oci.image import Image
from builder.oci.layout_store import pack_layout
from builder.settings import Settings

# `strata diff` reads engine images as `docker save` writes them: a hard link there is data to compare.
SAVED = "save"


def load_layout(client: Any, image: CanonicalImage) -> str:
    """Load a canonical layout into the engine and return the image ID it got.

    The ID must equal the config digest; anything else means the engine rewrote the image, and is an error.
    A partial layout (`image.absent`) loads only where the engine already holds the absent layers.
    """
    engine_load(
        client,
        lambda out: pack_layout(image.layout, out),
        str(image.layout),
        partial=bool(image.absent),
        expected=lambda: image.config_digest,
    )
    return image.config_digest


def canonicalize_image(
    ref: str,
    layout: Path,
    policy: CanonicalPolicy | None = None,
    tag: str | None = None,
    load: bool = False,
    *,
    client: Any,
    base_ref: str | None = None,
    layer_read: str = "",
) -> CanonicalImage:
    """Canonicalize the engine's image `ref` into the OCI layout `layout`; with `load`, load it back.

    With `load` and a `tag`, the engine then has `tag` pointing at the canonical image, whose ID is the
    config digest. Example: `canonicalize_image("strata/tf:2.15-gpu-build", Path("out/tf2.15-gpu"),
    CanonicalPolicy(epoch=1700000000), tag="strata/tf:2.15-gpu", load=True)`.

    `base_ref` (with `load`) names the canonical image `ref` was built FROM: its layers are already in the
    engine, so only the layers on top of it are rewritten and loaded, and the layout holds just those.
    """
    policy = policy or CanonicalPolicy()
    base = _diff_ids(client, base_ref) if load and base_ref else ()
    with EngineStore(client, layer_read) as engine:
        source = engine.get(ref)
        image = canonicalize_source(source, layout, policy, tag, canonical_base=base)
        if load:
            try:
                load_layout(client, image)
            except MissingBaseLayers:
                image = canonicalize_source(source, layout, policy, tag)  # the parent went away: load it all
                load_layout(client, image)
    return image


def load_canonical(
    ref: str,
    policy: CanonicalPolicy,
    tag: str,
    client: Any,
    base_ref: str | None = None,
    layer_read: str = "",
    grafts: Sequence[tuple[str, str]] = (),
) -> StreamedImage:
    """Canonicalize the engine's image `ref` straight into the engine as `tag`; no layout is written.

    The canonical layers are streamed into `docker load` as they are rewritten. `base_ref` as for
    `canonicalize_image`. `grafts` (path in the image, directory on this host) put each directory's tree under
    its path, in the layer of `ref` that holds the path as an empty directory (`builder.oci.graft`): `ref` is then
    a stand-in build. Returns the loaded image; its ID is its config digest.
    """
    base = _diff_ids(client, base_ref) if base_ref else ()
    with EngineStore(client, layer_read) as engine:
        source = engine.get(ref)
        if grafts:
            trees = [Graft(path, partial(DiffDirLayer, Path(directory))) for path, directory in grafts]
            source = graft_image(source, trees, first_index=len(base))
        try:
            return _load_stream(client, source, policy, tag, base)
        except MissingBaseLayers:
            return _load_stream(client, source, policy, tag, ())  # the parent went away: load it all


_worker_client: Any = None


def warm_up() -> None:
    """Nothing, in a fresh worker process: importing this module was the work (docker, the canonicalizer)."""


def load_canonical_in_worker(
    settings: Settings,
    ref: str,
    policy: CanonicalPolicy,
    tag: str,
    base_ref: str | None = None,
    grafts: Sequence[tuple[str, str]] = (),
) -> StreamedImage:
    """`load_canonical` as a process-pool task: one engine client per worker, errors that pickle as StrataError.

    Rewriting a layer is Python work that holds the GIL; in its own process, two nodes canonicalize on two
    cores instead of taking turns on one.
    """
    global _worker_client
    try:
        if _worker_client is None:
            _worker_client = engine_client(settings)
        return load_canonical(ref, policy, tag, _worker_client, base_ref, settings.layer_read, grafts)
    except (docker.errors.DockerException, OSError) as exc:
        raise StrataError(f"{tag}: {type(exc).__name__}: {exc}") from None


def _load_stream(
    client: Any, source: Image, policy: CanonicalPolicy, tag: str, base: Sequence[str]
) -> StreamedImage:
    written: list[StreamedImage] = []

    def write(out: IO[bytes]) -> None:
        written.append(write_docker_archive(source, out, policy, tag, base))

    engine_load(
        client,
        write,
        tag,
        partial=bool(base),
        expected=lambda: written[0].config_digest if written else None,
    )
    return written[0]


def _diff_ids(client: Any, ref: str) -> tuple[str, ...]:
    """The diff_ids of the engine's image `ref`, or none if it is gone (then nothing is reused)."""
    try:
        return tuple(client.images.get(ref).attrs.get("RootFS", {}).get("Layers") or ())
    except docker.errors.ImageNotFound:
        return ()


def open_image(spec: str, scratch: Path, connect: Callable[[], Any]) -> Image:
    """An image named on a command line: a path (archive or layout) if one exists, else an engine reference.

    Engine images are read as `docker save` writes them, saved under `scratch` (which must outlive the returned
    Image); `connect` gives the engine client, and is called only when `spec` is not a path.
    """
    path = Path(spec)
    if path.exists():
        return read_image(path)
    return EngineStore(connect(), SAVED, scratch).get(spec)

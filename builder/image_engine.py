"""Move images between the Docker engine and files, for canonicalizing and diffing.

The only module of the canonical/diff feature that talks to Docker; everything else works on files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import docker
import docker.errors

from builder.canonical import CanonicalImage, CanonicalPolicy, canonicalize_source
from builder.errors import HostError, StrataError
from builder.image_archive import ImageSource, pack_layout, read_image

CHUNK = 1 << 20


def engine_client() -> Any:
    """A Docker SDK client for the local engine (DOCKER_HOST honoured); HostError if none answers."""
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as exc:
        raise HostError(f"Docker engine: not reachable ({exc}); start dockerd or set DOCKER_HOST") from None
    return client


def save_image(client: Any, ref: str, archive: Path) -> Path:
    """Write the engine's image `ref` to `archive` as `docker save` would."""
    try:
        image = client.images.get(ref)
        with open(archive, "wb") as out:
            out.writelines(image.save(chunk_size=CHUNK, named=False))
    except docker.errors.ImageNotFound:
        raise StrataError(f"image {ref}: not in the Docker engine (build or load it first)") from None
    except docker.errors.APIError as exc:
        raise StrataError(f"image {ref}: Docker could not save it ({exc.explanation})") from None
    return archive


def load_layout(client: Any, image: CanonicalImage) -> str:
    """Load a canonical layout into the engine and return the image ID it got.

    The ID must equal the config digest; anything else means the engine rewrote the image, and is an error.
    """
    with tempfile.TemporaryFile(prefix="strata-load-") as packed:
        pack_layout(image.layout, packed)
        packed.seek(0)
        try:
            loaded = client.images.load(packed)
        except docker.errors.APIError as exc:
            raise StrataError(f"{image.layout}: docker load refused it ({exc.explanation})") from None
    ids = {item.id for item in loaded}
    if ids != {image.config_digest}:
        raise StrataError(f"{image.layout}: docker load gave {sorted(ids)}, expected {image.config_digest}")
    return image.config_digest


def canonicalize_image(
    ref: str,
    layout: Path,
    policy: CanonicalPolicy | None = None,
    tag: str | None = None,
    load: bool = False,
    client: Any | None = None,
) -> CanonicalImage:
    """Canonicalize the engine's image `ref` into the OCI layout `layout`; with `load`, load it back.

    With `load` and a `tag`, the engine then has `tag` pointing at the canonical image, whose ID is the
    config digest. Example: `canonicalize_image("strata/tf:2.15-gpu-build", Path("out/tf2.15-gpu"),
    CanonicalPolicy(epoch=1700000000), tag="strata/tf:2.15-gpu", load=True)`.
    """
    client = client or engine_client()
    with tempfile.TemporaryDirectory(prefix="strata-save-") as scratch:
        archive = save_image(client, ref, Path(scratch) / "image.tar")
        image = canonicalize_source(read_image(archive), layout, policy or CanonicalPolicy(), tag)
    if load:
        load_layout(client, image)
    return image


def open_image(spec: str, scratch: Path, client: Any | None = None) -> ImageSource:
    """An image named on a command line: a path (archive or layout) if one exists, else an engine reference.

    Engine images are saved under `scratch`, which must outlive the returned ImageSource.
    """
    path = Path(spec)
    if path.exists():
        return read_image(path)
    client = client or engine_client()
    archive = scratch / f"{hashlib.sha256(spec.encode()).hexdigest()[:16]}.tar"
    save_image(client, spec, archive)
    return dataclasses.replace(read_image(archive), label=spec)

"""Move images between the Docker engine and files, for canonicalizing and diffing.

The only module of the canonical/diff feature that talks to Docker; everything else works on files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, cast

import docker
import docker.errors

from builder.engine.client import engine_client
from builder.engine.layer_store import store_image
from builder.errors import StrataError
from builder.oci.archive import ImageSource, LayeredImage, pack_layout, read_image
from builder.oci.canonical import (
    CanonicalImage,
    CanonicalPolicy,
    StreamedImage,
    canonicalize_source,
    write_docker_archive,
)
from builder.plan.graph import LABEL_HASH, LayerNode
from builder.settings import Settings

CHUNK = 1 << 20


def existing_image(client: Any, node: LayerNode) -> Any | None:
    """The engine's image for this node's content hash, if present and labelled with that hash."""
    try:
        image = client.images.get(node.cache_ref)
    except docker.errors.ImageNotFound:
        return None
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return image if labels.get(LABEL_HASH) == node.content_hash else None


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


def _piped_chunks(write: Callable[[IO[bytes]], object]) -> Iterator[bytes]:
    """What `write(stream)` writes, as a stream of 1 MB chunks, written on a thread: no temporary copy on disk.

    The chunks go through a short in-memory queue, not an OS pipe: a pipe's 64 KB buffer would make the two
    threads hand gigabytes over in small pieces, each a pair of kernel copies. An error raised by `write` is
    re-raised here once the stream ends; if the reader stops early, the writer is told and gives up.
    """
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUED_CHUNKS)
    reader_gone = threading.Event()
    failure: list[BaseException] = []

    def put(chunk: bytes | None) -> None:
        while not reader_gone.is_set():
            try:
                chunks.put(chunk, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _ReaderGone

    def produce() -> None:
        sink = _ChunkSink(put)
        try:
            write(cast(IO[bytes], sink))  # the writers only call write() and flush()
            sink.flush()
        except _ReaderGone:
            return  # the engine refused the upload; its error is the one to report
        except BaseException as exc:  # noqa: BLE001 -- re-raised on the reading side
            failure.append(exc)
        with contextlib.suppress(_ReaderGone):
            put(None)

    producer = threading.Thread(target=produce, name="strata-pack", daemon=True)
    producer.start()
    try:
        while (chunk := chunks.get()) is not None:
            yield chunk
    finally:
        reader_gone.set()
        producer.join()
    if failure:
        raise failure[0]


QUEUED_CHUNKS = 4


class _ReaderGone(Exception):
    """The side reading the chunks stopped before the end."""


class _ChunkSink:
    """A write-only stream that hands what it is given on in chunks of at least CHUNK bytes."""

    def __init__(self, put: Callable[[bytes], None]) -> None:
        self.put = put
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        if not self.buffer and len(data) >= CHUNK:
            self.put(bytes(data))  # a large piece goes on as it is (bytes(b) of bytes is b: no copy)
            return len(data)
        self.buffer += data
        if len(self.buffer) >= CHUNK:
            self.put(bytes(self.buffer))
            self.buffer.clear()
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            self.put(bytes(self.buffer))
            self.buffer.clear()


def load_layout(client: Any, image: CanonicalImage) -> str:
    """Load a canonical layout into the engine and return the image ID it got.

    The ID must equal the config digest; anything else means the engine rewrote the image, and is an error.
    A partial layout (`image.absent`) loads only where the engine already holds the absent layers.
    """
    _engine_load(
        client,
        lambda out: pack_layout(image.layout, out),
        str(image.layout),
        partial=bool(image.absent),
        expected=lambda: image.config_digest,
    )
    return image.config_digest


def _engine_load(
    client: Any,
    write: Callable[[IO[bytes]], object],
    label: str,
    partial: bool,
    expected: Callable[[], str | None],
) -> None:
    """`docker load` what `write` streams; the engine must report exactly the image ID `expected()` names.

    `expected` is asked once the upload ends, so a stream may decide its image while it is written.
    """
    try:
        loaded = client.images.load(_piped_chunks(write))
    except docker.errors.APIError as exc:
        if partial and "no such file" in str(exc.explanation):
            raise MissingBaseLayers(
                f"{label}: the engine no longer has the parent layers this image builds on"
            ) from None
        raise StrataError(f"{label}: docker load refused it ({exc.explanation})") from None
    ids = {item.id for item in loaded}
    want = expected()
    if ids != {want}:
        raise StrataError(f"{label}: docker load gave {sorted(ids)}, expected {want or 'a complete upload'}")


class MissingBaseLayers(StrataError):
    """A partial layout could not be loaded: the engine lost the layers it left out."""


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
    with tempfile.TemporaryDirectory(prefix="strata-save-") as scratch:
        source = _engine_source(client, ref, Path(scratch), layer_read)
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
) -> StreamedImage:
    """Canonicalize the engine's image `ref` straight into the engine as `tag`; no layout is written.

    The canonical layers are streamed into `docker load` as they are rewritten. `base_ref` as for
    `canonicalize_image`. Returns the loaded image; its ID is its config digest.
    """
    base = _diff_ids(client, base_ref) if base_ref else ()
    with tempfile.TemporaryDirectory(prefix="strata-save-") as scratch:
        source = _engine_source(client, ref, Path(scratch), layer_read)
        try:
            return _load_stream(client, source, policy, tag, base)
        except MissingBaseLayers:
            return _load_stream(client, source, policy, tag, ())  # the parent went away: load it all


_worker_client: Any = None


def warm_up() -> None:
    """Nothing, in a fresh worker process: importing this module was the work (docker, the canonicalizer)."""


def load_canonical_in_worker(
    settings: Settings, ref: str, policy: CanonicalPolicy, tag: str, base_ref: str | None = None
) -> StreamedImage:
    """`load_canonical` as a process-pool task: one engine client per worker, errors that pickle as StrataError.

    Rewriting a layer is Python work that holds the GIL; in its own process, two nodes canonicalize on two
    cores instead of taking turns on one.
    """
    global _worker_client
    try:
        if _worker_client is None:
            _worker_client = engine_client(settings)
        return load_canonical(ref, policy, tag, _worker_client, base_ref, settings.layer_read)
    except (docker.errors.DockerException, OSError) as exc:
        raise StrataError(f"{tag}: {type(exc).__name__}: {exc}") from None


def _engine_source(client: Any, ref: str, scratch: Path, layer_read: str) -> LayeredImage:
    """The engine's image `ref` to read: from a local overlay2 engine's storage, else `docker save`d to `scratch`."""
    return store_image(client, ref, layer_read) or read_image(save_image(client, ref, scratch / "image.tar"))


def _load_stream(
    client: Any, source: LayeredImage, policy: CanonicalPolicy, tag: str, base: Sequence[str]
) -> StreamedImage:
    written: list[StreamedImage] = []

    def write(out: IO[bytes]) -> None:
        written.append(write_docker_archive(source, out, policy, tag, base))

    _engine_load(
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


def open_image(spec: str, scratch: Path, connect: Callable[[], Any]) -> ImageSource:
    """An image named on a command line: a path (archive or layout) if one exists, else an engine reference.

    Engine images are saved under `scratch`, which must outlive the returned ImageSource; `connect` gives the
    engine client, and is called only when `spec` is not a path.
    """
    path = Path(spec)
    if path.exists():
        return read_image(path)
    archive = scratch / f"{hashlib.sha256(spec.encode()).hexdigest()[:16]}.tar"
    save_image(connect(), spec, archive)
    return dataclasses.replace(read_image(archive), label=spec)

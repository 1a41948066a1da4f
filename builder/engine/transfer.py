"""Images in and out of the Docker engine as streams: `docker save` into a file, `docker load` from a writer.

What goes into `docker load` is written on a thread and handed over in 1 MB chunks, so no copy of the image is
ever put on disk; the engine must answer with exactly the image ID the writer promised.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import docker
import docker.errors

from builder.errors import StrataError

CHUNK = 1 << 20


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


def engine_load(
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

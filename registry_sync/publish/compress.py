"""Deterministic gzip for pushed layers, and an on-disk cache of compressed layers keyed by diff_id.

The same uncompressed layer always gives the same compressed bytes (and so the same blob digest) as long as
the zlib version and level are the same; `COMPRESSION` names both and is recorded in the manifest as the
annotation `io.strata.compression`, so a reader can tell why two pushes of one layer differ if zlib changed.

A layer is always one deflate stream fed the same chunks, so running several layers at once (threads: zlib,
crc32 and sha256 release the GIL) or reading a layer on another thread (`read_ahead`) changes no byte.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder.engine.gc import remove_cached_files
from builder.oci.digest import StreamDigest, sha256_hex
from builder.plan.retention import CachedFile

COMPRESSION_LEVEL = 6
# gzip header: magic, deflate, no flags (so no file name, no comment), mtime 0, XFL 0, OS 255 ("unknown").
GZIP_HEADER = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x00\xff"
COMPRESSION = f"gzip;zlib={zlib.ZLIB_RUNTIME_VERSION};level={COMPRESSION_LEVEL};mtime=0;os=255"
COMPRESSION_ANNOTATION = "io.strata.compression"
CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class CompressedLayer:
    """A layer compressed with `COMPRESSION`: digests and sizes of both forms, and where the gzip bytes are."""

    diff_id: str
    uncompressed_size: int
    digest: str
    size: int
    path: Path


@dataclass(frozen=True)
class GzipSummary:
    """What one pass of `gzip_stream` saw: the digest and size of its input and of its output."""

    diff_id: str
    uncompressed_size: int
    digest: str
    size: int


def gzip_stream(
    source: IO[bytes], sink: IO[bytes], chunk_size: int = CHUNK_SIZE, *, read_ahead: bool = False
) -> GzipSummary:
    """Compress `source` into `sink` deterministically, hashing both sides in the same pass.

    With `read_ahead`, another thread reads `source` and hashes it while this one compresses (at most
    `READ_AHEAD_CHUNKS` chunks in between): the same bytes, sooner when reading costs CPU (a layer rebuilt from
    the engine's tar-split). Example: `gzip_stream(open("layer.tar", "rb"), open("layer.tar.gz", "wb")).digest`.
    """
    raw, gz = StreamDigest(), StreamDigest()
    crc = 0

    def emit(data: bytes) -> None:
        if data:
            gz.update(data)
            sink.write(data)

    def hashed_chunks() -> Iterator[bytes]:
        nonlocal crc
        while chunk := source.read(chunk_size):
            raw.update(chunk)
            crc = zlib.crc32(chunk, crc)
            yield chunk

    compressor = zlib.compressobj(
        COMPRESSION_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY
    )
    emit(GZIP_HEADER)
    chunks = _read_ahead(hashed_chunks()) if read_ahead else hashed_chunks()
    try:
        for chunk in chunks:
            emit(compressor.compress(chunk))
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    emit(compressor.flush(zlib.Z_FINISH))
    emit(struct.pack("<II", crc & 0xFFFFFFFF, raw.size & 0xFFFFFFFF))
    return GzipSummary(raw.digest, raw.size, gz.digest, gz.size)


READ_AHEAD_CHUNKS = 4  # bounds the memory a read-ahead layer holds: 4 chunks of CHUNK_SIZE


def _read_ahead(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """`chunks`, produced on a thread of their own; an error there is raised here; closing stops the thread."""
    handoff: queue.Queue[tuple[bytes | None, BaseException | None]] = queue.Queue(READ_AHEAD_CHUNKS)
    stop = threading.Event()

    def put(item: tuple[bytes | None, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put((chunk, None)):
                    return
            put((None, None))
        except BaseException as exc:  # noqa: BLE001 -- handed to the consuming thread, which raises it
            put((None, exc))

    reader = threading.Thread(target=produce, name="strata-layer-read", daemon=True)
    reader.start()
    try:
        while True:
            chunk, error = handoff.get()
            if error is not None:
                raise error
            if chunk is None:
                return
            yield chunk
    finally:
        stop.set()
        reader.join()


def compression_variant() -> str:
    """The part of a cache entry's name that says which zlib and level made it."""
    return sha256_hex(COMPRESSION.encode())[:12]


class CompressedLayerCache:
    """Compressed layers on disk, keyed by diff_id and the compression settings, so a re-push never recompresses.

    Entries are written to a temporary file and renamed into place, so a crash never leaves a half entry.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        # A different zlib or level gives different bytes: keep those entries apart.
        self._variant = compression_variant()

    def _paths(self, diff_id: str) -> tuple[Path, Path]:
        hexpart = diff_id.removeprefix("sha256:")
        base = self.root / f"{hexpart}.{self._variant}"
        return base.with_suffix(base.suffix + ".gz"), base.with_suffix(base.suffix + ".json")

    def get(self, diff_id: str) -> CompressedLayer | None:
        """The cached compressed form of layer `diff_id`, or None when it is not cached (or damaged)."""
        blob_path, meta_path = self._paths(diff_id)
        try:
            meta = json.loads(meta_path.read_text())
            size = blob_path.stat().st_size
        except (OSError, ValueError):
            return None
        if meta.get("diff_id") != diff_id or meta.get("size") != size:
            return None
        return CompressedLayer(diff_id, int(meta["uncompressed_size"]), str(meta["digest"]), size, blob_path)

    def add(
        self, source: IO[bytes], expected_diff_id: str | None = None, *, read_ahead: bool = False
    ) -> CompressedLayer:
        """Compress `source` into the cache and return the entry (`read_ahead`: see `gzip_stream`).

        When `expected_diff_id` is given and the uncompressed bytes hash differently, nothing is cached and
        ValueError names both digests; on any error nothing is left behind (not even a partial file).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".partial-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as sink:
                summary = gzip_stream(source, sink, read_ahead=read_ahead)
            if expected_diff_id is not None and summary.diff_id != expected_diff_id:
                raise ValueError(f"layer content hashes to {summary.diff_id}, expected {expected_diff_id}")
            blob_path, meta_path = self._paths(summary.diff_id)
            os.replace(tmp, blob_path)
        finally:
            tmp.unlink(missing_ok=True)
        meta = {
            "diff_id": summary.diff_id,
            "uncompressed_size": summary.uncompressed_size,
            "digest": summary.digest,
            "size": summary.size,
            "compression": COMPRESSION,
        }
        # A name of its own: two pushes (or threads) adding the same layer at once must not share it.
        fd, meta_tmp = tempfile.mkstemp(dir=self.root, prefix=".partial-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(meta, sort_keys=True))
            os.replace(meta_tmp, meta_path)
        finally:
            Path(meta_tmp).unlink(missing_ok=True)
        return CompressedLayer(
            summary.diff_id, summary.uncompressed_size, summary.digest, summary.size, blob_path
        )


def list_compressed_layers(root: Path) -> list[CachedFile]:
    """Every entry of the compressed-layer cache at `root`, keyed by the diff_id of the layer it holds.

    Entries another zlib or level made (never read again) and half-written files a killed push left get the
    key "" (nothing references them).
    """
    variant = compression_variant()
    entries: list[CachedFile] = []
    seen: set[Path] = set()
    for blob in sorted(root.glob("*.gz")) if root.is_dir() else []:
        hexpart, _, rest = blob.name.partition(".")
        meta = blob.with_suffix(".json")
        paths = (blob, meta) if meta.exists() else (blob,)
        seen.update(paths)
        key = f"sha256:{hexpart}" if rest == f"{variant}.gz" else ""
        entries.append(CachedFile(key, paths, sum(p.stat().st_size for p in paths)))
    for stray in sorted(root.iterdir()) if root.is_dir() else []:
        if stray not in seen and stray.is_file():
            entries.append(CachedFile("", (stray,), stray.stat().st_size))
    return entries


def prune_compressed_layers(entries: list[CachedFile]) -> int:
    """Delete compressed-layer cache entries (from list_compressed_layers); returns the bytes freed."""
    return remove_cached_files(entries)

"""Deterministic gzip: same input, same bytes; valid gzip with a fixed header; cache keyed by diff_id."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import threading

import pytest

from registry_sync.publish.compress import (
    COMPRESSION,
    CompressedLayerCache,
    gzip_stream,
    list_compressed_layers,
    prune_compressed_layers,
)


def test_same_input_gives_same_bytes_and_valid_gzip():
    data = os.urandom(200_000) + b"a" * 300_000
    first, second = io.BytesIO(), io.BytesIO()
    summary = gzip_stream(io.BytesIO(data), first, chunk_size=4096)
    assert gzip_stream(io.BytesIO(data), second, chunk_size=65536) == summary
    assert first.getvalue() == second.getvalue()
    assert gzip.decompress(first.getvalue()) == data
    assert summary.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert summary.digest == "sha256:" + hashlib.sha256(first.getvalue()).hexdigest()
    assert (summary.uncompressed_size, summary.size) == (len(data), len(first.getvalue()))


def test_header_has_no_name_zero_mtime_and_fixed_os():
    out = io.BytesIO()
    gzip_stream(io.BytesIO(b"x"), out)
    header = out.getvalue()[:10]
    assert header == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def test_descriptor_names_compressor_level_and_mtime():
    assert COMPRESSION.startswith("gzip;zlib=")
    assert ";level=6;mtime=0" in COMPRESSION


def test_cache_returns_what_it_stored_and_misses_unknown(tmp_path):
    cache = CompressedLayerCache(tmp_path)
    data = b"layer" * 1000
    entry = cache.add(io.BytesIO(data))
    assert cache.get(entry.diff_id) == entry
    assert gzip.decompress(entry.path.read_bytes()) == data
    assert cache.get("sha256:" + "0" * 64) is None


def test_cache_refuses_content_that_does_not_match_the_expected_diff_id(tmp_path):
    cache = CompressedLayerCache(tmp_path)
    with pytest.raises(ValueError, match="expected sha256:" + "1" * 64):
        cache.add(io.BytesIO(b"other"), expected_diff_id="sha256:" + "1" * 64)
    assert list(tmp_path.iterdir()) == []


def test_damaged_cache_entry_is_a_miss(tmp_path):
    cache = CompressedLayerCache(tmp_path)
    entry = cache.add(io.BytesIO(b"abc" * 100))
    entry.path.write_bytes(b"truncated")
    assert cache.get(entry.diff_id) is None


def test_gc_lists_entries_by_diff_id_and_strays_without_a_key(tmp_path):
    cache = CompressedLayerCache(tmp_path)
    kept = cache.add(io.BytesIO(b"layer one" * 1000))
    other = cache.add(io.BytesIO(b"layer two" * 1000))
    (tmp_path / ".partial-abc").write_bytes(b"half")
    (tmp_path / f"{'e' * 64}.000000000000.gz").write_bytes(b"an entry another zlib made")
    entries = {e.key: e for e in list_compressed_layers(tmp_path)}
    assert set(entries) == {kept.diff_id, other.diff_id, ""}
    assert entries[kept.diff_id].paths == (kept.path, kept.path.with_suffix(".json"))
    assert entries[kept.diff_id].size == kept.size + kept.path.with_suffix(".json").stat().st_size
    strays = [e for e in list_compressed_layers(tmp_path) if e.key == ""]
    assert sorted(p.name for e in strays for p in e.paths) == [".partial-abc", f"{'e' * 64}.000000000000.gz"]
    freed = prune_compressed_layers([entries[other.diff_id], *strays])
    assert freed == entries[other.diff_id].size + sum(e.size for e in strays)
    assert [e.key for e in list_compressed_layers(tmp_path)] == [kept.diff_id]
    assert cache.get(kept.diff_id) is not None and cache.get(other.diff_id) is None
    assert list_compressed_layers(tmp_path / "missing") == []


def test_read_ahead_gives_the_same_bytes(tmp_path):
    data = os.urandom(300_000) + b"b" * 3_000_000 + os.urandom(100_000)
    plain, ahead = io.BytesIO(), io.BytesIO()
    summary = gzip_stream(io.BytesIO(data), plain, chunk_size=65536)
    assert gzip_stream(io.BytesIO(data), ahead, chunk_size=65536, read_ahead=True) == summary
    assert ahead.getvalue() == plain.getvalue()


class _BrokenSource:
    def __init__(self, good_reads: int) -> None:
        self.reads = 0
        self.good_reads = good_reads

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads > self.good_reads:
            raise OSError(5, "Input/output error")
        return b"x" * 1000


def test_a_read_ahead_error_is_raised_to_the_caller_and_nothing_is_cached(tmp_path):
    cache = CompressedLayerCache(tmp_path)
    with pytest.raises(OSError, match="Input/output error"):
        cache.add(_BrokenSource(good_reads=3), read_ahead=True)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name == "strata-layer-read"]


def test_a_failing_sink_stops_the_read_ahead_thread(tmp_path):
    class FullDisk(io.BytesIO):
        def write(self, data):  # type: ignore[no-untyped-def, override]
            if self.tell() > 100_000:  # the reading thread is running by then
                raise OSError(28, "No space left on device")
            return super().write(data)

    with pytest.raises(OSError, match="No space left"):
        gzip_stream(io.BytesIO(os.urandom(1 << 22)), FullDisk(), chunk_size=4096, read_ahead=True)
    assert not [t for t in threading.enumerate() if t.name == "strata-layer-read"]

"""The in-memory chunk stream that carries a canonical image into `docker load` (no engine needed here)."""

from __future__ import annotations

import threading

import pytest

from builder.engine.transfer import CHUNK, _piped_chunks
from builder.errors import StrataError


def test_the_stream_carries_every_byte_in_order_in_large_chunks():
    pieces = [bytes([i % 251]) * size for i, size in enumerate([10, CHUNK + 7, 3, 2 * CHUNK, 5, 700_000])]

    def write(out):
        for piece in pieces:
            out.write(piece)

    chunks = list(_piped_chunks(write))
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(chunk) >= CHUNK for chunk in chunks[:-1])
    assert len(chunks) < len(pieces) + 2


def test_a_writer_error_reaches_the_reader_after_what_was_written():
    def write(out):
        out.write(b"x" * (CHUNK + 1))
        raise StrataError("layer 3: data could not be read")

    received = []
    with pytest.raises(StrataError, match="layer 3"):
        for chunk in _piped_chunks(write):
            received.append(chunk)
    assert sum(map(len, received)) == CHUNK + 1


def test_a_reader_that_stops_early_releases_the_writer():
    stopped = threading.Event()

    def write(out):
        try:
            for _ in range(1000):  # far more than the queue holds: the writer would block forever
                out.write(b"y" * CHUNK)
        finally:
            stopped.set()

    stream = _piped_chunks(write)
    assert len(next(stream)) == CHUNK
    stream.close()  # what happens when the engine refuses the upload mid-way
    assert stopped.wait(5), "the writer thread is still blocked after the reader left"

"""The loopback wheelhouse: what pip inside a `--network host` build downloads, byte for byte."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from builder.build.wheelserver import WheelServer


def test_serves_each_node_directory_byte_for_byte_on_loopback(tmp_path: Path) -> None:
    node = tmp_path / "tf2.13.1-cpu-py3.11"
    node.mkdir()
    wheel = node / "numpy-1.24.3-cp311-cp311-manylinux_2_17_x86_64.whl"
    wheel.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # not a multiple of any buffer size

    with WheelServer(tmp_path) as server:
        url = server.url_for(node.name)
        assert url == f"http://127.0.0.1:{server.port}/{node.name}/"
        with urllib.request.urlopen(url + wheel.name, timeout=10) as response:
            body = response.read()
            length = int(response.headers["Content-Length"])
        with urllib.request.urlopen(url, timeout=10) as response:
            listing = response.read().decode()

    assert length == wheel.stat().st_size
    assert hashlib.sha256(body).digest() == hashlib.sha256(wheel.read_bytes()).digest()
    assert wheel.name in listing  # pip's --find-links reads the directory page


def test_a_wheel_the_node_does_not_lock_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()
    with WheelServer(tmp_path) as server:
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(server.url_for("node") + "other-1.0-py3-none-any.whl", timeout=10)
    assert error.value.code == 404

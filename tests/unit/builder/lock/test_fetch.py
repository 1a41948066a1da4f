"""Fetching from a PyPI mirror: the sha256 is a wheel's identity, its locked URL only where to look first.

Real servers on loopback (a PEP 503 tree over HTTP) and a real file: index, as pip's configuration names them.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder.lock.fetch import WheelhouseError, fetch_wheels, wheel_path
from builder.plan.lockfile import PinnedWheel

NAME = "six-1.17.0-py2.py3-none-any.whl"
DATA = b"the bytes of a wheel that was locked\n" * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def pep503_tree(root: Path, data: bytes, fragment: bool = True) -> None:
    """root/simple/six/index.html linking ../../files/<NAME> (as a mirror such as bandersnatch lays it out)."""
    (root / "files").mkdir(parents=True)
    (root / "files" / NAME).write_bytes(data)
    (root / "simple" / "six").mkdir(parents=True)
    anchor = f"#sha256={hashlib.sha256(data).hexdigest()}" if fragment else ""
    (root / "simple" / "six" / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="../../files/{NAME}{anchor}">{NAME}</a></body></html>'
    )


class Recording(SimpleHTTPRequestHandler):
    hits: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.hits.append(self.path)
        super().do_GET()


@pytest.fixture
def http_mirror(tmp_path: Path) -> Iterator[tuple[str, list[str], Path]]:
    """(index URL, paths requested, document root) of a PEP 503 mirror served on loopback."""
    root = tmp_path / "http-mirror"
    root.mkdir()
    hits: list[str] = []
    handler = type("Handler", (Recording,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple", hits, root
    server.shutdown()
    server.server_close()


def dead_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def wheel(url: str) -> PinnedWheel:
    return PinnedWheel("six", "1.17.0", SHA, url)


def test_locked_host_down_the_file_mirror_has_it(tmp_path: Path) -> None:
    pep503_tree(tmp_path / "pypi", DATA)
    down = f"http://{dead_address()}"
    indexes = [f"{down}/simple", f"file://{tmp_path}/pypi/simple"]
    result = fetch_wheels(tmp_path / "cache", [wheel(f"{down}/files/{NAME}")], environ={}, indexes=indexes)
    assert (result.downloaded, result.bytes_downloaded) == (1, len(DATA))
    assert wheel_path(tmp_path / "cache", wheel("x/" + NAME)).read_bytes() == DATA


def test_a_locked_url_on_an_unknown_host_is_never_asked(tmp_path: Path, http_mirror) -> None:  # type: ignore[no-untyped-def]
    index, hits, root = http_mirror
    pep503_tree(root, DATA, fragment=False)
    # The same server under another name: an origin nobody configured (origins are compared, not addresses).
    rogue = f"http://localhost:{index.split(':')[2].split('/')[0]}/rogue/{NAME}"
    fetch_wheels(tmp_path / "cache", [wheel(rogue)], environ={}, indexes=[index])
    assert hits == ["/simple/six/", f"/files/{NAME}"]  # the mirror's page and file; never /rogue/


def test_a_mirror_serving_other_bytes_is_refused(tmp_path: Path, http_mirror) -> None:  # type: ignore[no-untyped-def]
    index, hits, root = http_mirror
    pep503_tree(root, b"other bytes under the same name", fragment=False)
    with pytest.raises(
        WheelhouseError, match=rf"cannot fetch {NAME}: .*/files/{NAME}: .*does not match the lock"
    ):
        fetch_wheels(tmp_path / "cache", [wheel(f"{index[:-7]}/files/{NAME}")], environ={}, indexes=[index])
    assert hits.count(f"/files/{NAME}") == 1  # wrong bytes are not worth a second try
    assert not wheel_path(tmp_path / "cache", wheel(NAME)).exists()


def test_a_mirror_link_naming_other_bytes_is_not_downloaded(tmp_path: Path, http_mirror) -> None:  # type: ignore[no-untyped-def]
    index, hits, root = http_mirror
    pep503_tree(root, b"other bytes", fragment=True)
    with pytest.raises(WheelhouseError, match="its locked URL is not allowed"):
        fetch_wheels(tmp_path / "cache", [wheel(f"https://evil.example/{NAME}")], environ={}, indexes=[index])
    assert hits == ["/simple/six/"]


def test_no_mirror_and_a_refused_url(tmp_path: Path) -> None:
    with pytest.raises(WheelhouseError) as failed:
        fetch_wheels(tmp_path / "cache", [wheel(f"https://evil.example/{NAME}")], environ={})
    assert str(failed.value) == (
        f"cannot fetch {NAME}: its locked URL is not allowed (https://evil.example is neither "
        "https://files.pythonhosted.org nor a configured package index) and no configured index has it"
    )

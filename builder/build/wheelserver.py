"""Serve the per-node wheelhouse directories on loopback only, for `--network host` builds.

This works with BuildKit and the legacy builder alike and never sends wheels as build context: pip inside the
build fetches exactly the files the node's lock names, and checks each against its sha256 (--require-hashes).
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from types import TracebackType


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


class WheelServer:
    """`with WheelServer(root) as server: server.url_for("tf2.13.1-cpu-py3.11")` → http://127.0.0.1:PORT/…/"""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="strata-wheelhouse", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url_for(self, node_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/{node_id}/"

    def __enter__(self) -> WheelServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

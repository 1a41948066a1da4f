"""Faults: a registry killed mid-push (between chunks and in the middle of a chunk's body) and restarted, wrong
password, missing CA, unreachable registry, HTTP 500. Each failure must be one line naming the registry; a push
resumes at the registry's offset, and a re-run after a crash completes without re-uploading."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry_sync.publish.push import push_archive
from registry_sync.registry.auth import Credentials
from registry_sync.registry.client import (
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryUnreachable,
    RetryPolicy,
)
from registry_sync.registry.server import ServerLayout, ServerSettings, registry_status, start_registry

pytestmark = pytest.mark.engine
CHUNK = 512 * 1024
PAYLOAD_LAYER_MIN = 2_000_000


def _kill_registry(settings: ServerSettings) -> None:
    """SIGKILL the registry and wait until its port is closed, so the client's next request meets a dead server."""
    pid = registry_status(settings.data_dir).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while registry_status(settings.data_dir).running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not registry_status(settings.data_dir).running, f"registry pid {pid} survived SIGKILL"


def test_registry_killed_mid_upload_and_restarted_resumes_without_resending(
    embedded_registry, test_archives, archive_facts, tmp_path
):
    restarted = threading.Event()
    killed = threading.Event()

    def kill_once_midway(digest: str, offset: int) -> None:
        if offset >= 2 * CHUNK and not killed.is_set():
            killed.set()
            _kill_registry(embedded_registry)
            # it comes back while the client is still retrying the next chunk
            threading.Timer(1.0, lambda: (start_registry(embedded_registry), restarted.set())).start()

    retry = RetryPolicy(attempts=10, first_delay=0.25, max_delay=2.0, max_total_seconds=30)
    with RegistryClient(embedded_registry.address, retry=retry) as client:
        result = push_archive(
            client,
            test_archives.v1,
            "strata/crash",
            ["1.0.0"],
            cache_dir=tmp_path,
            chunk_size=CHUNK,
            on_progress=kill_once_midway,
        )
        assert restarted.is_set(), "the registry was never killed: the test did not exercise a crash"
        assert client.manifest_digest("strata/crash", "1.0.0") == result.manifest_digest
        for digest in [result.config_digest, *result.layer_digests]:
            assert client.blob_size("strata/crash", digest) is not None
    # Resumed at the registry's offset. The chunk in flight when the registry died may have been written to a
    # socket whose peer was already gone (the kernel tells the client only when it reads the answer), so it counts
    # as sent; anything more would be bytes the registry held being sent again. Restarting the blob from zero
    # would resend at least 2 * CHUNK (the kill happens at offset >= 2 * CHUNK).
    total = sum(result.layer_sizes) + archive_facts.config_size
    assert total <= result.bytes_uploaded <= total + CHUNK, (result.bytes_uploaded, total)


def test_push_failing_on_crash_is_completed_by_rerun_without_reuploading(
    embedded_registry, test_archives, archive_facts, fast_retry, tmp_path
):
    def kill_in_big_layer(digest: str, offset: int) -> None:
        if offset >= 2 * CHUNK:
            _kill_registry(embedded_registry)

    client = RegistryClient(embedded_registry.address, retry=fast_retry)
    with client, pytest.raises(RegistryUnreachable) as failed:
        push_archive(
            client,
            test_archives.v1,
            "strata/rerun",
            ["1.0.0"],
            cache_dir=tmp_path,
            chunk_size=CHUNK,
            on_progress=kill_in_big_layer,
        )
    assert str(failed.value) == (
        f"registry {embedded_registry.address} unreachable (connection refused) while pushing strata/rerun"
    )

    start_registry(embedded_registry)
    with RegistryClient(embedded_registry.address, retry=fast_retry) as client:
        assert client.list_tags("strata/rerun") == []  # no tag may point at a manifest that is not there
        blobs = [archive_facts.config_digest, *archive_facts.layer_digests]
        present_before = {d for d in blobs if client.blob_size("strata/rerun", d) is not None}
        assert present_before, "the first run should have completed some blobs before the crash"
        assert len(present_before) < len(blobs), "the crash should have interrupted an upload"

        result = push_archive(client, test_archives.v1, "strata/rerun", ["1.0.0"], cache_dir=tmp_path)

        assert set(result.blobs_skipped) == present_before
        assert not present_before & set(result.blobs_uploaded)
        assert client.list_tags("strata/rerun") == ["1.0.0"]
        assert client.manifest_digest("strata/rerun", "1.0.0") == result.manifest_digest
        for digest in blobs:
            assert client.blob_size("strata/rerun", digest) is not None


def test_wrong_password_is_one_clear_line(secure_registry, registry_secrets, fast_retry):
    client = RegistryClient(
        secure_registry,
        credentials=Credentials("strata", "wrong"),
        ca_file=registry_secrets.ca_cert,
        retry=fast_retry,
    )
    with client, pytest.raises(RegistryAuthError) as failed:
        client.ping()
    assert str(failed.value) == f"registry {secure_registry} rejected the credentials for user strata (401)"


def test_right_password_pushes_over_tls(
    secure_registry, registry_secrets, test_archives, fast_retry, tmp_path
):
    password = registry_secrets.password_file.read_text().strip()
    client = RegistryClient(
        secure_registry,
        credentials=Credentials("strata", password),
        ca_file=registry_secrets.ca_cert,
        retry=fast_retry,
    )
    with client:
        result = push_archive(client, test_archives.v1, "strata/secure", ["1.0.0"], cache_dir=tmp_path)
        assert client.manifest_digest("strata/secure", "1.0.0") == result.manifest_digest


def test_no_credentials_says_how_to_give_them(secure_registry, registry_secrets, fast_retry):
    with (
        RegistryClient(secure_registry, ca_file=registry_secrets.ca_cert, retry=fast_retry) as client,
        pytest.raises(RegistryAuthError, match="requires credentials while listing tags of strata/x"),
    ):
        client.list_tags("strata/x")


def test_untrusted_certificate_is_reported(secure_registry, fast_retry):
    with (
        RegistryClient(f"https://{secure_registry}", retry=fast_retry) as client,
        pytest.raises(RegistryUnreachable, match="TLS certificate not trusted"),
    ):
        client.ping()


def test_unreachable_registry_is_one_clear_line(test_archives, unused_address, fast_retry, tmp_path):
    address = unused_address
    client = RegistryClient(address, retry=fast_retry)
    with client, pytest.raises(RegistryUnreachable) as failed:
        push_archive(client, test_archives.v1, "strata/tensorflow", ["1.0.0"], cache_dir=tmp_path)
    assert (
        str(failed.value)
        == f"registry {address} unreachable (connection refused) while pulling strata/tensorflow"
    )


class _Always500(http.server.BaseHTTPRequestHandler):
    hits = 0

    def _fail(self) -> None:
        type(self).hits += 1
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _fail

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broken_registry() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Always500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_registry_answering_500_is_reported_after_bounded_retries(broken_registry, fast_retry):
    _Always500.hits = 0
    client = RegistryClient(broken_registry, retry=fast_retry)
    with client, pytest.raises(RegistryError) as failed:
        client.ping()
    assert str(failed.value) == (
        f"registry {broken_registry} answered 500 (Internal Server Error) while pinging, after 3 attempts"
    )
    assert _Always500.hits == fast_retry.attempts


# -- a registry killed while a chunk's body is on the wire ------------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Exchange:
    """One request through the cutting proxy: what the client sent, what the registry answered."""

    method: str
    path: str
    content_range: str | None
    body_bytes: int
    status: int = 0  # 0: cut, no answer
    range: str | None = None


class CuttingProxy:
    """A pass-through proxy for the embedded registry that records every request and cuts one PATCH: it forwards
    `forward(len(body))` bytes of that chunk's body, waits until the registry has stored them, SIGKILLs the
    registry, drops the client's connection without an answer and starts the registry again a second later.
    The Host header is kept, so the registry's upload Locations point back at the proxy."""

    def __init__(
        self, registry: ServerSettings, cut_patch_number: int, forward: Callable[[int], int]
    ) -> None:
        self.registry = registry
        self.cut_patch_number = cut_patch_number
        self.forward = forward
        self.log: list[Exchange] = []
        self.stored_at_cut: int | None = None
        self.restarted = threading.Event()
        self._patches = 0
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _upload_file(self, path: str) -> Path:
        repository, _, rest = path.split("?", 1)[0].removeprefix("/v2/").partition("/blobs/uploads/")
        return (
            ServerLayout(self.registry.data_dir).storage
            / f"docker/registry/v2/repositories/{repository}/_uploads/{rest.strip('/')}/data"
        )

    def _cut(self, upstream: http.client.HTTPConnection, exchange: Exchange, body: bytes, start: int) -> None:
        part = body[: self.forward(len(body))]
        upstream.send(part)
        data = self._upload_file(exchange.path)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the registry writes through a 4 KiB buffer
            if data.exists() and data.stat().st_size >= start + len(part) - 4096:
                break
            time.sleep(0.02)
        self.stored_at_cut = data.stat().st_size - start
        _kill_registry(self.registry)
        while registry_status(self.registry.data_dir).running:
            time.sleep(0.02)
        threading.Timer(1.0, lambda: (start_registry(self.registry), self.restarted.set())).start()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                exchange = Exchange(self.command, self.path, self.headers.get("Content-Range"), len(body))
                proxy.log.append(exchange)
                cut = False
                if self.command == "PATCH":
                    proxy._patches += 1
                    cut = proxy._patches == proxy.cut_patch_number
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.registry.port, timeout=60)
                try:
                    upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for key, value in self.headers.items():
                        if key.lower() not in _HOP_BY_HOP:
                            upstream.putheader(key, value)
                    upstream.endheaders()
                    if cut:
                        start = int((exchange.content_range or "0-0").split("-")[0])
                        proxy._cut(upstream, exchange, body, start)
                        self.close_connection = True  # no answer at all: the client sees the connection drop
                        return
                    upstream.send(body)
                    answer = upstream.getresponse()
                    data = answer.read()
                except (OSError, http.client.HTTPException):
                    exchange.status = 502  # the registry is down
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                finally:
                    upstream.close()
                exchange.status, exchange.range = answer.status, answer.getheader("Range")
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in _HOP_BY_HOP | {"content-length"}:
                        self.send_header(key, value)
                length = answer.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler


def _upload_through(proxy: CuttingProxy, tmp_path: Path, size: int) -> tuple[bytes, str, int]:
    data = os.urandom(size)
    (tmp_path / "blob").write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    retry = RetryPolicy(attempts=10, first_delay=0.25, max_delay=2.0, max_total_seconds=30)
    with RegistryClient(proxy.address, retry=retry) as client:
        sent = client.upload_file("strata/cut", digest, tmp_path / "blob", chunk_size=CHUNK)
        assert client.blob_size("strata/cut", digest) == size  # the registry verified the digest on commit
    assert proxy.restarted.is_set(), "the registry was never killed: the test did not exercise a crash"
    return data, digest, sent


def _patch_bytes(log: list[Exchange]) -> int:
    return sum(e.body_bytes for e in log if e.method in ("PATCH", "PUT"))


def test_killed_as_a_chunk_starts_arriving_the_upload_resumes_at_the_registrys_offset(
    embedded_registry, tmp_path
):
    """The connection drops while the third chunk is being sent and the registry stored none of it: the client
    asks the registry for its offset (GET on the upload URL, `Range`) and resumes there, in the same session;
    only the lost chunk goes out twice."""
    size = 5 * CHUNK + 1234
    with CuttingProxy(embedded_registry, cut_patch_number=3, forward=lambda n: 0) as proxy:
        _, _, sent = _upload_through(proxy, tmp_path, size)
    assert proxy.stored_at_cut == 0
    cut = next(i for i, e in enumerate(proxy.log) if e.method == "PATCH" and e.status == 0)
    after = [e for e in proxy.log[cut + 1 :] if e.status != 502]  # 502: asked while the registry was down
    status, resumed = after[0], after[1]
    assert (status.method, status.status, status.range) == ("GET", 204, f"0-{2 * CHUNK - 1}")
    assert status.path.split("?")[0] == proxy.log[cut].path.split("?")[0]  # the same upload session
    assert resumed.method == "PATCH" and resumed.content_range == f"{2 * CHUNK}-{3 * CHUNK - 1}"
    assert not any(e.method == "POST" for e in proxy.log[cut:])  # never started over
    assert _patch_bytes(proxy.log) == sent == size + CHUNK  # the lost chunk, and nothing else, twice


def test_killed_in_the_middle_of_a_chunk_body_the_client_asks_before_it_sends_again(
    embedded_registry, tmp_path
):
    """Half of the third chunk reaches the registry's storage before it is killed. The client never sends that
    chunk again blindly: it asks the registry for its offset first. distribution 2.8 (Debian's docker-registry,
    the embedded registry) cannot answer: a stored size other than the one in its upload state makes it cancel
    the upload ("upload resumed at wrong offest" [sic], BLOB_UPLOAD_INVALID), so the blob starts over in a new
    session and completes, verified. A registry that reports the size it stored is resumed from there, as the
    test above shows for a chunk of which nothing was stored."""
    size = 5 * CHUNK + 1234
    with CuttingProxy(embedded_registry, cut_patch_number=3, forward=lambda n: n // 2) as proxy:
        _, _, sent = _upload_through(proxy, tmp_path, size)
    assert proxy.stored_at_cut is not None and CHUNK // 2 - 4096 <= proxy.stored_at_cut <= CHUNK // 2
    cut = next(i for i, e in enumerate(proxy.log) if e.method == "PATCH" and e.status == 0)
    after = [e for e in proxy.log[cut + 1 :] if e.status != 502]
    assert (after[0].method, after[0].status) == ("GET", 404)  # asked, and the registry had cancelled
    assert after[0].path.split("?")[0] == proxy.log[cut].path.split("?")[0]
    assert after[1].method == "POST" and after[2].content_range == f"0-{CHUNK - 1}"
    assert not any(e.method == "PATCH" and e.content_range == proxy.log[cut].content_range for e in after[:2])
    assert _patch_bytes(proxy.log) == sent == 3 * CHUNK + size
    log = ServerLayout(embedded_registry.data_dir).log.read_text(errors="replace")
    assert "upload resumed at wrong offest" in log  # sic: distribution 2.8's own spelling

"""Faults: a registry killed mid-push and restarted, wrong password, missing CA, unreachable registry, HTTP 500.
Each failure must be one line naming the registry; a re-run after a crash completes without re-uploading."""

from __future__ import annotations

import http.server
import os
import signal
import threading
from collections.abc import Iterator

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
from registry_sync.registry.server import ServerSettings, registry_status, start_registry

pytestmark = pytest.mark.engine
CHUNK = 512 * 1024
PAYLOAD_LAYER_MIN = 2_000_000


def _kill_registry(settings: ServerSettings) -> None:
    pid = registry_status(settings.data_dir).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


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
    # resumed at the registry's offset: every byte sent exactly once
    assert result.bytes_uploaded == sum(result.layer_sizes) + archive_facts.config_size


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

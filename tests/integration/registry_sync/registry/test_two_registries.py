"""Credentials stay with their registry: `strata sync` (the real CLI) from a bearer-token registry (Docker Hub's
kind, here distribution 2.8 with a token service) to the embedded registry (htpasswd over TLS), with
STRATA_REGISTRY_USER/PASSWORD set for the whole job as main.yml does. The token registry and its token service
must never see that password; the source is reached with the identity token `docker login` stored for it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ADMIN, ALICE, FAST
from token_auth import RecordingProxy, TokenRegistry, free_port

from builder.oci.media_types import DOCKER_MANIFEST_V2
from registry_sync.registry.auth import Credentials
from registry_sync.registry.client import RegistryClient
from registry_sync.registry.server import ServerLayout, ServerSettings, start_registry, stop_registry

pytestmark = pytest.mark.engine


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(address, strata's password, CA file) of an embedded registry with htpasswd auth and TLS."""
    settings = ServerSettings(
        data_dir=tmp_path / "embedded", port=free_port(), tls=True, htpasswd=True, trust_in_engine=False
    )
    start_registry(settings)
    layout = ServerLayout(settings.data_dir)
    yield settings.address, layout.password_file.read_text().strip(), layout.ca_cert
    stop_registry(settings.data_dir)


def pushed_source(registry: TokenRegistry) -> tuple[str, bytes]:
    """An image in the token registry's a/app:v1: (its manifest digest, its layer bytes)."""
    layer = os.urandom(300_000)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_V2,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": digest_of(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": digest_of(layer),
                }
            ],
        }
    ).encode()
    with RegistryClient(registry.address, credentials=Credentials(*ADMIN), retry=FAST) as admin:
        admin.upload_bytes("a/app", digest_of(config), config)
        admin.upload_bytes("a/app", digest_of(layer), layer)
        return admin.put_manifest("a/app", "v1", manifest, DOCKER_MANIFEST_V2), layer


def test_sync_sends_the_environments_password_only_to_its_registry(
    token_registry: TokenRegistry, embedded, run_strata, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    dst, password, ca = embedded
    digest, layer = pushed_source(token_registry)
    ts = token_registry.token_service
    ts.clear()
    refresh = ts.new_refresh_token(ALICE[0])
    with RecordingProxy(
        token_registry.url
    ) as src:  # records every Authorization the source registry receives
        docker_config = tmp_path / "docker"
        docker_config.mkdir()
        auth = base64.b64encode(b"alice:").decode()
        (docker_config / "config.json").write_text(
            json.dumps({"auths": {f"http://{src.address}": {"auth": auth, "identitytoken": refresh}}})
        )
        env = {
            "STRATA_HOME": str(tmp_path / "home"),  # not the embedded registry's own state: no shortcut to it
            "DOCKER_CONFIG": str(docker_config),
            "STRATA_REGISTRY_USER": "strata",
            "STRATA_REGISTRY_PASSWORD": password,
        }
        args = ["sync", f"{src.address}/a/app:v1", f"{dst}/mirror/app", "--dst-ca-file", str(ca)]

        # Without saying which registry the password is for, no registry gets it.
        refused = run_strata(*args, env=env, timeout=300)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip().splitlines()[-1] == (
            f"strata: registry {dst} requires credentials while pulling mirror/app (401); log in with docker, "
            "or set STRATA_REGISTRY_USER and STRATA_REGISTRY_PASSWORD (sent only to the matrix's registry and to "
            "the hosts in STRATA_REGISTRY_AUTH_HOSTS)"
        )

        # The matrix's registry (STRATA_REGISTRY) is the destination: the password goes there and only there.
        done = run_strata(*args, env={**env, "STRATA_REGISTRY": dst}, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"copied {src.address}/a/app:v1 -> {dst}/mirror/app@{digest}")
        # or a host named in STRATA_REGISTRY_AUTH_HOSTS
        args[2] = f"{dst}/mirror/again"
        again = run_strata(*args, env={**env, "STRATA_REGISTRY_AUTH_HOSTS": f"other:1,{dst}"}, timeout=300)
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith(f"copied {src.address}/a/app:v1 -> {dst}/mirror/again@{digest}")

        secret_basic = base64.b64encode(f"strata:{password}".encode()).decode()
        # the source registry saw bearer tokens only, never a password
        seen_by_source = [s.authorization for s in src.seen if s.authorization]
        assert seen_by_source and all(a.startswith("Bearer ") for a in seen_by_source)
        assert not any(secret_basic in a or password in a for a in seen_by_source)
        # its token service saw alice's identity token, POSTed, and nothing else
        requests = ts.token_requests()
        assert requests and {(r.method, r.user, r.authorization) for r in requests} == {
            ("POST", "alice", None)
        }
        assert {dict(r.form)["refresh_token"] for r in requests} == {refresh}
        assert all(password not in repr(r) for r in ts.seen)

    with RegistryClient(dst, credentials=Credentials("strata", password), ca_file=ca, retry=FAST) as check:
        assert check.manifest_digest("mirror/app", "v1") == digest
        assert check.blob_size("mirror/app", digest_of(layer)) == len(layer)

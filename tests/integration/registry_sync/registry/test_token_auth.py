"""Strata's registry client end to end against distribution 2.8 with Docker token auth (a bearer-token registry):
the token flows (password, identity token, anonymous), scopes, expiry, mounts, and where credentials may go."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
import traceback
from pathlib import Path

import httpx
import pytest
from conftest import ADMIN, ALICE, BOB, FAST
from token_auth import RecordingProxy, SigningKey, TokenRegistry, User, decode_jwt_unverified, libtrust_kid

from builder.oci.media_types import DOCKER_MANIFEST_V2
from registry_sync.registry.auth import Credentials
from registry_sync.registry.client import (
    RegistryAccessDenied,
    RegistryAuthError,
    RegistryClient,
)

pytestmark = pytest.mark.engine


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TinyImage:
    """A one-layer Docker schema2 image: random layer bytes, a config, a manifest."""

    def __init__(self, size: int = 2048) -> None:
        self.layer = os.urandom(size)
        self.config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [digest_of(self.layer)]},
            }
        ).encode()
        descriptor = {"mediaType": "application/vnd.docker.container.image.v1+json"}
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST_V2,
                "config": {**descriptor, "size": len(self.config), "digest": digest_of(self.config)},
                "layers": [
                    {
                        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(self.layer),
                        "digest": digest_of(self.layer),
                    }
                ],
            }
        ).encode()

    @property
    def layer_digest(self) -> str:
        return digest_of(self.layer)

    def push(self, client: RegistryClient, repository: str, tag: str) -> str:
        client.upload_bytes(repository, digest_of(self.config), self.config)
        client.upload_bytes(repository, self.layer_digest, self.layer)
        return client.put_manifest(repository, tag, self.manifest, DOCKER_MANIFEST_V2)


def assert_clean_one_line(exc: BaseException, *secrets: str) -> None:
    """A StrataError the CLI prints as one line: no newline, no chained traceback, no secret in it."""
    text = str(exc)
    assert "\n" not in text, text
    assert exc.__cause__ is None, repr(exc.__cause__)
    assert exc.__context__ is None or exc.__suppress_context__, repr(exc.__context__)
    assert len(traceback.format_exception_only(type(exc), exc)) == 1
    for secret in secrets:
        assert secret not in text


def basic_users(seen) -> set[tuple[str, str] | None]:  # type: ignore[no-untyped-def]
    return {s.basic for s in seen}


# -- the fixture is a faithful token registry ------------------------------------------------------------------


def test_kid_is_the_libtrust_fingerprint_and_the_registry_checks_it(token_registry: TokenRegistry) -> None:
    from cryptography.hazmat.primitives import serialization

    kid = token_registry.key.kid
    spki = token_registry.key.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(spki).digest()[:30]).decode()
    assert re.fullmatch(r"([A-Z2-7]{4}:){11}[A-Z2-7]{4}", kid)
    assert (
        kid
        == ":".join(b32[i : i + 4] for i in range(0, 48, 4))
        == libtrust_kid(token_registry.key.certificate.public_key())
    )
    url = token_registry.url + "/v2/a/kid-check/tags/list"
    good, _ = token_registry.token_service.issue(ALICE[0], ["repository:a/kid-check:pull"])
    assert httpx.get(url, headers={"Authorization": f"Bearer {good}"}).status_code == 404  # authorized
    bad, _ = token_registry.token_service.issue(
        ALICE[0], ["repository:a/kid-check:pull"], kid=SigningKey.generate().kid
    )
    answer = httpx.get(url, headers={"Authorization": f"Bearer {bad}"})
    assert answer.status_code == 401 and 'error="invalid_token"' in answer.headers["www-authenticate"]


def test_rs256_and_x5c_tokens_are_accepted(
    tmp_path: Path, token_registry: TokenRegistry, token_client
) -> None:  # type: ignore[no-untyped-def]
    ts = token_registry.token_service
    ts.x5c, ts.kid = True, False
    image = TinyImage()
    image.push(token_client(ALICE), "a/x5c", "v1")
    with TokenRegistry(tmp_path, {"alice": User("pw", {"a/*": {"pull", "push"}})}, alg="RS256") as rsa:
        with RegistryClient(rsa.address, credentials=Credentials("alice", "pw"), retry=FAST) as client:
            digest = image.push(client, "a/rsa", "v1")
            assert client.get_manifest("a/rsa", "v1").digest == digest  # type: ignore[union-attr]


# -- the client's happy paths ------------------------------------------------------------------------------------


def test_ping_push_pull_round_trip(token_registry: TokenRegistry, token_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = token_client(ALICE)
    client.ping()
    image = TinyImage()
    digest = image.push(client, "a/app", "1.0")
    manifest = client.get_manifest("a/app", "1.0")
    assert manifest is not None and manifest.body == image.manifest and manifest.digest == digest
    assert client.manifest_digest("a/app", "1.0") == digest
    assert client.blob_size("a/app", image.layer_digest) == len(image.layer)
    assert client.download_blob("a/app", image.layer_digest, tmp_path / "layer") == len(image.layer)
    assert (tmp_path / "layer").read_bytes() == image.layer
    assert client.list_tags("a/app") == ["1.0"]

    requests = token_registry.token_service.token_requests()
    assert requests and all(r.status == 200 and r.method == "GET" for r in requests)
    assert basic_users(requests) == {ALICE}
    assert {tuple(r.scopes) for r in requests} == {
        (),
        ("repository:a/app:pull,push",),
        ("repository:a/app:pull",),
    }


def test_chunked_upload_with_token_auth(token_registry: TokenRegistry, token_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(5000)
    (tmp_path / "blob").write_bytes(data)
    client = token_client(ALICE)
    assert client.upload_file("a/chunks", digest_of(data), tmp_path / "blob", chunk_size=1024) == len(data)
    assert client.blob_size("a/chunks", digest_of(data)) == len(data)


@pytest.mark.parametrize("field", ["access_token", "both"])
def test_token_answer_shapes(token_registry: TokenRegistry, token_client, field: str) -> None:  # type: ignore[no-untyped-def]
    TinyImage().push(token_client(ADMIN), "a/shape", field)
    token_registry.token_service.token_field = field
    assert token_client(BOB).get_manifest("a/shape", field) is not None


def test_identity_token_is_exchanged_at_the_token_endpoint(token_registry: TokenRegistry) -> None:
    """What `docker login` stores as `identitytoken`: an OAuth refresh token, POSTed; no password is ever sent."""
    ts = token_registry.token_service
    refresh = ts.new_refresh_token(ALICE[0])
    creds = Credentials(ALICE[0], "", source="test", identity_token=refresh)
    with RegistryClient(token_registry.address, credentials=creds, retry=FAST) as client:
        image = TinyImage()
        digest = image.push(client, "a/oauth", "v1")
        assert client.manifest_digest("a/oauth", "v1") == digest
    requests = ts.token_requests()
    assert requests and {r.method for r in requests} == {"POST"} and {r.user for r in requests} == {"alice"}
    assert all(r.authorization is None for r in requests)
    form = dict(requests[-1].form)
    assert (form["grant_type"], form["refresh_token"], form["service"]) == (
        "refresh_token",
        refresh,
        token_registry.service,
    )
    with (
        RegistryClient(
            token_registry.address, credentials=Credentials("", "", identity_token="rt-revoked"), retry=FAST
        ) as client,
        pytest.raises(RegistryAuthError) as caught,
    ):
        client.ping()
    assert (
        str(caught.value)
        == f"registry {token_registry.address} rejected the credentials for identity token (401)"
    )


# -- failures are clean one-line errors ------------------------------------------------------------------------


def test_wrong_password_and_no_credentials(token_registry: TokenRegistry, token_client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RegistryAuthError) as caught:
        token_client((ALICE[0], "not-the-password")).ping()
    assert_clean_one_line(caught.value, "not-the-password")
    assert (
        str(caught.value)
        == f"registry {token_registry.address} rejected the credentials for user alice (401)"
    )
    with pytest.raises(RegistryAuthError, match="requires credentials while pulling a/app") as caught:
        token_client(None).get_manifest("a/app", "1.0")
    assert_clean_one_line(caught.value)


def test_pull_only_user_is_denied_not_told_its_password_is_wrong(
    token_registry: TokenRegistry, token_client
) -> None:  # type: ignore[no-untyped-def]
    TinyImage().push(token_client(ADMIN), "a/readonly", "v1")
    bob = token_client(BOB)
    assert bob.get_manifest("a/readonly", "v1") is not None
    with pytest.raises(RegistryAccessDenied) as caught:
        bob.upload_bytes("a/readonly", digest_of(b"x"), b"x")
    assert_clean_one_line(caught.value, BOB[1])
    assert str(caught.value) == (
        f"registry {token_registry.address} denied access for user bob while pushing a/readonly "
        "(the token service granted less than asked for)"
    )


def test_malformed_token_answer_is_a_clean_error(token_registry: TokenRegistry, token_client) -> None:  # type: ignore[no-untyped-def]
    token_registry.token_service.token_field = "malformed-list"
    with pytest.raises(RegistryAuthError, match="sent no token while pulling a/app") as caught:
        token_client(ALICE).get_manifest("a/app", "1.0")
    assert_clean_one_line(caught.value)


# -- mounts ----------------------------------------------------------------------------------------------------


def test_mount_between_readable_repositories(token_registry: TokenRegistry, token_client) -> None:  # type: ignore[no-untyped-def]
    image = TinyImage()
    alice = token_client(ALICE)
    alice.upload_bytes("a/src", image.layer_digest, image.layer)
    token_registry.token_service.clear()
    assert alice.mount_blob("a/dst", image.layer_digest, "a/src") is None
    mount = next(r for r in token_registry.token_service.token_requests() if len(r.scopes) == 2)
    assert mount.scopes == ["repository:a/dst:pull,push", "repository:a/src:pull"]


def test_mount_from_an_unreadable_source_falls_back_to_upload(
    token_registry: TokenRegistry, token_client
) -> None:  # type: ignore[no-untyped-def]
    image = TinyImage()
    token_client(ADMIN).upload_bytes("private/src", image.layer_digest, image.layer)
    alice = token_client(ALICE)  # may push a/*, may not pull private/*
    session = alice.mount_blob("a/dst3", image.layer_digest, "private/src")
    assert session is not None  # not mounted: an upload session instead
    alice.upload_bytes("a/dst3", image.layer_digest, image.layer, session=session)
    assert alice.blob_size("a/dst3", image.layer_digest) == len(image.layer)


# -- expiry ----------------------------------------------------------------------------------------------------


def test_expired_token_is_refreshed_even_in_the_middle_of_a_chunked_upload(
    token_registry: TokenRegistry, token_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    token_registry.token_service.lifetime = 3  # the registry accepts each token for ~3 s
    data = os.urandom(4096)
    (tmp_path / "blob").write_bytes(data)
    slept: list[int] = []

    def pause_once(digest: str, offset: int) -> None:
        if not slept:
            slept.append(offset)
            time.sleep(4.5)  # the push token expires between chunk 1 and chunk 2

    alice = token_client(ALICE)
    sent = alice.upload_file(
        "a/expiry", digest_of(data), tmp_path / "blob", chunk_size=1024, on_progress=pause_once
    )
    assert sent == len(data) and slept == [1024]
    assert alice.blob_size("a/expiry", digest_of(data)) == len(data)
    scopes = [r.scopes for r in token_registry.token_service.token_requests()]
    assert scopes.count(["repository:a/expiry:pull,push"]) == 2


# -- where credentials may go ----------------------------------------------------------------------------------


def test_no_authorization_to_another_host(tmp_path: Path) -> None:
    """distribution's `http.host` makes upload Locations absolute on another origin (here 127.0.0.2)."""
    foreign = RecordingProxy("http://127.0.0.1:1", host="127.0.0.2").start()
    try:
        users = {"alice": User("pw", {"a/*": {"pull", "push"}})}
        with TokenRegistry(tmp_path, users, http_host=f"http://{foreign.address}") as reg:
            foreign.target = reg.url
            with RegistryClient(reg.address, credentials=Credentials("alice", "pw"), retry=FAST) as client:
                with pytest.raises(RegistryAuthError) as caught:
                    client.upload_bytes("a/loc", digest_of(b"z"), b"z")  # the foreign host needs auth too
            assert str(caught.value) == (
                f"registry {reg.address} sent us to {foreign.address} while pushing a/loc, which asks for "
                f"credentials; they are only ever sent to {reg.address}"
            )
        assert foreign.seen, "the registry did not hand out a Location on the other host"
        assert [s.authorization for s in foreign.seen if s.authorization] == []
    finally:
        foreign.stop()


def test_credentials_never_go_to_a_plain_http_realm_on_another_host(token_registry: TokenRegistry) -> None:
    with RecordingProxy(token_registry.url) as proxy:
        realm = "http://192.0.2.1/token"  # TEST-NET-1: not loopback, and nothing answers there

        def challenge(method: str, path: str):  # type: ignore[no-untyped-def]
            return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="x"'}

        proxy.intercept = challenge
        client = RegistryClient(proxy.address, credentials=Credentials("alice", "secret-pw"), retry=FAST)
        with client, pytest.raises(RegistryAuthError) as caught:
            client.ping()
    assert str(caught.value) == (
        f"token service {realm} for {proxy.address} is plain HTTP on a non-loopback host; refusing to send "
        "credentials there"
    )


def test_each_token_service_sees_only_its_own_registrys_credentials(
    token_registry: TokenRegistry, tmp_path: Path
) -> None:
    """Two token registries behind recording proxies, a sync-like flow: alice's password only at TS1, dave's only
    at TS2, no token service ever gets a Bearer token, no registry Basic credentials, each registry only its own
    tokens (aud = its service)."""
    r1 = token_registry
    image = TinyImage()
    image.push(RegistryClient(r1.address, credentials=Credentials(*ALICE), retry=FAST), "a/iso", "v1")
    r1.token_service.clear()
    with (
        TokenRegistry(tmp_path / "r2", {"dave": User("dave-pw", {"d/*": {"pull", "push"}})}) as r2,
        RecordingProxy(r1.url) as p1,
        RecordingProxy(r2.url) as p2,
        RegistryClient(p1.address, credentials=Credentials(*ALICE), retry=FAST) as src,
        RegistryClient(p2.address, credentials=Credentials("dave", "dave-pw"), retry=FAST) as dst,
    ):
        manifest = src.get_manifest("a/iso", "v1")
        assert manifest is not None
        for blob in [json.loads(manifest.body)["config"], *json.loads(manifest.body)["layers"]]:
            path = tmp_path / blob["digest"].replace(":", "_")
            src.download_blob("a/iso", blob["digest"], path)
            dst.upload_file("d/iso", blob["digest"], path)
        dst.put_manifest("d/iso", "v1", manifest.body, manifest.media_type)
        assert basic_users(r1.token_service.seen) == {ALICE}
        assert basic_users(r2.token_service.seen) == {("dave", "dave-pw")}
        for proxy, service in ((p1, r1.service), (p2, r2.service)):
            auths = [s.authorization for s in proxy.seen if s.authorization]
            assert auths and all(a.startswith("Bearer ") for a in auths)
            assert {decode_jwt_unverified(a.split(" ", 1)[1])[1]["aud"] for a in auths} == {service}

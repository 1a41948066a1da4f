"""Strata's own client for the OCI distribution API (Docker Registry HTTP API v2), on httpx.

One `RegistryClient` talks to one registry: ping, token or basic auth from WWW-Authenticate challenges, blob HEAD,
monolithic and chunked resumable uploads, cross-repository mounts, manifests (Docker schema2 and OCI) and tags.
Transient failures (connection errors, 429, 5xx) are retried with bounded exponential backoff; everything else
becomes a one-line `RegistryError` naming the registry and what was being done.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from typing_extensions import Self

from builder.errors import StrataError
from builder.oci.digest import StreamDigest, sha256_digest
from builder.oci.media_types import MANIFEST_MEDIA_TYPES
from registry_sync.registry.auth import Credentials

DEFAULT_CHUNK_SIZE = 8 << 20

ProgressCallback = Callable[[str, int], None]


class RegistryError(StrataError):
    """A registry refused, failed or could not be reached; the message names the registry and the operation."""


class RegistryUnreachable(RegistryError):
    """No HTTP answer from the registry (refused, timed out, TLS failure) after the allowed retries."""


class RegistryAuthError(RegistryError):
    """The registry wants credentials we do not have, or rejected the ones we sent."""


class RegistryAccessDenied(RegistryAuthError):
    """The credentials were accepted but do not allow this (403, or a token without the scope asked for)."""


class UploadSessionLost(RegistryError):
    """The registry no longer knows an upload session (restarted without state, or it expired)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry transient failures: delays double from `first_delay` up to `max_delay`,
    at most `attempts` tries in all and no new try once `max_total_seconds` have passed."""

    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 8.0
    max_total_seconds: float = 60.0

    def delays(self) -> list[float]:
        """The sleeps between tries, e.g. RetryPolicy(attempts=4).delays() == [0.5, 1.0, 2.0]."""
        return [min(self.first_delay * (2**i), self.max_delay) for i in range(max(self.attempts - 1, 0))]


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry stores it: exact bytes, their media type and digest."""

    media_type: str
    body: bytes
    digest: str


@dataclass
class UploadSession:
    """An open blob upload: where to send the next bytes and how many the registry already has."""

    repository: str
    location: str
    offset: int = 0


@dataclass(frozen=True)
class Challenge:
    """A parsed WWW-Authenticate header: `Bearer realm="...",service="..."` -> scheme 'bearer' and params."""

    scheme: str
    params: Mapping[str, str]


_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> Challenge:
    """Parse one WWW-Authenticate challenge, e.g. `Basic realm="reg"` -> Challenge('basic', {'realm': 'reg'})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return Challenge(scheme.lower(), params)


def parse_range_end(header: str | None) -> int:
    """Bytes the registry holds from a `Range: 0-<last>` header: '0-1023' -> 1024; missing or '0-0' -> 0.

    '0-0' is ambiguous in the distribution API (0 or 1 byte); treating it as 0 is safe because a resend
    from 0 is refused (416) and the upload restarts, never corrupts.
    """
    if not header:
        return 0
    match = re.fullmatch(r"(?:bytes=)?0-(\d+)", header.strip())
    if not match:
        return 0
    last = int(match.group(1))
    return last + 1 if last > 0 else 0


def is_loopback_host(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 or ::1 (with or without a port), where Docker allows plain HTTP."""
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def url_origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in: what decides where credentials may go."""
    parsed = httpx.URL(str(url))
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, parsed.host.lower(), port


def describe_transport_error(exc: Exception) -> str:
    """A short human reason for a connection-level failure, e.g. 'connection refused'."""
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "certificate" in lowered and "verify" in lowered:
        return "TLS certificate not trusted; give the registry's CA file"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if "name or service not known" in lowered or "name resolution" in lowered or "nodename" in lowered:
        return "host name not resolved"
    if isinstance(exc, httpx.RemoteProtocolError) or "disconnected" in lowered or "reset" in lowered:
        return "connection closed by the registry"
    return text.splitlines()[0]


def registry_error_detail(response: httpx.Response) -> str:
    """The registry's own error codes from a JSON error body, e.g. 'BLOB_UNKNOWN: blob unknown to registry'."""
    try:
        errors = response.json().get("errors") or []
        parts = [
            f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errors if isinstance(e, dict)
        ]
    except (ValueError, AttributeError):
        parts = []
    return "; ".join(parts) or (response.reason_phrase or "no detail")


class RegistryClient:
    """A client for one registry, e.g. `RegistryClient("127.0.0.1:5000")` (plain HTTP on loopback).

    `registry` is host[:port], optionally with an `http://` or `https://` prefix; without one, loopback hosts
    without a CA file use HTTP and every other host HTTPS. `ca_file` adds a CA (Strata's own) for this client only.
    """

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        ca_file: Path | None = None,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        scheme, _, host = registry.rpartition("://")
        self.host = host.rstrip("/")
        if not scheme:
            scheme = "http" if is_loopback_host(self.host) and ca_file is None else "https"
        self.base_url = f"{scheme}://{self.host}"
        self._origin = url_origin(self.base_url)
        self.credentials = credentials
        self.retry = retry
        self._sleep = sleep
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            if not Path(ca_file).is_file():
                raise RegistryError(f"registry {self.host}: CA file {ca_file} does not exist")
            verify = ssl.create_default_context(cafile=str(ca_file))
        self._http = httpx.Client(
            verify=verify, timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=False
        )
        self._basic = False
        self._tokens: dict[str, str] = {}

    # -- plumbing ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else self.base_url + path_or_url

    def _auth_headers(self, scope: str, url: str | httpx.URL) -> dict[str, str]:
        """The Authorization for `url`: none unless it is this registry's own origin (scheme, host and port), so
        an upload Location or a Link on another host never receives our token or password."""
        if url_origin(url) != self._origin:
            return {}
        token = self._tokens.get(scope)
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and self.credentials is not None and self.credentials.password:
            basic = httpx.BasicAuth(self.credentials.username, self.credentials.password)
            return {
                "Authorization": next(basic.auth_flow(httpx.Request("GET", "/"))).headers["Authorization"]
            }
        return {}

    @staticmethod
    def _where(action: str, repository: str | None) -> str:
        return f"while {action} {repository}" if repository else f"while {action}"

    def _request(
        self,
        method: str,
        path_or_url: str,
        *,
        action: str,
        repository: str | None,
        scopes: tuple[str, ...] = (),
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        resend: bool = True,
    ) -> httpx.Response:
        """Send one request, answering auth challenges and retrying transient failures.

        Returns any response that is not 401/403/429/5xx; the caller judges the remaining statuses. With
        resend=False (a chunk the registry may have partly stored) a transport error or 429/5xx is raised at
        once, so the caller asks the registry where it stands instead of sending the same bytes again.
        """
        scope_key = " ".join(scopes)
        delays = iter(self.retry.delays())
        deadline = time.monotonic() + self.retry.max_total_seconds
        attempts = 0
        answered_challenge = False
        where = self._where(action, repository)
        while True:
            attempts += 1
            url = self._url(path_or_url)
            all_headers = {**self._auth_headers(scope_key, url), **(headers or {})}
            try:
                response = self._http.request(
                    method, url, headers=all_headers, content=content, params=params
                )
            except httpx.TransportError as exc:
                reason = describe_transport_error(exc)
                if not resend and not isinstance(exc, httpx.ConnectError):
                    raise _SendInterrupted(f"registry {self.host} unreachable ({reason}) {where}") from None
                if "certificate" in reason or not resend or not self._backoff(delays, deadline):
                    raise RegistryUnreachable(
                        f"registry {self.host} unreachable ({reason}) {where}"
                    ) from None
                continue
            if response.status_code == 401 and url_origin(url) != self._origin:
                raise RegistryAuthError(
                    f"registry {self.host} sent us to {httpx.URL(url).netloc.decode()} {where}, which asks for "
                    f"credentials; they are only ever sent to {self.host}"
                )
            if response.status_code == 401:
                if answered_challenge and self.credentials and _insufficient_scope(response):
                    raise self._denied(where, "the token service granted less than asked for")
                if not answered_challenge and self._answer_challenge(response, scopes, where):
                    answered_challenge = True
                    continue
                raise self._auth_failure(where)
            if response.status_code == 403:
                raise self._denied(where, "403")
            if response.status_code == 429 or response.status_code >= 500:
                if resend and self._backoff(delays, deadline):
                    continue
                raise RegistryError(
                    f"registry {self.host} answered {response.status_code} ({response.reason_phrase}) {where}, "
                    f"after {attempts} attempt{'s' if attempts > 1 else ''}"
                )
            return response

    def _backoff(self, delays: Iterator[float], deadline: float) -> bool:
        delay = next(delays, None)
        if delay is None or time.monotonic() + delay > deadline:
            return False
        self._sleep(delay)
        return True

    def _denied(self, where: str, why: str) -> RegistryAccessDenied:
        user = (
            f" for user {self.credentials.username}" if self.credentials and self.credentials.username else ""
        )
        return RegistryAccessDenied(f"registry {self.host} denied access{user} {where} ({why})")

    def _auth_failure(self, where: str) -> RegistryAuthError:
        if self.credentials is None:
            return RegistryAuthError(
                f"registry {self.host} requires credentials {where} (401); log in with docker, or set "
                "STRATA_REGISTRY_USER and STRATA_REGISTRY_PASSWORD (sent only to the matrix's registry and to "
                "the hosts in STRATA_REGISTRY_AUTH_HOSTS)"
            )
        who = f"user {self.credentials.username}" if self.credentials.username else "identity token"
        return RegistryAuthError(f"registry {self.host} rejected the credentials for {who} (401)")

    def _answer_challenge(self, response: httpx.Response, scopes: tuple[str, ...], where: str) -> bool:
        header = response.headers.get("www-authenticate")
        if not header or self.credentials is None and not header.lower().startswith("bearer"):
            return False
        challenge = parse_challenge(header)
        if challenge.scheme == "basic":
            if self._basic or self.credentials is None or not self.credentials.password:
                return False
            if not _may_carry_password(self.base_url):
                raise RegistryAuthError(
                    f"registry {self.host} asks for a password over plain HTTP; refusing to send it (use https)"
                )
            self._basic = True
            return True
        if challenge.scheme == "bearer":
            self._tokens[" ".join(scopes)] = self._fetch_token(challenge, scopes, where)
            return True
        return False

    def _fetch_token(self, challenge: Challenge, scopes: tuple[str, ...], where: str) -> str:
        """A bearer token from the challenge's realm (Docker's token protocol).

        With an identity token: POST grant_type=refresh_token (the OAuth2 flow). With a user and password: GET
        with Basic credentials, which never go in clear to a host other than loopback. Without credentials: an
        anonymous GET.
        """
        realm = challenge.params.get("realm")
        if not realm:
            raise RegistryAuthError(f"registry {self.host} sent a Bearer challenge without a realm {where}")
        wanted = list(scopes) or ([challenge.params["scope"]] if "scope" in challenge.params else [])
        service = challenge.params.get("service")
        creds = self.credentials
        if creds is not None and (creds.identity_token or creds.password) and not _may_carry_password(realm):
            raise RegistryAuthError(
                f"token service {realm} for {self.host} is plain HTTP on a non-loopback host; refusing to send "
                "credentials there"
            )
        try:
            if creds is not None and creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token}
                form.update({"client_id": "strata", "scope": " ".join(wanted)})
                if service:
                    form["service"] = service
                answer = self._http.post(realm, data=form)
            else:
                pairs: list[tuple[str, str | int | float | bool | None]] = [("scope", s) for s in wanted]
                if service:
                    pairs.append(("service", service))
                auth = httpx.BasicAuth(creds.username, creds.password) if creds and creds.password else None
                answer = self._http.get(realm, params=httpx.QueryParams(pairs), auth=auth)
        except httpx.TransportError as exc:
            reason = describe_transport_error(exc)
            raise RegistryUnreachable(
                f"token service {realm} for {self.host} unreachable ({reason})"
            ) from None
        if answer.status_code in (400, 401):
            raise self._auth_failure(where)
        if answer.status_code != 200:
            raise RegistryAuthError(
                f"token service {realm} for {self.host} answered {answer.status_code} {where}"
            )
        try:
            body = answer.json()
        except ValueError:
            body = None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"token service {realm} for {self.host} sent no token {where}")
        return token

    def _unexpected(self, response: httpx.Response, what: str) -> RegistryError:
        return RegistryError(
            f"registry {self.host} refused {what} ({response.status_code} {registry_error_detail(response)})"
        )

    @staticmethod
    def _push_scope(repository: str) -> tuple[str, ...]:
        return (f"repository:{repository}:pull,push",)

    @staticmethod
    def _pull_scope(repository: str) -> tuple[str, ...]:
        return (f"repository:{repository}:pull",)

    # -- API -----------------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers the v2 API (authenticating if it asks to)."""
        response = self._request("GET", "/v2/", action="pinging", repository=None)
        if response.status_code != 200:
            raise self._unexpected(response, "the v2 API check")

    def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of blob `digest` in `repository`, or None when the registry does not have it there."""
        response = self._request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            action="checking blobs of",
            repository=repository,
            scopes=self._pull_scope(repository),
        )
        if response.status_code == 404:
            return None
        if response.status_code not in (200, 307):
            raise self._unexpected(response, f"HEAD of blob {digest} in {repository}")
        return int(response.headers.get("content-length", "0"))

    def download_blob(self, repository: str, digest: str, path: Path, *, chunk_size: int = 1 << 20) -> int:
        """Stream blob `digest` of `repository` into the file `path`, checking its sha256; returns its size.

        Redirects to the registry's storage are followed without sending our credentials there; transient
        failures restart the download (bounded by the retry policy). Example:
        `client.download_blob("mirror/nvidia/cuda", "sha256:ab...", Path("layer.gz"))`.
        """
        if self.blob_size(repository, digest) is None:  # also answers any auth challenge for the pull scope
            raise RegistryError(f"registry {self.host} has no blob {digest} in {repository}")
        scope = " ".join(self._pull_scope(repository))
        where = self._where("pulling", repository)
        delays = iter(self.retry.delays())
        deadline = time.monotonic() + self.retry.max_total_seconds
        refreshed = False
        while True:
            try:
                return self._stream_blob(repository, digest, path, scope, chunk_size)
            except _AuthExpired:
                if refreshed:
                    raise self._auth_failure(where) from None
                refreshed = True
                self._tokens.pop(scope, None)
                self.blob_size(repository, digest)
            except (httpx.TransportError, _TransientStatus) as exc:
                if not self._backoff(delays, deadline):
                    reason = (
                        describe_transport_error(exc) if isinstance(exc, httpx.TransportError) else str(exc)
                    )
                    raise RegistryUnreachable(
                        f"registry {self.host}: download of {digest} failed ({reason}) {where}"
                    ) from None

    def _stream_blob(self, repository: str, digest: str, path: Path, scope: str, chunk_size: int) -> int:
        url = httpx.URL(self._url(f"/v2/{repository}/blobs/{digest}"))
        for _ in range(6):  # the registry, then at most a few redirects to its storage
            headers = self._auth_headers(scope, url)
            with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
                    url = url.join(response.headers["location"])
                    continue
                if response.status_code == 401 and url_origin(url) == self._origin:
                    raise _AuthExpired()
                if response.status_code == 429 or response.status_code >= 500:
                    raise _TransientStatus(f"HTTP {response.status_code}")
                if response.status_code != 200:
                    response.read()
                    raise self._unexpected(response, f"blob {digest} of {repository}")
                received = StreamDigest()
                with open(path, "wb") as sink:
                    for chunk in response.iter_bytes(chunk_size):
                        received.update(chunk)
                        sink.write(chunk)
                got = received.digest
                if digest.startswith("sha256:") and got != digest:
                    raise RegistryError(
                        f"registry {self.host} sent blob {digest} of {repository} hashing to {got}"
                    )
                return received.size
        raise RegistryError(f"registry {self.host}: too many redirects for blob {digest} of {repository}")

    def start_upload(self, repository: str) -> UploadSession:
        """Open a new blob upload session in `repository`."""
        response = self._request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            action="pushing",
            repository=repository,
            scopes=self._push_scope(repository),
        )
        if response.status_code != 202 or "location" not in response.headers:
            raise self._unexpected(response, f"to start an upload to {repository}")
        return UploadSession(repository, self._resolve(response.headers["location"]), 0)

    def _resolve(self, location: str) -> str:
        return str(httpx.URL(self.base_url).join(location))

    def upload_status(self, session: UploadSession) -> int:
        """Ask the registry how many bytes of `session` it holds (and refresh its location)."""
        response = self._request(
            "GET",
            session.location,
            action="pushing",
            repository=session.repository,
            scopes=self._push_scope(session.repository),
        )
        if response.status_code in (400, 404):
            raise UploadSessionLost(
                f"registry {self.host} lost upload session in {session.repository} "
                f"({registry_error_detail(response)})"
            )
        if response.status_code != 204:
            raise self._unexpected(response, f"the status of an upload to {session.repository}")
        if "location" in response.headers:
            session.location = self._resolve(response.headers["location"])
        session.offset = parse_range_end(response.headers.get("range"))
        return session.offset

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> UploadSession | None:
        """Mount blob `digest` from `source_repository` into `repository` without uploading it.

        Returns None when mounted; when the registry cannot mount it (or we may not read the source), it opens an
        upload instead and that session is returned for the caller to upload into, as docker does.
        """
        try:
            response = self._request(
                "POST",
                f"/v2/{repository}/blobs/uploads/",
                action="pushing",
                repository=repository,
                scopes=self._push_scope(repository) + self._pull_scope(source_repository),
                params={"mount": digest, "from": source_repository},
            )
        except RegistryAccessDenied:
            return self.start_upload(repository)
        if response.status_code == 201:
            return None
        if response.status_code == 202 and "location" in response.headers:
            return UploadSession(repository, self._resolve(response.headers["location"]), 0)
        raise self._unexpected(response, f"to mount {digest} from {source_repository} into {repository}")

    def upload_bytes(
        self, repository: str, digest: str, data: bytes, *, session: UploadSession | None = None
    ) -> None:
        """Upload a small blob in one monolithic PUT (POST, then PUT with the whole body)."""
        if sha256_digest(data) != digest:
            raise RegistryError(
                f"refusing to push blob to {repository}: content hashes to {sha256_digest(data)}, not {digest}"
            )
        self._finish(session or self.start_upload(repository), digest, data)

    def upload_file(
        self,
        repository: str,
        digest: str,
        path: Path,
        *,
        session: UploadSession | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        on_progress: ProgressCallback | None = None,
    ) -> int:
        """Upload the blob stored in `path` as `digest`, in chunks, resuming after interruptions.

        Files no larger than `chunk_size` go in one monolithic PUT. Larger ones are PATCHed chunk by chunk
        with Content-Range. A chunk that fails (the connection lost in its middle, 5xx, 416) is never sent again
        as it was: the registry is asked for its offset (GET on the upload URL, its `Range`) and the upload
        continues from there, so only the part of that chunk the registry did not store is sent twice (or it
        starts over if the registry lost the session). Returns the bytes sent, counting every chunk that may
        have gone out, so a clean upload returns exactly the file size. `on_progress(digest, offset)` is called
        after each chunk the registry accepted.
        """
        size = path.stat().st_size
        sent = 0
        restarts = 0
        session = session or self.start_upload(repository)
        with open(path, "rb") as source:
            if size <= chunk_size:
                data = source.read()
                self._finish(session, digest, data)
                if on_progress:
                    on_progress(digest, size)
                return len(data)
            delays = iter(self.retry.delays())
            deadline = time.monotonic() + self.retry.max_total_seconds
            while session.offset < size:
                source.seek(session.offset)
                chunk = source.read(chunk_size)
                try:
                    self._patch(session, chunk)
                    sent += len(chunk)
                    if on_progress:
                        on_progress(digest, session.offset)
                    continue
                except (_SendInterrupted, _ChunkRejected) as exc:
                    sent += len(chunk)  # some or all of it reached the registry
                    failure: RegistryError = exc
                except RegistryUnreachable as exc:
                    failure = exc  # not connected: nothing was sent
                if not self._backoff(delays, deadline):
                    raise failure
                try:
                    self.upload_status(session)
                except UploadSessionLost:
                    restarts += 1
                    if restarts > self.retry.attempts:
                        raise failure from None
                    session = self.start_upload(repository)
            self._finish(session, digest, b"")
        return sent

    def _patch(self, session: UploadSession, chunk: bytes) -> None:
        start = session.offset
        try:
            response = self._request(
                "PATCH",
                session.location,
                action="pushing",
                repository=session.repository,
                scopes=self._push_scope(session.repository),
                content=chunk,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{start}-{start + len(chunk) - 1}",
                    "Content-Length": str(len(chunk)),
                },
                resend=False,
            )
        except RegistryError as exc:
            if isinstance(exc, (RegistryUnreachable, RegistryAuthError)):
                raise
            raise _ChunkRejected(str(exc)) from None
        if response.status_code != 202:
            raise _ChunkRejected(str(self._unexpected(response, f"a chunk for {session.repository}")))
        session.location = self._resolve(response.headers.get("location", session.location))
        reported = parse_range_end(response.headers.get("range"))
        session.offset = reported if reported else start + len(chunk)

    def _finish(self, session: UploadSession, digest: str, data: bytes) -> None:
        url = httpx.URL(session.location).copy_merge_params({"digest": digest})
        response = self._request(
            "PUT",
            str(url),
            action="pushing",
            repository=session.repository,
            scopes=self._push_scope(session.repository),
            content=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        if response.status_code != 201:
            raise self._unexpected(response, f"blob {digest} for {session.repository}")
        stored = response.headers.get("docker-content-digest")
        if stored and stored != digest:
            raise RegistryError(
                f"registry {self.host} stored blob {stored} in {session.repository}, expected {digest}"
            )

    def _manifest_request(self, method: str, repository: str, reference: str) -> httpx.Response | None:
        """GET or HEAD a manifest accepting every media type we handle; None on 404."""
        response = self._request(
            method,
            f"/v2/{repository}/manifests/{reference}",
            action="pulling",
            repository=repository,
            scopes=self._pull_scope(repository),
            headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
        )
        return None if response.status_code == 404 else response

    def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest `repository:reference` (tag or digest) as stored, or None when it does not exist."""
        response = self._manifest_request("GET", repository, reference)
        if response is None:
            return None
        if response.status_code != 200:
            raise self._unexpected(response, f"manifest {repository}:{reference}")
        body = response.content
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(
                f"registry {self.host} sent manifest {repository}@{reference} whose bytes hash to {digest}"
            )
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return Manifest(media_type, body, digest)

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """Digest of manifest `repository:reference` via HEAD, or None when it does not exist."""
        response = self._manifest_request("HEAD", repository, reference)
        if response is None:
            return None
        if response.status_code != 200:
            raise self._unexpected(response, f"HEAD of manifest {repository}:{reference}")
        digest = response.headers.get("docker-content-digest")
        if digest:
            return digest
        manifest = self.get_manifest(repository, reference)
        return manifest.digest if manifest else None

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store manifest bytes under `reference` (a tag, or the digest itself) and return the digest."""
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and reference != digest:
            raise RegistryError(f"manifest for {repository} hashes to {digest}, not {reference}")
        response = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            action="pushing",
            repository=repository,
            scopes=self._push_scope(repository),
            content=body,
            headers={"Content-Type": media_type},
        )
        if response.status_code not in (200, 201):
            raise self._unexpected(response, f"manifest {repository}:{reference}")
        stored = response.headers.get("docker-content-digest")
        if stored and stored != digest:
            raise RegistryError(
                f"registry {self.host} stored manifest {repository}:{reference} as {stored}, "
                f"expected {digest}"
            )
        return digest

    def list_tags(self, repository: str) -> list[str]:
        """All tags of `repository` (following pagination); empty when the repository does not exist."""
        tags: list[str] = []
        url: str | None = f"/v2/{repository}/tags/list"
        while url:
            response = self._request(
                "GET",
                url,
                action="listing tags of",
                repository=repository,
                scopes=self._pull_scope(repository),
            )
            if response.status_code == 404:
                return tags
            if response.status_code != 200:
                raise self._unexpected(response, f"the tag list of {repository}")
            tags.extend(response.json().get("tags") or [])
            match = re.search(r"<([^>]+)>;\s*rel=\"?next\"?", response.headers.get("link", ""))
            url = self._resolve(match.group(1)) if match else None
        return tags


class _SendInterrupted(RegistryUnreachable):
    """The connection broke while a request's body was being sent or answered: the registry may hold part of it."""


class _ChunkRejected(RegistryError):
    """A chunk was refused or failed at the registry (5xx, 416): ask for the offset and resume."""


class _AuthExpired(Exception):
    """A blob download was answered 401: the cached token expired; fetch a new one and start again."""


class _TransientStatus(Exception):
    """A blob download was answered 429 or 5xx: retry after a backoff."""


def _insufficient_scope(response: httpx.Response) -> bool:
    """A 401 whose challenge says the token lacks the scope (distribution never answers 403 with token auth)."""
    header = response.headers.get("www-authenticate", "")
    return parse_challenge(header).params.get("error") == "insufficient_scope" if header else False


def _may_carry_password(url: str) -> bool:
    """HTTPS, or plain HTTP to a loopback host: where a password or refresh token may be sent."""
    parsed = httpx.URL(url)
    return parsed.scheme == "https" or (parsed.scheme == "http" and is_loopback_host(parsed.host))

"""Test helpers: a registry with Docker token auth (distribution 2.8's `docker-registry` trusting a token service
written here) and a pass-through proxy that records what reaches a registry.

    with TokenRegistry(tmp_dir, users={"alice": User("pw", {"a/*": {"pull", "push"}})}) as reg:
        client = RegistryClient(reg.address, credentials=Credentials("alice", "pw"))

The token service (https://distribution.github.io/distribution/spec/auth/token/ and .../auth/oauth/):
    GET  <realm>?service=S&scope=repository:a/x:pull,push     with Basic credentials
    POST <realm>  grant_type=refresh_token&refresh_token=T&service=S&scope=...   (an identity token)
    -> 200 {"token" | "access_token": "<JWT>", "expires_in": N, "issued_at": "..."}
Tokens are ES256 or RS256 JWTs whose header names the key the way distribution 2.8 looks it up: `kid` = the
libtrust fingerprint of the public key of a certificate in the registry's `rootcertbundle` (or `x5c`). Every
request is recorded in `TokenService.seen`, with its raw Authorization header and form, so a test can prove which
credentials reached it. Every port is random on 127.0.0.1; port 5000 is never used.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import fnmatch
import hashlib
import json
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_BINARY = "docker-registry"
FORBIDDEN_PORTS = {5000}
START_TIMEOUT = 20.0

# distribution 2.8 registry/auth/token/token.go: exp and nbf are checked with this much clock-skew leeway.
REGISTRY_LEEWAY_SECONDS = 60


# -- keys, kid, JWT ------------------------------------------------------------------------------------------


def libtrust_kid(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    """The key ID distribution 2.8 gives a trusted key (docker/libtrust keyIDFromCryptoKey + keyIDEncode):

    SHA-256 of the DER SubjectPublicKeyInfo (Go's x509.MarshalPKIXPublicKey), truncated to its first 30 bytes
    (240 bits), base32 (RFC 4648 standard alphabet, upper case; 48 chars, so no padding), split into 12 groups
    of 4 joined by ':'  ->  'ABCD:EFGH:...:MNOP'.
    """
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class SigningKey:
    """A private key and its self-signed certificate (the registry's rootcertbundle)."""

    alg: str  # "ES256" or "RS256"
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def generate(cls, alg: str = "ES256", common_name: str = "strata-test-token-issuer") -> SigningKey:
        if alg == "ES256":
            key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = ec.generate_private_key(ec.SECP256R1())
        elif alg == "RS256":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            raise ValueError(f"unsupported alg {alg!r}; use ES256 or RS256")
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(alg, key, cert)

    @property
    def kid(self) -> str:
        return libtrust_kid(self.private_key.public_key())

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def sign(self, signing_input: bytes) -> bytes:
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS wants raw r||s, not DER
        return self.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())

    def jwt(self, claims: dict[str, object], *, x5c: bool = False, kid: bool | str = True) -> str:
        """Compact JWS of `claims`; `kid` True puts the libtrust key ID in the header, a string puts that string."""
        header: dict[str, object] = {"typ": "JWT", "alg": self.alg}
        if kid:
            header["kid"] = kid if isinstance(kid, str) else self.kid
        if x5c:
            header["x5c"] = [
                base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()
            ]
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        return signing_input + "." + _b64url(self.sign(signing_input.encode()))


def decode_jwt_unverified(token: str) -> tuple[dict[str, object], dict[str, object]]:
    """(header, claims) of a compact JWT, without checking the signature (for assertions in tests)."""

    def part(text: str) -> dict[str, object]:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))

    head, body, _ = token.split(".")
    return part(head), part(body)


# -- users and grants ----------------------------------------------------------------------------------------


@dataclass
class User:
    """A password and grants: repository-name glob -> allowed actions, e.g. {'a/*': {'pull', 'push'}}."""

    password: str
    grants: dict[str, set[str]] = field(default_factory=dict)

    def allowed(self, name: str) -> set[str]:
        actions: set[str] = set()
        for pattern, granted in self.grants.items():
            if fnmatch.fnmatchcase(name, pattern):
                actions |= granted
        return actions


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """'repository:a/x:pull,push' -> ('repository', 'a/x', ['pull', 'push']); None when malformed."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


@dataclass
class Seen:
    """One request the token service received."""

    method: str
    path: str
    query: list[tuple[str, str]]
    authorization: str | None
    form: list[tuple[str, str]] = field(default_factory=list)  # the urlencoded body of a POST
    status: int = 0
    user: str | None = None
    granted: list[dict[str, object]] = field(default_factory=list)

    @property
    def scopes(self) -> list[str]:
        """Scopes asked for: repeated `scope` query parameters (GET) or the space-separated form field (POST)."""
        return [v for k, v in self.query if k == "scope"] + [
            one for k, v in self.form if k == "scope" for one in v.split()
        ]

    @property
    def basic(self) -> tuple[str, str] | None:
        """(user, password) of a Basic Authorization header, else None."""
        if not self.authorization or not self.authorization.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(self.authorization[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user, password


# -- the server ----------------------------------------------------------------------------------------------


class TokenService:
    """The token service on 127.0.0.1:<random port>, in a background thread; use as a context manager.

    Knobs a test may change while it runs:
      token_field  'token' | 'access_token' | 'both' | 'malformed-list'  (shape of the JSON answer)
      lifetime     seconds the registry will accept a token (exp is set to now + lifetime - 60 s leeway)
      x5c / kid    which header fields name the signing key
    `refresh_tokens` maps identity tokens (OAuth refresh tokens, what `docker login` stores as `identitytoken`)
    to users; `new_refresh_token(user)` makes one.
    """

    def __init__(
        self,
        *,
        service: str,
        issuer: str,
        users: dict[str, User],
        key: SigningKey | None = None,
        lifetime: int = 300,
        token_field: str = "token",
        x5c: bool = False,
        kid: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.service = service
        self.issuer = issuer
        self.users = users
        self.key = key or SigningKey.generate()
        self.lifetime = lifetime
        self.token_field = token_field
        self.x5c = x5c
        self.kid = kid
        self.seen: list[Seen] = []
        self.refresh_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def realm(self) -> str:
        return f"http://{self._httpd.server_address[0]}:{self.port}/token"

    def start(self) -> TokenService:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="token-service", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TokenService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def token_requests(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == "/token"]

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()

    def new_refresh_token(self, user: str) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens[token] = user
        return token

    # -- issuing --

    def issue(
        self, user: str, scopes: list[str], *, kid: bool | str | None = None
    ) -> tuple[str, list[dict[str, object]]]:
        """A signed token for `user` granting the intersection of `scopes` with the user's grants."""
        granted: dict[tuple[str, str], list[str]] = {}
        for scope in scopes:
            for one in scope.split(" "):  # some clients send several scopes space-separated in one param
                parsed = parse_scope(one)
                if parsed is None:
                    continue
                kind, name, actions = parsed
                if kind != "repository":
                    continue  # registry:catalog:* and others: never granted here
                allowed = self.users[user].allowed(name)
                ok = [a for a in actions if a in allowed or ("*" in allowed)]
                bucket = granted.setdefault((kind, name), [])
                bucket.extend(a for a in ok if a not in bucket)
        access = [{"type": k, "name": n, "actions": a} for (k, n), a in granted.items() if a]
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            "exp": now + self.lifetime - REGISTRY_LEEWAY_SECONDS,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        return self.key.jwt(claims, x5c=self.x5c, kid=self.kid if kid is None else kid), access

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet; `seen` is the log
                pass

            def _answer(self, status: int, body: object, extra: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                url = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    url.path,
                    parse_qsl(url.query, keep_blank_values=True),
                    self.headers.get("Authorization"),
                )
                with server._lock:
                    server.seen.append(seen)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command == "POST":
                    seen.form = parse_qsl(body.decode(errors="replace"), keep_blank_values=True)
                if url.path != "/token" or self.command not in ("GET", "POST"):
                    seen.status = 404
                    return self._answer(404, {"errors": [{"code": "NOT_FOUND", "message": "/token only"}]})
                fields = dict(seen.query if self.command == "GET" else seen.form)
                if fields.get("service") != server.service:
                    seen.status = 400
                    return self._answer(
                        400, {"error": "invalid_request", "service": str(fields.get("service"))}
                    )
                name = self._authenticate(fields)
                if name is None:
                    seen.status = 401
                    return self._answer(
                        401,
                        {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                        {"WWW-Authenticate": 'Basic realm="strata-test-token"'},
                    )
                seen.user = name
                token, seen.granted = server.issue(name, seen.scopes)
                issued = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                answer: object
                if self.command == "POST":
                    answer = {"access_token": token}  # the OAuth2 answer
                elif server.token_field == "token":
                    answer = {"token": token}
                elif server.token_field == "access_token":
                    answer = {"access_token": token}
                elif server.token_field == "both":
                    answer = {"token": token, "access_token": token}
                else:  # malformed-list: valid JSON that is not an object
                    answer = [token]
                if isinstance(answer, dict):
                    answer.update({"expires_in": server.lifetime, "issued_at": issued})
                seen.status = 200
                self._answer(200, answer)

            def _authenticate(self, fields: dict[str, str]) -> str | None:
                """The user: from Basic credentials (GET), or a refresh token / password grant (POST)."""
                if self.command == "POST":
                    if fields.get("grant_type") == "refresh_token":
                        return server.refresh_tokens.get(fields.get("refresh_token", ""))
                    if fields.get("grant_type") == "password":
                        claimed = (fields.get("username", ""), fields.get("password", ""))
                    else:
                        return None
                else:
                    basic = Seen("", "", [], self.headers.get("Authorization")).basic
                    if basic is None:
                        return None
                    claimed = basic
                user = server.users.get(claimed[0])
                if user is None or not secrets.compare_digest(user.password, claimed[1]):
                    return None
                return claimed[0]

            do_GET = do_POST = do_HEAD = do_PUT = _handle

        return Handler


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just gave out (never 5000)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in FORBIDDEN_PORTS:
            return port


# -- recording pass-through proxy ----------------------------------------------------------------------------

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
}


@dataclass
class ProxySeen:
    method: str
    path: str
    authorization: str | None
    status: int = 0


class RecordingProxy:
    """Forwards every request to `target` (e.g. http://127.0.0.1:PORT) keeping the Host header, and records
    method, path and Authorization. Because Host is kept, the registry's Location URLs point back at the proxy.

    `intercept(method, path)` may return (status, headers) to answer a request itself instead of forwarding it.
    """

    def __init__(self, target: str, host: str = "127.0.0.1") -> None:
        self.target = target.rstrip("/")
        self.seen: list[ProxySeen] = []
        self.intercept: Callable[[str, str], tuple[int, dict[str, str]] | None] | None = None
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=60.0, follow_redirects=False)
        self._httpd = ThreadingHTTPServer((host, 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="recording-proxy", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> RecordingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._http.close()

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                seen = ProxySeen(self.command, self.path, self.headers.get("Authorization"))
                with proxy._lock:
                    proxy.seen.append(seen)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                canned = proxy.intercept(self.command, self.path) if proxy.intercept else None
                if canned is not None:
                    seen.status = canned[0]
                    self.send_response(canned[0])
                    for k, v in canned[1].items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
                try:
                    answer = proxy._http.request(
                        self.command, proxy.target + self.path, headers=headers, content=body
                    )
                except httpx.TransportError:
                    seen.status = 502
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                seen.status = answer.status_code
                self.send_response(answer.status_code)
                for k, v in answer.headers.multi_items():
                    if k.lower() in HOP_BY_HOP or k.lower() in ("content-length", "content-encoding"):
                        continue
                    self.send_header(k, v)
                if self.command == "HEAD":  # keep the registry's Content-Length: blob_size() reads it
                    self.send_header("Content-Length", answer.headers.get("content-length", "0"))
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler


# -- registry with token auth ----------------------------------------------------------------------------------


class TokenRegistry:
    """A token service plus a docker-registry trusting it, both on 127.0.0.1 random ports, state under `workdir`.

    `http_host` sets distribution's `http.host` (the base of the absolute URLs it hands out, e.g. upload
    Locations). `stop()` ends only the registry process this object started.
    """

    def __init__(
        self,
        workdir: Path,
        users: dict[str, User],
        *,
        alg: str = "ES256",
        service: str | None = None,
        issuer: str = "strata-test-issuer",
        http_host: str | None = None,
        log_level: str = "info",
    ) -> None:
        self.workdir = Path(workdir)
        self.service = service or f"strata-test-registry-{secrets.token_hex(3)}"
        self.issuer = issuer
        self.http_host = http_host
        self.log_level = log_level
        self.key = SigningKey.generate(alg)
        self.token_service = TokenService(service=self.service, issuer=issuer, users=users, key=self.key)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    # paths
    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yml"

    @property
    def cert_path(self) -> Path:
        return self.workdir / "token-cert.pem"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def render_config(self) -> dict[str, object]:
        http: dict[str, object] = {"addr": self.address, "secret": secrets.token_hex(16)}
        if self.http_host:
            http["host"] = self.http_host
        return {
            "version": 0.1,
            "log": {"level": self.log_level, "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "storage")},
                "delete": {"enabled": True},
            },
            "http": http,
            "auth": {
                "token": {
                    "realm": self.token_service.realm,
                    "service": self.service,
                    "issuer": self.issuer,
                    "rootcertbundle": str(self.cert_path),
                }
            },
            "health": {"storagedriver": {"enabled": False}},
        }

    def start(self) -> TokenRegistry:
        binary = shutil.which(REGISTRY_BINARY)
        if binary is None:
            raise RuntimeError(f"{REGISTRY_BINARY} is not installed (Debian package docker-registry)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "storage").mkdir(exist_ok=True)
        self.cert_path.write_bytes(self.key.cert_pem())
        self.token_service.start()
        try:
            for attempt in range(3):  # the port is free when picked; another process may take it meanwhile
                self.port = free_port()
                # JSON is YAML: no yaml dependency needed
                self.config_path.write_text(json.dumps(self.render_config(), indent=2))
                with open(self.log_path, "ab") as log:
                    self.process = subprocess.Popen(
                        [binary, "serve", str(self.config_path)],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                if self._wait_until_serving():
                    return self
                if "address already in use" not in self._log_tail().lower() or attempt == 2:
                    raise RuntimeError(
                        f"docker-registry did not start: {self._log_tail()} (log {self.log_path})"
                    )
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_serving(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    answer = http.get(self.url + "/v2/")
                    if (
                        answer.status_code == 401
                        and "bearer" in answer.headers.get("www-authenticate", "").lower()
                    ):
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self._kill()
        raise RuntimeError(f"docker-registry on {self.address} did not answer within {START_TIMEOUT}s")

    def _log_tail(self) -> str:
        try:
            lines = [x for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]
        except OSError:
            return "no log"
        return lines[-1][:400] if lines else "empty log"

    def _kill(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        self._kill()
        try:
            self.token_service.stop()
        except Exception:
            pass

    def __enter__(self) -> TokenRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def registry_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

"""The embedded registry: Debian's `docker-registry` (distribution 2.8) run in the background on 127.0.0.1.

Everything lives under one data directory (`settings.registry_dir`: `<state root>/registry`):

    config.yml  server.json  registry.pid  registry.log  storage/
    tls/ca.crt ca.key server.crt server.key      (with TLS)
    auth/htpasswd auth/password                  (with htpasswd auth; the password file is mode 0600)

The generated CA is trusted only by Strata's client (`local_client`) and, when writable, by the local engine
through /etc/docker/certs.d/<host:port>/ca.crt; it is never put into an image.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import bcrypt
import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from builder.errors import HostError, StrataError
from registry_sync.registry.auth import Credentials
from registry_sync.registry.client import RegistryClient, RetryPolicy

DEFAULT_PORT = 5000
DEFAULT_HOST = "127.0.0.1"
DEFAULT_USER = "strata"
REGISTRY_BINARY = "docker-registry"
ENGINE_CERTS_DIR = Path("/etc/docker/certs.d")
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0


class RegistryServerError(StrataError):
    """The embedded registry could not be started, stopped or inspected."""


@dataclass(frozen=True)
class ServerLayout:
    """The files of one embedded registry under `data_dir`."""

    data_dir: Path

    @property
    def config(self) -> Path:
        return self.data_dir / "config.yml"

    @property
    def state(self) -> Path:
        return self.data_dir / "server.json"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "registry.pid"

    @property
    def log(self) -> Path:
        return self.data_dir / "registry.log"

    @property
    def storage(self) -> Path:
        return self.data_dir / "storage"

    @property
    def ca_cert(self) -> Path:
        return self.data_dir / "tls" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.data_dir / "tls" / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.data_dir / "tls" / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.data_dir / "tls" / "server.key"

    @property
    def htpasswd(self) -> Path:
        return self.data_dir / "auth" / "htpasswd"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "auth" / "password"

    @property
    def http_secret(self) -> Path:
        return self.data_dir / "http-secret"


@dataclass(frozen=True)
class ServerSettings:
    """How to run the embedded registry."""

    data_dir: Path
    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
    tls: bool = False
    htpasswd: bool = False
    trust_in_engine: bool = True

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServerStatus:
    """Whether the embedded registry under `data_dir` runs, and how to reach it."""

    data_dir: Path
    running: bool
    pid: int | None = None
    address: str | None = None
    tls: bool = False
    username: str | None = None
    was_running: bool = False

    @property
    def layout(self) -> ServerLayout:
        return ServerLayout(self.data_dir)

    @property
    def url(self) -> str | None:
        return f"{'https' if self.tls else 'http'}://{self.address}" if self.address else None


def render_config(settings: ServerSettings, layout: ServerLayout, http_secret: str) -> dict[str, object]:
    """The distribution config for `settings`, as a dict (written as YAML).

    A fixed http secret keeps upload sessions valid across restarts, so interrupted uploads can resume.
    """
    http: dict[str, object] = {"addr": settings.address, "secret": http_secret}
    if settings.tls:
        http["tls"] = {"certificate": str(layout.server_cert), "key": str(layout.server_key)}
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(layout.storage)},
            "delete": {"enabled": True},
        },
        "http": http,
        "health": {"storagedriver": {"enabled": False}},
    }
    if settings.htpasswd:
        config["auth"] = {"htpasswd": {"realm": "strata-registry", "path": str(layout.htpasswd)}}
    return config


def _process_alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and REGISTRY_BINARY.encode() in cmdline


def _read_state(layout: ServerLayout) -> dict[str, object]:
    try:
        state: dict[str, object] = json.loads(layout.state.read_text())
        return state
    except (OSError, ValueError):
        return {}


def registry_status(data_dir: Path) -> ServerStatus:
    """Whether a registry started from `data_dir` runs now (a stale pid file counts as not running)."""
    layout = ServerLayout(data_dir)
    state = _read_state(layout)
    try:
        pid = int(layout.pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    running = pid is not None and _process_alive(pid)
    return ServerStatus(
        data_dir=data_dir,
        running=running,
        pid=pid if running else None,
        address=str(state["address"]) if "address" in state else None,
        tls=bool(state.get("tls")),
        username=str(state["username"]) if state.get("username") else None,
    )


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def start_registry(settings: ServerSettings) -> ServerStatus:
    """Start the registry in the background and wait until /v2/ answers; idempotent when it already runs.

    Example: start_registry(ServerSettings(Path(".strata/registry"), port=5000)).address == "127.0.0.1:5000".
    """
    if settings.htpasswd and not settings.tls:
        raise RegistryServerError(
            "htpasswd auth needs --tls: the password would otherwise travel in clear text"
        )
    layout = ServerLayout(settings.data_dir)
    current = registry_status(settings.data_dir)
    if current.running:
        return ServerStatus(**{**asdict(current), "was_running": True})
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise HostError(f"{REGISTRY_BINARY} is not installed (Debian package docker-registry)")
    if not _port_free(settings.host, settings.port):
        raise RegistryServerError(
            f"port {settings.port} on {settings.host} is already in use by another process"
        )
    layout.storage.mkdir(parents=True, exist_ok=True)
    if not layout.http_secret.exists():
        _write_private(layout.http_secret, secrets.token_hex(32))
    username = None
    if settings.tls:
        ensure_tls_files(layout, settings.host)
        if settings.trust_in_engine:
            trust_ca_in_engine(layout.ca_cert, settings.address)
    if settings.htpasswd:
        username = ensure_htpasswd(layout, DEFAULT_USER)
    config = render_config(settings, layout, layout.http_secret.read_text().strip())
    layout.config.write_text(yaml.safe_dump(config, sort_keys=True))
    state = {"address": settings.address, "tls": settings.tls, "username": username}
    layout.state.write_text(json.dumps(state, sort_keys=True))
    with open(layout.log, "ab") as log:
        process = subprocess.Popen(
            [binary, "serve", str(layout.config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    layout.pid_file.write_text(f"{process.pid}\n")
    _wait_until_serving(settings, layout, process)
    return registry_status(settings.data_dir)


def _wait_until_serving(
    settings: ServerSettings, layout: ServerLayout, process: subprocess.Popen[bytes]
) -> None:
    scheme = "https" if settings.tls else "http"
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(layout.ca_cert)) if settings.tls else False
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    with httpx.Client(verify=verify, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                layout.pid_file.unlink(missing_ok=True)
                raise RegistryServerError(
                    f"registry on {settings.address} exited at start (exit {process.returncode}): "
                    f"{_last_log_line(layout)}; full log in {layout.log}"
                )
            try:
                if http.get(f"{scheme}://{settings.address}/v2/").status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise RegistryServerError(
        f"registry on {settings.address} did not answer /v2/ within {START_TIMEOUT_SECONDS:.0f}s; see {layout.log}"
    )


def _last_log_line(layout: ServerLayout) -> str:
    try:
        lines = [line for line in layout.log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "empty log"


def stop_registry(data_dir: Path) -> bool:
    """Stop the registry started from `data_dir` (TERM, then KILL after a timeout); False if it was not running."""
    layout = ServerLayout(data_dir)
    status = registry_status(data_dir)
    if not status.running or status.pid is None:
        layout.pid_file.unlink(missing_ok=True)
        return False
    os.kill(status.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _process_alive(status.pid):
        if time.monotonic() > deadline:
            os.kill(status.pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        time.sleep(0.1)
    layout.pid_file.unlink(missing_ok=True)
    return True


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def ensure_tls_files(layout: ServerLayout, host: str) -> None:
    """Generate a CA and a server certificate for `host` (plus localhost) unless they exist."""
    if layout.server_cert.exists() and layout.server_key.exists() and layout.ca_cert.exists():
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Strata local registry CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        alt_names.append(x509.DNSName(host))
    if host != "127.0.0.1":
        alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=397))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    _write_private(layout.ca_key, key_pem(ca_key))
    _write_private(layout.server_key, key_pem(server_key))
    layout.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    layout.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))


def ensure_htpasswd(layout: ServerLayout, username: str) -> str:
    """Create an htpasswd file (bcrypt) with a generated password unless one exists; return the user name.

    The password is stored only in `layout.password_file` (mode 0600) and never printed.
    """
    if layout.htpasswd.exists() and layout.password_file.exists():
        return layout.htpasswd.read_text().split(":", 1)[0]
    password = secrets.token_urlsafe(24)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    _write_private(layout.password_file, password + "\n")
    _write_private(layout.htpasswd, f"{username}:{hashed}\n")
    return username


def trust_ca_in_engine(ca_file: Path, address: str, certs_dir: Path = ENGINE_CERTS_DIR) -> Path | None:
    """Make the local Docker engine trust `ca_file` for `address` only; None when that directory is not writable."""
    target = certs_dir / address / "ca.crt"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca_file, target)
    except OSError:
        return None
    return target


def local_credentials(data_dir: Path) -> Credentials | None:
    """The generated credentials of the embedded registry under `data_dir`, if it uses htpasswd auth."""
    status = registry_status(data_dir)
    layout = ServerLayout(data_dir)
    if not status.username or not layout.password_file.exists():
        return None
    return Credentials(
        status.username, layout.password_file.read_text().strip(), source=str(layout.password_file)
    )


def local_client(data_dir: Path, retry: RetryPolicy | None = None) -> RegistryClient:
    """A client for the embedded registry under `data_dir`, trusting its CA and using its generated credentials."""
    status = registry_status(data_dir)
    if status.address is None:
        raise RegistryServerError(f"no embedded registry was ever started from {data_dir}")
    ca = ServerLayout(data_dir).ca_cert if status.tls else None
    scheme = "https://" if status.tls else "http://"
    return RegistryClient(
        scheme + status.address,
        credentials=local_credentials(data_dir),
        ca_file=ca,
        retry=retry or RetryPolicy(),
    )

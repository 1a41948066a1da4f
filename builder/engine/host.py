"""The build host: a reachable Docker engine, the Debian tools Strata shells out to, and free disk.

`strata build` calls these so that it also works when the user skipped scripts/setup-host.sh:
missing pieces are installed or started when we are root, otherwise a one-line HostError says what to do.
Pure helpers (parsing dpkg-query output, building apt command lines, formatting sizes) sit apart from
the functions that run things.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import docker
import docker.errors

from builder.engine.client import ENGINE_ERRORS, connect
from builder.errors import HostError
from builder.settings import Settings

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DOCKERD_LOG = Path("/var/log/strata-dockerd.log")
DOCKERD_WAIT_SECONDS = 30.0
APT_LOCK_TIMEOUT_SECONDS = 300
SETUP_HINT = "run scripts/setup-host.sh or start dockerd"


# --- pure helpers -------------------------------------------------------------------------------


def docker_host_url(environ: Mapping[str, str]) -> str:
    """The engine address the docker SDK and CLI will use: DOCKER_HOST or the default unix socket."""
    return environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def is_local_default_socket(url: str) -> bool:
    """True when `url` is the socket a locally started dockerd listens on (so starting it can help)."""
    return url in (DEFAULT_DOCKER_HOST, "unix://var/run/docker.sock", "unix:///run/docker.sock")


def parse_dpkg_query(text: str) -> dict[str, str]:
    """Map package name -> status word from `dpkg-query -W -f='${Package} ${db:Status-Status}\\n'` output.

    >>> parse_dpkg_query("mmdebstrap installed\\nskopeo config-files\\n")
    {'mmdebstrap': 'installed', 'skopeo': 'config-files'}
    """
    statuses: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            name = parts[0].split(":", 1)[0]  # drop a multi-arch qualifier like ":amd64"
            statuses[name] = parts[1]
    return statuses


def missing_packages(wanted: Iterable[str], statuses: Mapping[str, str]) -> list[str]:
    """Packages of `wanted` (in order, without duplicates) that dpkg does not report as installed."""
    missing: list[str] = []
    for name in wanted:
        if statuses.get(name) != "installed" and name not in missing:
            missing.append(name)
    return missing


def apt_install_argv(packages: Sequence[str]) -> list[str]:
    """The apt-get command line that installs `packages` non-interactively, waiting on a busy dpkg lock."""
    return [
        "apt-get",
        "-o",
        f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_SECONDS}",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        *packages,
    ]


def apt_update_argv() -> list[str]:
    """The apt-get command line that refreshes the package lists once before installing."""
    return ["apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_SECONDS}", "update", "-qq"]


def format_bytes(n: int) -> str:
    """Human size with binary units: `format_bytes(3 * 2**30) == '3.0 GiB'`."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def last_lines(text: str, count: int = 3) -> str:
    """The last `count` non-empty lines of a log joined into one line (for one-line errors)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def unreachable_reason(url: str, raw_reason: str, socket_exists: bool) -> str:
    """Say why the engine at `url` did not answer in words a user acts on (falls back to `raw_reason`).

    >>> unreachable_reason("unix:///var/run/docker.sock", "('Connection aborted.', ...)", False)
    'no socket at /var/run/docker.sock (dockerd is not running)'
    """
    if url.startswith("unix://") and not socket_exists:
        return f"no socket at {url.removeprefix('unix://')} (dockerd is not running)"
    if "Permission denied" in raw_reason or "PermissionError" in raw_reason:
        return "permission denied on the socket (run as root or join the docker group)"
    return raw_reason


def short_reason(exc: BaseException) -> str:
    """A one-line reason from an exception raised while connecting to the engine."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


# --- effects ------------------------------------------------------------------------------------


def is_root() -> bool:
    """True when running with euid 0 (so apt-get and dockerd can be run directly)."""
    return os.geteuid() == 0


def ensure_engine(
    settings: Settings, auto_start: bool = True, wait_seconds: float = DOCKERD_WAIT_SECONDS
) -> docker.DockerClient:
    """Return a docker client whose engine answers a ping, starting dockerd first if needed and allowed.

    dockerd is started only when `auto_start` is true, we are root, dockerd is installed and the
    client targets the default local socket. Otherwise (or if it does not come up) raise a HostError:
    `Docker engine not reachable at unix:///var/run/docker.sock: <reason>; run scripts/setup-host.sh ...`.
    """
    url = docker_host_url(settings.environ)
    try:
        return connect(settings, timeout=10)
    except ENGINE_ERRORS as exc:
        socket_exists = Path(url.removeprefix("unix://")).exists() if url.startswith("unix://") else True
        reason = unreachable_reason(url, short_reason(exc), socket_exists)
    dockerd = shutil.which("dockerd")
    if not (auto_start and is_root() and dockerd and is_local_default_socket(url)):
        raise HostError(f"Docker engine not reachable at {url}: {reason}; {SETUP_HINT}")
    start_dockerd(settings, dockerd, DOCKERD_LOG, wait_seconds)
    try:
        return connect(settings, timeout=10)
    except ENGINE_ERRORS as exc:
        raise HostError(
            f"Docker engine not reachable at {url} after starting dockerd: {short_reason(exc)}; "
            f"see {DOCKERD_LOG}"
        ) from None


def start_dockerd(settings: Settings, dockerd: str, log_path: Path, wait_seconds: float) -> None:
    """Start `dockerd` detached (output appended to `log_path`) and wait until it answers a ping.

    Raise HostError with the last log lines if it exits or does not answer within `wait_seconds`.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # A new session so the daemon outlives this process and its terminal, like `nohup ... &`.
        proc = subprocess.Popen(
            [dockerd], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            connect(settings, timeout=2).close()
            return
        except ENGINE_ERRORS:
            time.sleep(0.5)
    state = (
        f"exited with {proc.returncode}" if proc.poll() is not None else f"no answer in {wait_seconds:.0f}s"
    )
    tail = last_lines(log_path.read_text(errors="replace")[-4000:]) if log_path.exists() else "(no log)"
    raise HostError(f"dockerd did not come up ({state}); last lines of {log_path}: {tail}")


def installed_statuses(packages: Sequence[str]) -> dict[str, str]:
    """Ask dpkg-query for the status of `packages` (absent packages are simply not in the result)."""
    if shutil.which("dpkg-query") is None:
        raise HostError("dpkg-query not found: Strata's host set-up needs a Debian or Ubuntu build host")
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
        capture_output=True,
        text=True,
        check=False,  # exit status 1 only means some packages are unknown
    )
    return parse_dpkg_query(proc.stdout)


def ensure_tools(names: Iterable[str], environ: Mapping[str, str]) -> list[str]:
    """Make sure the Debian packages `names` are installed; apt-install the missing ones when root.

    Return the packages that were installed (empty when all were present, so no apt runs at all).
    Raise HostError naming the missing packages when not root or when apt fails. apt runs with `environ`.
    """
    wanted = list(dict.fromkeys(names))
    missing = missing_packages(wanted, installed_statuses(wanted))
    if not missing:
        return []
    listed = " ".join(missing)
    if not is_root():
        raise HostError(f"missing Debian packages: {listed}; run `apt-get install {listed}` as root")
    env = {**environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (apt_update_argv(), apt_install_argv(missing)):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise HostError(
                f"`{' '.join(argv)}` failed ({last_lines(proc.stderr or proc.stdout, 1)}); "
                f"install {listed} by hand"
            )
    still = missing_packages(missing, installed_statuses(missing))
    if still:
        raise HostError(f"apt-get reported success but {' '.join(still)} is still not installed")
    return missing


def check_free_disk(path: Path, need_bytes: int) -> int:
    """Raise HostError unless the filesystem holding `path` has `need_bytes` free; return the free bytes.

    `path` need not exist yet: its nearest existing parent decides the filesystem.
    """
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need_bytes:
        raise HostError(
            f"not enough disk for {path}: {format_bytes(free)} free on the filesystem of {probe}, "
            f"need {format_bytes(need_bytes)}; free space (e.g. `docker system prune`) or move the cache"
        )
    return free

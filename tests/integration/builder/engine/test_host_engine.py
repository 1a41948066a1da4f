"""builder.engine.host and builder.engine.caps against this machine's real Docker engine and CLIs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from builder.engine import caps as engine_caps
from builder.engine import host
from builder.errors import HostError
from builder.settings import Settings, resolve_settings


def run_settings() -> Settings:
    """What the CLI would resolve now: the test's (possibly monkeypatched) environment."""
    return resolve_settings(os.environ)


pytestmark = pytest.mark.engine


@pytest.fixture
def client(engine: docker.DockerClient) -> Iterator[docker.DockerClient]:
    """host.ensure_engine's client (asked after the shared `engine` fixture, so a missing engine follows its rule)."""
    engine = host.ensure_engine(run_settings(), auto_start=False)
    yield engine
    engine.close()


def test_ensure_engine_returns_a_client_that_talks_to_the_running_engine(client: docker.DockerClient) -> None:
    assert client.ping() is True
    assert client.version()["Version"]


def test_ensure_engine_is_idempotent_with_auto_start(client: docker.DockerClient) -> None:
    # The engine is up, so auto_start must not start a second dockerd: same daemon id both times.
    again = host.ensure_engine(run_settings(), auto_start=True)
    try:
        assert again.info()["ID"] == client.info()["ID"]
    finally:
        again.close()


def test_missing_daemon_gives_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    socket = tmp_path / "no-such-dir" / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    with pytest.raises(HostError) as info:
        host.ensure_engine(run_settings(), auto_start=False)
    message = str(info.value)
    assert message.startswith(f"Docker engine not reachable at unix://{socket}: ")
    assert f"no socket at {socket} (dockerd is not running)" in message
    assert message.endswith("run scripts/setup-host.sh or start dockerd")
    assert "\n" not in message


def test_auto_start_does_not_touch_a_non_default_socket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Starting dockerd cannot create an engine at an arbitrary DOCKER_HOST, so we must not try.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    with pytest.raises(HostError, match="Docker engine not reachable"):
        host.ensure_engine(run_settings(), auto_start=True)
    assert not (tmp_path / "docker.sock").exists()


def test_ensure_tools_is_a_no_op_when_everything_is_installed() -> None:
    assert host.ensure_tools(["dpkg", "mmdebstrap", "dpkg"], os.environ) == []


def test_ensure_tools_names_a_package_apt_does_not_know(require: Callable[[bool, str], None]) -> None:
    require(
        host.is_root(),
        "as non-root ensure_tools refuses before apt; this checks the apt failure path (as root)",
    )
    with pytest.raises(HostError) as info:
        host.ensure_tools(["strata-no-such-package"], os.environ)
    assert "strata-no-such-package" in str(info.value)
    assert "\n" not in str(info.value)


def test_detect_builder_picks_buildkit_through_the_debian_cli(client: docker.DockerClient) -> None:
    engine_caps.clear_cache()
    env = {**os.environ, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    env.pop("STRATA_BUILDER", None)
    if not Path("/usr/local/bin/docker").exists() or not Path("/usr/bin/docker").exists():
        pytest.skip("this checks the shadowing shape of the Strata build host (both CLIs present)")
    choice = engine_caps.detect_builder(client, env)
    assert choice.kind == "buildkit-cli"
    assert choice.cli == "/usr/bin/docker"
    assert choice.engine_version == client.version()["Version"]
    assert engine_caps.detect_builder(client, env) is choice  # cached per process


def test_a_build_through_the_chosen_builder_works_and_uses_buildkit(client: docker.DockerClient) -> None:
    engine_caps.clear_cache()
    env = {**os.environ, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    env.pop("STRATA_BUILDER", None)
    choice = engine_caps.detect_builder(client, env)
    if choice.kind == "legacy":
        pytest.fail(f"expected a BuildKit path on this host, got legacy: {choice.reason}")
    tag = f"strata-test-caps:{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        (context / "hello.txt").write_text("hello\n")
        (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
        argv = choice.build_argv(context, tag)
        proc = subprocess.run(
            argv, env=choice.build_env(env), capture_output=True, text=True, timeout=300, check=False
        )
        output = proc.stdout + proc.stderr
        try:
            assert proc.returncode == 0, output
            # BuildKit's progress output, which the legacy builder ("Step 1/2 : FROM scratch") never prints.
            assert "load build definition from Dockerfile" in output
            assert "Step 1/2" not in output
            image = client.images.get(tag)
            assert image.attrs["RootFS"]["Layers"]
        finally:
            client.images.remove(tag, force=True)


def test_the_shadowing_new_cli_really_cannot_build_with_buildkit() -> None:
    # Guards the premise of detect_builder: trusting the first docker on PATH would fail here.
    cli = shutil.which("docker", path="/usr/local/bin")
    if cli is None:
        pytest.skip("no /usr/local/bin/docker on this host")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Dockerfile").write_text("FROM scratch\n")
        proc = subprocess.run(
            [cli, "build", "-q", tmp],
            check=False,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode != 0
    assert "buildx" in proc.stderr


def test_override_legacy_builds_through_the_sdk(client: docker.DockerClient) -> None:
    engine_caps.clear_cache()
    choice = engine_caps.detect_builder(client, {**os.environ, "STRATA_BUILDER": "legacy"})
    assert (choice.kind, choice.cli) == ("legacy", None)


def test_start_dockerd_reports_a_daemon_that_dies_with_its_last_log_lines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A real process standing in for a dockerd that cannot start; the running engine is left alone
    # because DOCKER_HOST points the readiness check at a socket nobody serves.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    failing = tmp_path / "dockerd"
    failing.write_text(
        "#!/bin/sh\necho 'starting up'\necho 'failed to start daemon: pid file found' >&2\nexit 1\n"
    )
    failing.chmod(0o755)
    log = tmp_path / "logs" / "dockerd.log"
    started = time.monotonic()
    with pytest.raises(HostError) as info:
        host.start_dockerd(run_settings(), str(failing), log, wait_seconds=20)
    assert time.monotonic() - started < 10  # noticed the exit, did not sit out the whole wait
    message = str(info.value)
    assert "dockerd did not come up (exited with 1)" in message
    assert "starting up | failed to start daemon: pid file found" in message
    assert "\n" not in message


SETUP_SCRIPT = Path(__file__).resolve().parents[4] / "scripts" / "setup-host.sh"
SETUP_PACKAGES = ("docker.io", "mmdebstrap", "docker-registry", "skopeo", "docker-compose", "busybox-static",
                  "uidmap", "diffoscope-minimal")  # fmt: skip


def test_setup_host_is_a_fast_no_op_on_a_ready_host(
    client: docker.DockerClient, require: Callable[[bool, str], None]
) -> None:
    missing = host.missing_packages(SETUP_PACKAGES, host.installed_statuses(SETUP_PACKAGES))
    require(
        not missing, f"host not set up yet ({' '.join(missing)} missing): run scripts/setup-host.sh first"
    )
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(SETUP_SCRIPT)],
        env={**os.environ, "STRATA_SETUP_VENV": "0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "setup-host: packages present" in proc.stdout
    assert "setup-host: docker engine running" in proc.stdout
    assert "installing" not in proc.stdout and "starting dockerd" not in proc.stdout
    assert elapsed < 10


def test_a_real_second_dockerd_that_refuses_to_start_gives_its_reason(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    client: docker.DockerClient,
    require: Callable[[bool, str], None],
) -> None:
    # The running engine holds /var/run/docker.pid, so a second real dockerd exits at once without
    # touching it: this drives the start path with the real binary and a real failure.
    dockerd = shutil.which("dockerd")
    require(
        dockerd is not None and host.is_root() and Path("/var/run/docker.pid").exists(),
        "needs root, dockerd and a running engine that owns /var/run/docker.pid",
    )
    assert dockerd is not None
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    log = tmp_path / "dockerd.log"
    with pytest.raises(HostError) as info:
        host.start_dockerd(run_settings(), dockerd, log, wait_seconds=30)
    message = str(info.value)
    assert "dockerd did not come up (exited with 1)" in message
    assert "pid file found" in message
    assert client.ping() is True  # the running engine is unharmed

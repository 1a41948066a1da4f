"""Pure parts of builder.engine.host: dpkg-query parsing, apt command lines, sizes, one-line reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.engine import host
from builder.errors import HostError


def test_docker_host_url_defaults_to_the_local_socket() -> None:
    assert host.docker_host_url({}) == "unix:///var/run/docker.sock"
    assert host.docker_host_url({"DOCKER_HOST": ""}) == "unix:///var/run/docker.sock"
    assert host.docker_host_url({"DOCKER_HOST": "tcp://10.0.0.2:2375"}) == "tcp://10.0.0.2:2375"


def test_only_the_default_local_socket_is_worth_starting_dockerd_for() -> None:
    assert host.is_local_default_socket("unix:///var/run/docker.sock")
    assert not host.is_local_default_socket("unix:///tmp/other.sock")
    assert not host.is_local_default_socket("tcp://127.0.0.1:2375")


def test_parse_dpkg_query_reads_status_and_drops_arch_qualifier() -> None:
    text = "mmdebstrap installed\nskopeo config-files\nlibc6:amd64 installed\n\nbroken\n"
    assert host.parse_dpkg_query(text) == {
        "mmdebstrap": "installed",
        "skopeo": "config-files",
        "libc6": "installed",
    }


def test_missing_packages_keeps_order_and_treats_config_files_as_missing() -> None:
    statuses = {"mmdebstrap": "installed", "skopeo": "config-files"}
    wanted = ["skopeo", "mmdebstrap", "uidmap", "skopeo"]
    assert host.missing_packages(wanted, statuses) == ["skopeo", "uidmap"]
    assert host.missing_packages(["mmdebstrap"], statuses) == []


def test_apt_install_argv_is_noninteractive_minimal_and_waits_for_the_lock() -> None:
    argv = host.apt_install_argv(["skopeo", "uidmap"])
    assert argv[0] == "apt-get"
    assert argv[-3:] == ["--no-install-recommends", "skopeo", "uidmap"]
    assert "-y" in argv
    assert "DPkg::Lock::Timeout=300" in argv
    assert host.apt_update_argv()[-2:] == ["update", "-qq"]


@pytest.mark.parametrize(
    ("n", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 2**30, "3.0 GiB"), (5 * 2**40, "5120.0 GiB")],
)
def test_format_bytes(n: int, shown: str) -> None:
    assert host.format_bytes(n) == shown


def test_last_lines_joins_the_tail_into_one_line() -> None:
    log = "a\n\nb\nc\nfailed to start daemon: x\n"
    assert host.last_lines(log, 2) == "c | failed to start daemon: x"
    assert "\n" not in host.last_lines(log)


def test_short_reason_is_the_last_line_of_the_message() -> None:
    assert host.short_reason(OSError("first\nNo such file or directory")) == "No such file or directory"
    assert host.short_reason(ValueError()) == "ValueError"


def test_check_free_disk_passes_and_fails_with_a_clear_message(tmp_path: Path) -> None:
    not_yet = tmp_path / "cache" / "rootfs"
    free = host.check_free_disk(not_yet, 1)
    assert free > 0
    with pytest.raises(HostError) as info:
        host.check_free_disk(not_yet, free * 1000 + 2**40)
    message = str(info.value)
    assert str(not_yet) in message
    assert "free on the filesystem of" in message and "need" in message
    assert "\n" not in message


def test_unreachable_reason_explains_common_cases() -> None:
    url = "unix:///var/run/docker.sock"
    assert host.unreachable_reason(url, "raw", socket_exists=False) == (
        "no socket at /var/run/docker.sock (dockerd is not running)"
    )
    assert "run as root or join the docker group" in host.unreachable_reason(
        url, "('Connection aborted.', PermissionError(13, 'Permission denied'))", socket_exists=True
    )
    assert (
        host.unreachable_reason("tcp://h:2375", "Connection refused", socket_exists=True)
        == "Connection refused"
    )

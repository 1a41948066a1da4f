"""The run lock with real processes: a second run waits and says for whom, a killed holder frees the lock at once,
--no-wait and --wait-timeout fail with exit code 75, and read-only commands never wait."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from builder.settings import resolve_settings
from builder.state_lock import LockHolder, RunLockBusy, lock_paths, parse_holder, read_holder, run_lock

REPO = Path(__file__).resolve().parents[3]

# A process that takes the run lock like a strata command, says so on stdout, and holds it until stdin closes.
HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from builder.state_lock import run_lock
    paths = [Path(p) for p in sys.argv[1:]]
    with run_lock(paths, "strata build --only tf2.13.1-cpu",
                  on_wait=lambda h: print("waiting for", h.describe(), flush=True)):
        print("holding", flush=True)
        sys.stdin.read()
    print("released", flush=True)
    """
)


def start_holder(paths: list[Path]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *map(str, paths)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return proc


def wait_for_line(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """The next line the process prints; fails the test after `timeout` seconds of silence."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no output from pid {proc.pid} within {timeout} s"
    return proc.stdout.readline().strip()


def test_parse_holder_reads_pid_and_command() -> None:
    assert parse_holder("4242 strata build --only 'tf2.13.1-*'\n") == LockHolder(
        4242, "strata build --only 'tf2.13.1-*'"
    )
    assert parse_holder("") == LockHolder(None, "")
    assert parse_holder("garbage") == LockHolder(None, "")
    assert LockHolder(7, "strata gc").describe() == "pid 7: strata gc"
    assert LockHolder(None, "").describe() == "pid unknown"


def test_lock_paths_cover_the_state_root_and_the_checkout(tmp_path: Path) -> None:
    settings = resolve_settings({"STRATA_HOME": str(tmp_path / "home")}, tmp_path / "repo" / "matrix.yaml")
    assert lock_paths(settings) == [tmp_path / "home" / "lock", tmp_path / "repo" / "build" / ".lock"]
    assert lock_paths(settings, checkout=False) == [tmp_path / "home" / "lock"]


def test_a_second_process_waits_says_for_whom_and_runs_after_the_first(tmp_path: Path) -> None:
    paths = [tmp_path / "state" / "lock", tmp_path / "work" / ".lock"]
    first = start_holder(paths)
    second = None
    try:
        assert wait_for_line(first) == "holding"
        assert read_holder(paths[0]) == LockHolder(first.pid, "strata build --only tf2.13.1-cpu")
        second = start_holder(paths)
        assert wait_for_line(second) == f"waiting for pid {first.pid}: strata build --only tf2.13.1-cpu"
        time.sleep(0.5)
        assert second.poll() is None  # still waiting while the first holds the lock
        assert first.stdin is not None
        first.stdin.close()
        assert wait_for_line(first) == "released"
        assert wait_for_line(second) == "holding"
        assert read_holder(paths[0]).pid == second.pid
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    paths = [tmp_path / "lock"]
    first = start_holder(paths)
    try:
        assert wait_for_line(first) == "holding"
        with pytest.raises(RunLockBusy):
            with run_lock(paths, "strata gc", wait=False):
                pass
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        waited: list[LockHolder] = []
        with run_lock(paths, "strata gc", timeout=10, on_wait=waited.append):
            assert read_holder(paths[0]) == LockHolder(os.getpid(), "strata gc")
        assert waited == []  # the kernel dropped the dead holder's lock: nobody to wait for
        assert read_holder(paths[0]) == LockHolder(None, "")  # a free lock names no holder
    finally:
        first.kill()
        first.wait()


def test_no_wait_and_timeout_fail_naming_the_holder(tmp_path: Path) -> None:
    # The exit code (75) is cli/exit_codes.py's: the `strata fetch --no-wait` test below checks it for real.
    paths = [tmp_path / "lock"]
    first = start_holder(paths)
    try:
        assert wait_for_line(first) == "holding"
        with pytest.raises(RunLockBusy) as busy:
            with run_lock(paths, "strata push", wait=False):
                pytest.fail("the lock is held by another process")
        assert f"pid {first.pid}: strata build --only tf2.13.1-cpu" in str(busy.value)
        told: list[LockHolder] = []
        start = time.monotonic()
        with pytest.raises(RunLockBusy) as late:
            with run_lock(paths, "strata push", timeout=0.6, on_wait=told.append):
                pytest.fail("the lock is held by another process")
        assert 0.5 <= time.monotonic() - start < 5
        assert told == [LockHolder(first.pid, "strata build --only tf2.13.1-cpu")]
        assert "gave up waiting" in str(late.value)
    finally:
        first.kill()
        first.wait()


def test_cli_no_wait_is_one_line_and_exit_75_and_a_dry_run_takes_no_lock(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_holder([home / "lock"])
    try:
        assert wait_for_line(first) == "holding"
        env = {**os.environ, "PYTHONPATH": str(REPO), "STRATA_HOME": str(home)}
        proc = subprocess.run(
            [sys.executable, "-m", "cli.main", "fetch", "--no-wait", "-f", str(REPO / "matrix.yaml")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 75, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("strata: another strata run holds "), proc.stderr
        assert f"pid {first.pid}" in lines[0]
        check = subprocess.run(
            [sys.executable, "-m", "cli.main", "lock", "--check", "-f", str(REPO / "matrix.yaml")],
            cwd=REPO,
            env={**env, "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "waiting" not in check.stderr and check.returncode in (0, 1), check.stderr
    finally:
        first.kill()
        first.wait()

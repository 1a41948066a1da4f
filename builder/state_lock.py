"""One Strata run at a time per state root and per checkout: an advisory file lock held for a whole command.

Commands that write shared state (build, verify, push, lock, fetch, gc; sync and registry push-archive, which use
the state root's scratch and compressed layers but no checkout, only the first) hold `fcntl.flock` on
`<state root>/lock` (wheelhouse, root filesystems, compressed layers, registry data, results) and on
`<matrix root>/build/.lock` (build logs, contexts, the served wheelhouse, images.lock.json): two runs with one state
root but two checkouts, or one checkout and two state roots, still never share a file. The kernel drops a flock when
its process dies, so a crashed or killed run never leaves a stale lock; the pid and command written into the file
only name the holder in the message of the run that waits. Read-only commands (plan, render, lock --check) take
no lock.

    with run_lock(lock_paths(settings), "strata build --only tf2.13.1-cpu", on_wait=print_once):
        ...
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder.errors import StrataError
from builder.settings import Settings

LOCK_NAME = "lock"
WORK_LOCK_NAME = ".lock"
# How often a run with a deadline retries; a run without one blocks in flock itself.
POLL_SECONDS = 0.2


class RunLockBusy(StrataError):
    """Another Strata run holds the lock and this one was told not to wait (or waited past its deadline)."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run lock, as the holder wrote it: `pid command` on the file's one line."""

    pid: int | None
    command: str

    def describe(self) -> str:
        """`pid 4242: strata build --only tf2.13.1-cpu` (or what is known of it)."""
        if self.pid is None:
            return "pid unknown"
        return f"pid {self.pid}: {self.command}" if self.command else f"pid {self.pid}"


def lock_paths(settings: Settings, checkout: bool = True) -> list[Path]:
    """The lock files of a run, in the order every run takes them (state root first, then the checkout, for
    commands that use one)."""
    paths = [settings.state_root / LOCK_NAME]
    return [*paths, settings.work_dir / WORK_LOCK_NAME] if checkout else paths


def parse_holder(text: str) -> LockHolder:
    """The holder a lock file names (pure). Example: `parse_holder("42 strata gc\\n")` -> pid 42, `strata gc`."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    pid_text, _, command = first.partition(" ")
    return LockHolder(int(pid_text), command.strip()) if pid_text.isdigit() else LockHolder(None, "")


def read_holder(path: Path) -> LockHolder:
    """The holder named in the lock file `path` (pid unknown when the file is empty or missing)."""
    try:
        return parse_holder(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return LockHolder(None, "")


@contextmanager
def run_lock(
    paths: Sequence[Path],
    command: str,
    *,
    wait: bool = True,
    timeout: float | None = None,
    on_wait: Callable[[LockHolder], None] = lambda holder: None,
) -> Iterator[None]:
    """Hold every lock of `paths` (in order) for the body; `on_wait` is called once if some other run holds one.

    wait=False, or a `timeout` in seconds that passes, raises RunLockBusy naming the holder instead of waiting.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False

    def tell(holder: LockHolder) -> None:
        nonlocal told
        if not told:
            told = True
            on_wait(holder)

    with ExitStack() as stack:
        for path in paths:
            handle = stack.enter_context(_open_lock_file(path))
            _acquire(handle, path, wait, deadline, tell)
            stack.callback(fcntl.flock, handle.fileno(), fcntl.LOCK_UN)
            stack.callback(handle.truncate, 0)  # runs first: a free lock names no holder
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()} {command}\n")
            handle.flush()
        yield


@contextmanager
def _open_lock_file(path: Path) -> Iterator[IO[str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # "a+" creates the file without truncating it: the holder's line stays readable until we own the lock.
    with open(path, "a+", encoding="utf-8") as handle:
        yield handle


def _acquire(
    handle: IO[str], path: Path, wait: bool, deadline: float | None, tell: Callable[[LockHolder], None]
) -> None:
    if _try_lock(handle):
        return
    holder = _holder_of(path)
    if not wait:
        raise RunLockBusy(f"another strata run holds {path} ({holder.describe()}); not waiting (--no-wait)")
    tell(holder)
    if deadline is None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        return
    while not _try_lock(handle):
        if time.monotonic() >= deadline:
            raise RunLockBusy(
                f"another strata run still holds {path} ({_holder_of(path).describe()}); gave up waiting"
            )
        time.sleep(POLL_SECONDS)


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder_of(path: Path) -> LockHolder:
    # The holder writes its line just after it takes the lock: give it a moment before saying "unknown".
    for _ in range(10):
        holder = read_holder(path)
        if holder.pid is not None:
            return holder
        time.sleep(0.05)
    return read_holder(path)

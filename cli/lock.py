"""`strata lock` and `strata fetch`: pin every input, and download the pinned wheels once."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from builder.build.orchestrate import ensure_base_image
from builder.errors import Location, StrataError
from builder.events import EventSink, LockChecked, LockState, tee
from builder.lock.fetch import fetch_wheels
from builder.lock.indexes import read_pip_indexes
from builder.lock.pip_resolver import InImageResolver
from builder.lock.resolve import LockStatus, lock_states, write_locks
from builder.matrix.load import load_matrix
from builder.matrix.release import bump_release
from builder.plan.graph import Plan, build_plan
from builder.plan.lockfile import Lock, LockError, read_lock
from builder.settings import Settings
from cli.common import (
    add_events_arg,
    add_matrix_args,
    add_wait_args,
    load_plan,
    open_events,
    settings_for,
    with_run_lock,
)
from cli.github import github_error, under_github_actions
from cli.lock_channel import register_pull
from cli.output import add_format_arg, add_progress_arg, print_json, progress_mode, wants_json
from cli.progress import FetchMeter, Reporter, lock_message
from registry_sync.publish.cache import open_registry_cache


def register(sub: Any) -> None:
    p = sub.add_parser(
        "lock",
        help="pin every input: wheels with sha256, base root filesystems and their Debian packages",
        description="Resolve each node's requirements for its Python and platform into locks/<profile>/<node>.lock.\n"
        "Re-running with nothing changed writes nothing.\n\nexample: strata lock --check",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_matrix_args(p)
    p.add_argument(
        "--check",
        action="store_true",
        help="only report; exit 1 if any lock is missing, stale or tampered (edited, or naming a wheel on a host "
        "that is neither PyPI nor an index of pip's configuration)",
    )
    p.add_argument(
        "--refresh", action="store_true", help="re-resolve even fresh locks (picks up new releases)"
    )
    p.add_argument(
        "--bump-release",
        action="store_true",
        help="if any lock changed, increment `release` in the matrix so new version tags never collide with old ones",
    )
    add_format_arg(p, choices=("text", "json"), default="text")
    add_progress_arg(p)
    add_events_arg(p)
    add_wait_args(p)
    p.set_defaults(func=with_run_lock(cmd_lock, unless=lambda args: args.check))
    # `strata lock pull` (cli/lock_channel.py); without it, `strata lock` pins inputs as above.
    register_pull(p.add_subparsers(dest="lock_action", metavar="{pull}"))

    p = sub.add_parser(
        "fetch",
        help="download every locked wheel once into the content-addressed wheelhouse",
        description="Download and sha256-verify every wheel the selected locks name; corrupt files are re-fetched.\n\n"
        "example: strata fetch --only 'tf2.13.1-*'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_matrix_args(p)
    add_format_arg(p, choices=("text", "json"), default="text")
    add_progress_arg(p)
    add_wait_args(p)
    p.set_defaults(func=with_run_lock(cmd_fetch))


def with_pip_indexes(settings: Settings) -> Settings:
    """`settings` with the package indexes of pip's configuration (a PyPI mirror locks and fetches may use)."""
    found = read_pip_indexes(settings.environ)
    return dataclasses.replace(
        settings, package_index=found.index_url, extra_package_indexes=found.extra_index_urls
    )


class _LenientLocks:
    """Reads locks for `strata lock`: a lock that fails to read is remembered and read as missing."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.failed: dict[str, StrataError] = {}

    def __call__(self, path: Path) -> Lock | None:
        try:
            return read_lock(path)
        except LockError as exc:
            self.failed[str(path.resolve().relative_to(self.root.resolve()))] = exc
            return None


def _lenient_plan(args: argparse.Namespace, settings: Settings) -> tuple[Plan, _LenientLocks]:
    matrix = load_matrix(args.matrix, args.profile, settings.registry_override)
    reader = _LenientLocks(matrix.root)
    return build_plan(matrix, lock_reader=reader).select(args.only), reader


def cmd_lock(args: argparse.Namespace) -> int:
    with open_events(args) as record:
        return _lock(args, record)


def _lock(args: argparse.Namespace, record: EventSink) -> int:
    settings = with_pip_indexes(settings_for(args))
    plan, reader = _lenient_plan(args, settings)
    if args.check:
        states = lock_states(plan, settings.package_indexes, reader.failed)
        for s in states:
            record(LockChecked(s.node, s.path, s.state, s.line, s.reason))
        bad = [s for s in states if s.state is not LockState.OK]
        for s in bad:
            print(s.describe(), file=sys.stderr)
            if under_github_actions():
                print(github_error(Location(s.path, s.line or 1), f"{s.state}: {s.reason}"), file=sys.stderr)
        if wants_json(args):
            print_json(
                "lock",
                {"check": True, "ok": not bad, "locks": [_lock_json(s) for s in states], "release": None},
            )
        elif bad:
            print(f"{len(bad)} of {len(states)} locks are not current: run `strata lock`", file=sys.stderr)
        else:
            print(f"all {len(states)} locks are current")
        return 1 if bad else 0
    text = sys.stderr if wants_json(args) else sys.stdout
    for path, exc in reader.failed.items():
        print(f"{path} does not verify ({exc.message}); resolving it again", file=sys.stderr)
    reporter = Reporter(progress_mode(args), total=len(plan.nodes), message=lock_message, title="lock")
    # The base image a resolution runs in may be built first: its build events go to --events only.
    resolver = InImageResolver(
        settings,
        lambda engine, plan, base: ensure_base_image(
            engine, plan, base, settings, [lambda: open_registry_cache(plan.matrix, settings)], record
        ),
    )
    with reporter:
        results = write_locks(
            plan,
            settings.ensure(settings.cache_dir),
            resolver,
            settings.environ,
            refresh=args.refresh,
            on_event=tee(reporter, record),
            lock_reader=reader,
        )
    written = [r for r in results if r.state is LockState.WRITTEN]
    for r in written:
        print(f"wrote {r.path}", file=text)
    print(f"{len(written)} lock(s) written, {len(results) - len(written)} unchanged", file=text)
    release = None
    if args.bump_release and written:
        release = bump_release(Path(args.matrix))
        print(f"release bumped to {release} in {args.matrix}: new version tags end in -r{release}", file=text)
    if wants_json(args):
        print_json(
            "lock",
            {"check": False, "ok": True, "locks": [_lock_json(r) for r in results], "release": release},
        )
    return 0


def _lock_json(status: LockStatus) -> dict[str, Any]:
    return {
        "node": status.node,
        "path": status.path,
        "state": str(status.state),
        "line": status.line,
        "reason": status.reason,
    }


def cmd_fetch(args: argparse.Namespace) -> int:
    settings = with_pip_indexes(settings_for(args))
    plan = load_plan(args, settings)
    wheels = [w for n in plan.nodes if n.lock for w in n.lock.wheels]
    with FetchMeter(progress_mode(args)) as meter:
        result = fetch_wheels(
            settings.ensure(settings.cache_dir),
            wheels,
            repair=True,
            progress=meter,
            environ=settings.environ,
            indexes=settings.package_indexes,
        )
    meter.finish()
    text = sys.stderr if wants_json(args) else sys.stdout
    for name in result.repaired:
        print(f"re-fetched {name}: the stored file failed its sha256 check", file=text)
    print(
        f"{result.downloaded} downloaded ({result.bytes_downloaded / 1e6:.1f} MB), {result.reused} already verified",
        file=text,
    )
    if wants_json(args):
        print_json(
            "fetch",
            {
                "downloaded": result.downloaded,
                "reused": result.reused,
                "bytes_downloaded": result.bytes_downloaded,
                "repaired": list(result.repaired),
                "files": [{"filename": n, "bytes": b} for n, b in sorted(meter.files.items())],
            },
        )
    return 0

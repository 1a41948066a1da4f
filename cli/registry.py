"""`strata registry ...`: run the embedded registry and push an image archive by hand."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from builder.errors import StrataError
from builder.settings import REGISTRY_CA_ENV
from cli.common import add_wait_args, settings_for, with_run_lock
from cli.output import add_format_arg, print_json, wants_json
from registry_sync.publish.push import push_archive
from registry_sync.publish.tag_policy import AuditLog
from registry_sync.registry.connect import client_for
from registry_sync.registry.server import (
    DEFAULT_PORT,
    ServerLayout,
    ServerSettings,
    registry_status,
    start_registry,
    stop_registry,
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `strata registry {up,down,status,push-archive}`."""
    registry = subparsers.add_parser(
        "registry",
        help="run the embedded registry; push an image archive",
        description="Run Strata's embedded registry (Debian's docker-registry on 127.0.0.1).\n\n"
        "example: strata registry up --port 5000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = registry.add_subparsers(dest="registry_command", metavar="ACTION")
    registry.set_defaults(func=lambda args: (registry.print_help(), 2)[1])

    def data_dir_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="state directory (default: <state root>/registry: $STRATA_HOME/registry or .strata/registry)",
        )

    up = actions.add_parser(
        "up",
        help="start the embedded registry in the background",
        description="Start the embedded registry; does nothing if it already runs.\n\n"
        "example: strata registry up --port 5000 --auth htpasswd --tls",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data_dir_option(up)
    up.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})"
    )
    up.add_argument(
        "--auth", choices=["none", "htpasswd"], default="none", help="require a generated password"
    )
    up.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA")
    up.add_argument(
        "--no-engine-trust",
        action="store_true",
        help="do not install the CA in /etc/docker/certs.d/<host:port>/ for the local engine",
    )
    up.set_defaults(func=run_up)

    down = actions.add_parser(
        "down",
        help="stop the embedded registry",
        description="Stop the embedded registry (its storage is kept).\n\nexample: strata registry down",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data_dir_option(down)
    down.set_defaults(func=run_down)

    status = actions.add_parser(
        "status",
        help="say whether the embedded registry runs",
        description="Say whether the embedded registry runs and where.\n\nexample: strata registry status",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data_dir_option(status)
    add_format_arg(status, choices=("text", "json"), default="text")
    status.set_defaults(func=run_status)

    push = actions.add_parser(
        "push-archive",
        help="push a docker-save archive (only missing blobs are uploaded)",
        description="Push a canonical image archive to a registry.\n\n"
        "example: strata registry push-archive tf.tar 127.0.0.1:5000/strata/tensorflow --tag 2.15.0-gpu",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data_dir_option(push)
    push.add_argument("archive", type=Path, help="docker-save archive of one image")
    push.add_argument("destination", help="REGISTRY/REPOSITORY, e.g. 127.0.0.1:5000/strata/tensorflow")
    push.add_argument("--tag", action="append", default=[], help="version tag (repeatable)")
    push.add_argument(
        "--force", action="store_true", help="move existing version tags (recorded in the audit log)"
    )
    push.add_argument("--mount-from", action="append", default=[], help="repository that may hold the blobs")
    push.add_argument(
        "--ca-file", type=Path, default=None, help=f"CA of the registry (or ${REGISTRY_CA_ENV})"
    )
    add_wait_args(push)
    push.set_defaults(func=with_run_lock(run_push_archive, checkout=False))


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else settings_for(args).registry_dir


def run_up(args: argparse.Namespace) -> int:
    """Handler of `strata registry up`."""
    settings = ServerSettings(
        data_dir=_data_dir(args),
        port=args.port,
        tls=args.tls,
        htpasswd=args.auth == "htpasswd",
        trust_in_engine=not args.no_engine_trust,
    )
    status = start_registry(settings)
    layout = ServerLayout(status.data_dir)
    verb = "already up" if status.was_running else "up"
    print(f"registry {verb} at {status.url} (pid {status.pid}, data in {status.data_dir})")
    if status.tls:
        print(f"CA certificate: {layout.ca_cert}")
    if status.username:
        print(f"user {status.username}; password stored in {layout.password_file}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    """Handler of `strata registry down`."""
    data_dir = _data_dir(args)
    if stop_registry(data_dir):
        print(f"registry from {data_dir} stopped")
    else:
        print(f"registry from {data_dir} was not running")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Handler of `strata registry status`: exit 0 when running, 1 when not."""
    status = registry_status(_data_dir(args))
    if wants_json(args):
        print_json(
            "registry-status",
            {
                "running": status.running,
                "url": status.url if status.running else None,
                "address": status.address,
                "pid": status.pid,
                "tls": status.tls,
                "auth": status.username is not None,
                "data_dir": str(status.data_dir),
            },
        )
        return 0 if status.running else 1
    if status.running:
        print(f"registry up at {status.url} (pid {status.pid}, data in {status.data_dir})")
        return 0
    print(f"registry from {status.data_dir} is not running")
    return 1


def run_push_archive(args: argparse.Namespace) -> int:
    """Handler of `strata registry push-archive`."""
    registry, _, repository = str(args.destination).partition("/")
    if not repository:
        raise StrataError(
            f"destination {args.destination!r} must be REGISTRY/REPOSITORY, e.g. 127.0.0.1:5000/strata/tf"
        )
    settings = settings_for(args)
    with client_for(registry, settings, args.ca_file, _data_dir(args)) as client:
        result = push_archive(
            client,
            args.archive,
            repository,
            list(args.tag),
            force=args.force,
            audit_log=AuditLog(settings.audit_log_path),
            mount_from=args.mount_from,
            cache_dir=settings.compressed_layers_dir,
        )
    print(result.reference)
    print(
        f"uploaded {len(result.blobs_uploaded)} blobs ({result.bytes_uploaded} bytes), "
        f"skipped {len(result.blobs_skipped)}, mounted {len(result.blobs_mounted)}"
    )
    for tag in result.tags:
        note = " (forced, audited)" if tag in result.forced_tags else ""
        print(f"tagged {result.registry}/{result.repository}:{tag}{note}")
    return 0

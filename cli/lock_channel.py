"""`strata lock pull`: fetch images.lock.json from the registry's lock channel, check it, write it atomically.

Registered under `strata lock` by cli/lock.py (`register_pull`); the handler returns an exit code and raises
StrataError subclasses for one-line errors.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from builder.errors import StrataError
from builder.matrix.load import load_matrix
from builder.matrix.types import check_registry_host
from cli.common import add_matrix_file_arg, settings_for
from cli.output import add_format_arg, print_json, wants_json
from registry_sync.publish.attest import load_public_key
from registry_sync.publish.lock_channel import lock_repository, pull_lock, verify_pulled, write_pulled
from registry_sync.registry.connect import open_registry
from registry_sync.registry.reference import ImageRef


def register_pull(actions: Any) -> None:
    """Add `pull` to the subcommands of `strata lock`."""
    p = actions.add_parser(
        "pull",
        help="fetch images.lock.json from the registry (<namespace>/images-lock:latest or :r<N>)",
        description="Fetch the lock `strata push` published (the newest release, or --release N), check that it is\n"
        "an images lock whose bytes have the digest its artifact names, and with --require-signature that\n"
        "`strata sign` signed exactly those bytes; then write it (and its .sig) atomically.\n\n"
        "example: strata lock pull --release 1 --out images.lock.json --require-signature strata-signing.pub",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--release", type=int, metavar="N", help="this release's lock (default: the newest, :latest)"
    )
    p.add_argument("--out", type=Path, default=Path("images.lock.json"), help="default: images.lock.json")
    p.add_argument(
        "--require-signature",
        type=Path,
        default=None,
        metavar="KEY.pub",
        help="refuse the lock unless its signature (from strata sign) verifies with this public key",
    )
    p.add_argument("--registry", metavar="HOST:PORT", help="default: matrix.yaml's registry.address")
    p.add_argument("--namespace", help="default: matrix.yaml's registry.namespace")
    add_matrix_file_arg(p, optional=True)
    add_format_arg(p, choices=("text", "json"), default="text")
    p.add_argument(
        "--data-dir", type=Path, default=None, help="embedded registry state (default: <state root>/registry)"
    )
    p.set_defaults(func=cmd_lock_pull)


def cmd_lock_pull(args: argparse.Namespace) -> int:
    if args.release is not None and args.release < 0:
        raise StrataError(f"--release {args.release}: a release is a number from 0")
    settings = settings_for(args)  # resolves args.matrix (-f, $STRATA_MATRIX, found upward, or matrix.yaml)
    registry, namespace = args.registry, args.namespace
    if registry is None or namespace is None:
        if not Path(args.matrix).is_file():
            raise StrataError(f"{args.matrix}: no matrix here; name --registry and --namespace (or -f)")
        model = load_matrix(args.matrix, registry_override=settings.registry_override).model
        registry = registry or model.registry.address
        namespace = namespace or model.registry.namespace
    check_channel(registry, namespace)
    key = load_public_key(args.require_signature) if args.require_signature is not None else None
    with open_registry(registry, settings, args.data_dir or settings.registry_dir) as client:
        pulled = pull_lock(client, namespace, args.release)
    verified = verify_pulled(pulled, [key]) if key is not None else None
    written = write_pulled(args.out, pulled)
    lock = pulled.lock
    if wants_json(args):
        print_json(
            "lock-pull",
            {
                "reference": pulled.reference,
                "manifest_digest": pulled.manifest_digest,
                "release": lock.release,
                "images": len(lock.images),
                "aliases": len(lock.aliases),
                "written": [str(path) for path in written],
                "signed": pulled.signature is not None,
                "signature": ({"valid": True, "keyid": verified.keyid} if verified is not None else None),
            },
        )
        return 0
    print(
        f"{args.out}: release {lock.release if lock.release is not None else '?'}, {len(lock.images)} images, "
        f"{len(lock.aliases)} aliases from {pulled.pinned}"
    )
    if verified is not None:
        print(f"{args.out}: signature valid (key {verified.keyid[:16]}; {written[-1].name})")
    elif pulled.signature is not None:
        print(f"{written[-1]}: signature written, not checked (pass --require-signature KEY.pub)")
    else:
        print(f"{args.out}: not signed in the registry")
    return 0


def check_channel(registry: str, namespace: str) -> None:
    """Refuse a --registry or --namespace that is not a registry host[:port] / repository path (one line)."""
    try:
        check_registry_host(registry)
    except ValueError as exc:
        raise StrataError(f"--registry {exc}") from None
    ref = ImageRef.parse(f"{registry}/{lock_repository(namespace)}")
    if ref is None or ref.registry != registry or ref.repository != lock_repository(namespace):
        raise StrataError(
            f"--namespace must be a repository path like 'strata' or 'team/vision' (lower case), got {namespace!r}"
        )

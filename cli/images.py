"""`strata canonicalize` and `strata diff`: make an image reproducible, and explain why two are not."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from builder.engine.client import engine_client
from builder.engine.images import canonicalize_image, load_layout, open_image
from builder.errors import StrataError
from builder.oci.canonical import CanonicalPolicy, canonicalize_archive
from builder.oci.diff import ENTRY_FIELDS, diff_images, diff_to_json, render_text
from builder.oci.packages import (
    PackageDiff,
    compare_image_packages,
    package_diff_to_json,
    render_package_changes,
)
from cli.common import settings_for
from cli.output import add_format_arg, print_json, wants_json

CANONICALIZE_EXAMPLE = (
    "example: strata canonicalize strata/tf:2.15-gpu-build out/tf2.15-gpu --tag strata/tf:2.15-gpu --load"
)
DIFF_EXAMPLE = "example: strata diff out/run1 out/run2   (paths to layouts/archives, or engine references)"


def _epoch_default() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        return int(value)
    except ValueError:
        raise StrataError(f"SOURCE_DATE_EPOCH={value!r}: must be an integer number of seconds") from None


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `canonicalize` and `diff` to the `strata` command."""
    canon = subparsers.add_parser(
        "canonicalize",
        help="rewrite an engine image into a reproducible OCI layout",
        description="Rewrite IMAGE (engine reference or archive) so its digest depends only on its content: "
        "sorted layers, clamped mtimes, no build residue. " + CANONICALIZE_EXAMPLE,
    )
    canon.add_argument("image", help="engine image reference, or a docker-save/OCI archive or layout path")
    canon.add_argument(
        "layout", type=Path, help="directory to write the OCI layout to (replaced if it is one)"
    )
    canon.add_argument("--tag", help="name the canonical image gets (OCI ref.name, docker tag with --load)")
    canon.add_argument(
        "--epoch", type=int, help="clamp times to this Unix second (default: $SOURCE_DATE_EPOCH or 0)"
    )
    canon.add_argument(
        "--compression", choices=("gzip", "none"), default="gzip", help="layer blob compression"
    )
    canon.add_argument(
        "--keep", action="append", default=[], metavar="GLOB", help="keep a default volatile path"
    )
    canon.add_argument(
        "--drop", action="append", default=[], metavar="GLOB", help="also drop files matching GLOB"
    )
    canon.add_argument(
        "--load", action="store_true", help="load the result into the engine (ID = config digest)"
    )
    add_format_arg(canon, choices=("text", "json"), default="text", retired_json=True)
    canon.set_defaults(func=run_canonicalize)

    diff = subparsers.add_parser(
        "diff",
        help="explain why two images differ, layer by layer and file by file",
        description="Compare two images and list what differs; exits 0 if identical, 1 if not. "
        + DIFF_EXAMPLE,
    )
    diff.add_argument("a", help="first image: OCI layout, archive, or engine reference")
    diff.add_argument("b", help="second image: OCI layout, archive, or engine reference")
    diff.add_argument(
        "--flatten", action="store_true", help="compare the merged filesystems, not layer by layer"
    )
    diff.add_argument(
        "--ignore",
        action="append",
        default=[],
        choices=ENTRY_FIELDS,
        help="file field to leave out (repeatable)",
    )
    diff.add_argument(
        "--limit", type=int, default=50, help="lines shown per layer and per package list (default 50)"
    )
    add_format_arg(diff, choices=("text", "json"), default="text", retired_json=True)
    diff.add_argument(
        "--packages",
        action="store_true",
        help="print only the Python and Debian packages added, removed or changed, all of them "
        "(reads package metadata, hashes no file; --flatten, --ignore and --limit do not apply)",
    )
    diff.set_defaults(func=run_image_diff)


def run_canonicalize(args: argparse.Namespace) -> int:
    """Handler of `strata canonicalize`."""
    defaults = CanonicalPolicy()
    volatile = tuple(p for p in defaults.volatile_paths if p not in args.keep) + tuple(args.drop)
    policy = CanonicalPolicy(
        epoch=args.epoch if args.epoch is not None else _epoch_default(),
        volatile_paths=volatile,
        compression=args.compression,
    )
    settings = settings_for(args)
    if Path(args.image).exists():
        image = canonicalize_archive(Path(args.image), args.layout, policy, tag=args.tag)
        if args.load:
            load_layout(engine_client(settings), image)
    else:
        image = canonicalize_image(
            args.image,
            args.layout,
            policy,
            tag=args.tag,
            load=args.load,
            client=engine_client(settings),
            layer_read=settings.layer_read,
        )
    if wants_json(args):
        result = {
            "layout": str(image.layout),
            "manifest_digest": image.manifest_digest,
            "config_digest": image.config_digest,
            "tag": image.tag,
            "layers": [
                {"diff_id": la.diff_id, "digest": la.digest, "size": la.size, "dropped": list(la.dropped)}
                for la in image.layers
            ],
        }
        print_json("canonicalize", {**result, "loaded": bool(args.load)})
        return 0
    dropped = sum(len(layer.dropped) for layer in image.layers)
    print(f"{image.layout}: manifest {image.manifest_digest}")
    print(f"image id (config digest): {image.config_digest}")
    print(
        f"{len(image.layers)} layers, {dropped} volatile file(s) dropped" + (", loaded" if args.load else "")
    )
    return 0


def run_image_diff(args: argparse.Namespace) -> int:
    """Handler of `strata diff`: 0 when identical, 1 when different (with --packages too)."""
    if args.packages:
        return run_package_diff(args)
    with tempfile.TemporaryDirectory(prefix="strata-diff-") as scratch:
        settings = settings_for(args)
        a = open_image(args.a, Path(scratch), lambda: engine_client(settings))
        b = open_image(args.b, Path(scratch), lambda: engine_client(settings))
        result = diff_images(a, b, flatten=args.flatten, ignore=args.ignore)
    if wants_json(args):
        print_json("diff", {"mode": "files", **diff_to_json(result)})
    else:
        print(render_text(result, limit=args.limit))
    return 0 if result.identical else 1


def run_package_diff(args: argparse.Namespace) -> int:
    """`strata diff --packages`: only the package changes; 0 when the images are identical, 1 when not."""
    with tempfile.TemporaryDirectory(prefix="strata-diff-") as scratch:
        settings = settings_for(args)
        a = open_image(args.a, Path(scratch), lambda: engine_client(settings))
        b = open_image(args.b, Path(scratch), lambda: engine_client(settings))
        identical = a.config_digest == b.config_digest
        packages = PackageDiff() if identical else compare_image_packages(a, b)
    if wants_json(args):
        result = {
            "mode": "packages",
            "a_label": a.label,
            "b_label": b.label,
            "a_id": a.config_digest,
            "b_id": b.config_digest,
            "identical": identical,
            "packages": package_diff_to_json(packages),
        }
        print_json("diff", result)
    elif identical:
        print(f"identical: {a.label} and {b.label} are both {a.config_digest}")
    else:
        print("\n".join([f"a: {a.label}  {a.config_digest}", f"b: {b.label}  {b.config_digest}"]))
        print("\n".join(render_package_changes(packages)))
    return 0 if identical else 1

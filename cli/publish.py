"""`strata push | pin | catalog | sync | promote`: publish the plan's images and what users need to use them.

Register with `register(subparsers)`; every handler returns an exit code and raises StrataError subclasses for
one-line errors.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from builder.engine.client import BUILD_TIMEOUT_SECONDS, engine_client
from builder.errors import StrataError
from builder.events import EventSink, PushStatus, tee
from builder.settings import Settings
from cli.catalog_site import cmd_catalog_html
from cli.common import (
    add_events_arg,
    add_matrix_args,
    add_matrix_file_arg,
    add_wait_args,
    full_plan,
    open_events,
    settings_for,
    with_run_lock,
)
from cli.output import add_format_arg, add_progress_arg, console, print_json, progress_mode, wants_json
from cli.progress import Lines, Reporter, push_message
from cli.summary import push_summary, write_step_summary
from registry_sync.publish.attest import load_public_key, verify_lock_file
from registry_sync.publish.catalog import load_plans, render_catalog, sources_from_plans, write_catalog
from registry_sync.publish.images_lock import read_images_lock
from registry_sync.publish.lock_channel import publish_channel
from registry_sync.publish.pin import ALREADY, PINNED, REPINNED, UNKNOWN, pin_files
from registry_sync.publish.promote import promote_cell_alias
from registry_sync.publish.push_plan import (
    PublishError,
    PushOptions,
    finish_lock,
    matrix_tag_policy,
    publish_plan,
)
from registry_sync.publish.sync import copy_image, parse_endpoint, plan_sync
from registry_sync.publish.tag_policy import AuditLog
from registry_sync.registry.client import RegistryClient, is_loopback_host
from registry_sync.registry.connect import open_registry
from registry_sync.registry.server import registry_status

DEFAULT_CATALOG = Path("docs/catalog.md")


def _formatter() -> type[argparse.RawDescriptionHelpFormatter]:
    return argparse.RawDescriptionHelpFormatter


def _data_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="embedded registry state (default: <state root>/registry: $STRATA_HOME/registry or .strata/registry)",
    )


def _audit_log(settings: Settings) -> AuditLog:
    return AuditLog(settings.audit_log_path)


def _data_dir(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.data_dir) if args.data_dir else settings.registry_dir


def register(subparsers: Any) -> None:
    """Add `push`, `pin`, `catalog`, `sync` and `promote`."""
    p = subparsers.add_parser(
        "push",
        help="push the plan's built images to the registry; write images.lock.json",
        description="Push every node of the plan (parents first) under its version and content tags; a node whose\n"
        "content tag the registry already has uploads nothing. Version tags are immutable (--force moves them,\n"
        "audited). Then images.lock.json is written and pushed as <namespace>/images-lock:<plan digest>.\n\n"
        "example: strata push --only '*-cpu'",
        formatter_class=_formatter(),
    )
    add_matrix_args(p)
    p.add_argument(
        "--force", action="store_true", help="move version tags that name another digest (audited)"
    )
    p.add_argument(
        "--registry", metavar="HOST:PORT", help="push here instead of matrix.yaml's registry.address"
    )
    p.add_argument(
        "--lock", type=Path, default=None, help="lock file (default: images.lock.json next to the matrix)"
    )
    p.add_argument("--no-lock-artifact", action="store_true", help="do not push the lock as an OCI artifact")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    add_format_arg(p)
    add_progress_arg(p)
    add_events_arg(p)
    _data_dir_option(p)
    add_wait_args(p)
    p.set_defaults(func=with_run_lock(cmd_push))

    p = subparsers.add_parser(
        "pin",
        help="rewrite image references in Dockerfiles, compose and Kubernetes files to tag@digest",
        description="Pin FROM lines (Dockerfiles) and image: values (compose, Kubernetes, any YAML) to the digests\n"
        "in images.lock.json, line by line, keeping comments and formatting. Unknown references are left as\n"
        "they are and reported.\n\nexample: strata pin deploy/k8s.yaml Dockerfile --check",
        formatter_class=_formatter(),
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--lock", type=Path, default=Path("images.lock.json"), help="default: images.lock.json")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if any file would change")
    add_format_arg(p, choices=("text", "json"), default="text")
    p.add_argument(
        "--require-signature",
        type=Path,
        default=None,
        metavar="KEY.pub",
        help="first check the lock's signature (<lock>.sig, from strata sign) with this public key",
    )
    p.set_defaults(func=cmd_pin)

    p = subparsers.add_parser(
        "catalog",
        help="write a Markdown page describing every published tag",
        description="Describe every tag of images.lock.json: cells, versions, sizes, digest, pull line, and the\n"
        "Python and Debian packages from the node's locks and its ancestors'. --format html writes a site instead:\n"
        "an index of every tag and alias with verdicts, signature and vulnerability status, a page per tag with\n"
        "its layers and the packages of its stored SBOM, and the release history with package diffs.\n\n"
        "example: strata catalog --format html --out site/",
        formatter_class=_formatter(),
    )
    add_matrix_file_arg(p)
    p.add_argument(
        "--lock", type=Path, default=None, help="lock file (default: images.lock.json next to the matrix)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output (default: {DEFAULT_CATALOG}; with --format html: site/)",
    )
    p.add_argument(
        "--format",
        choices=["markdown", "html", "json"],
        default="markdown",
        help="markdown: one page from the locks; html: a site from the registry (tags, SBOM packages, releases); "
        "json: the markdown page, and a strata.catalog/1 document on stdout (docs/cli-json.md)",
    )
    p.add_argument(
        "--key",
        action="append",
        type=Path,
        metavar="KEY.pub",
        help="html: check each image's signature (repeatable)",
    )
    p.add_argument("--registry", metavar="HOST:PORT", help="html: default: matrix.yaml's registry.address")
    p.add_argument(
        "--evidence", type=Path, default=None, help="html: strata audit's reports (default: build/evidence)"
    )
    _data_dir_option(p)
    p.set_defaults(func=cmd_catalog)

    p = subparsers.add_parser(
        "sync",
        help="copy images between registries, keeping digests",
        description="Copy SRC to DST byte for byte (digests kept), sending only blobs DST lacks. SRC and DST are\n"
        "host:port/repository[:tag|@digest]; a bare repository with --only GLOB copies the matching tags.\n\n"
        "example: strata sync 127.0.0.1:5000/strata/base 10.0.0.5:5000/strata/base --only '*'",
        formatter_class=_formatter(),
    )
    p.add_argument("source", metavar="SRC")
    p.add_argument("destination", metavar="DST")
    p.add_argument("--only", action="append", metavar="GLOB", help="source tags to copy (repeatable)")
    p.add_argument("--force", action="store_true", help="move DST tags that name another digest (audited)")
    p.add_argument(
        "--mount-from", action="append", default=[], metavar="REPO", help="DST repository to mount from"
    )
    p.add_argument("--src-ca-file", type=Path, default=None, help="CA of SRC (default: $STRATA_REGISTRY_CA)")
    p.add_argument("--dst-ca-file", type=Path, default=None, help="CA of DST (default: $STRATA_REGISTRY_CA)")
    add_format_arg(p, choices=("text", "json"), default="text")
    add_progress_arg(p)
    _data_dir_option(p)
    add_wait_args(p)
    p.set_defaults(func=with_run_lock(cmd_sync, checkout=False))

    p = subparsers.add_parser(
        "promote",
        help="move a floating alias to a cell's current version tag",
        description="Point ALIAS (declared under aliases: in matrix.yaml) at the digest the cell's version tag names\n"
        "in the registry; the move is audited. --require-smoke needs a passing `strata smoke` result for\n"
        "that image (gpu cells: run with --expect-gpu); --require-bench needs benchmark results for it.\n\n"
        "example: strata promote 2.13-cpu --cell tf2.13.1-cpu --require-smoke",
        formatter_class=_formatter(),
    )
    p.add_argument("alias", metavar="ALIAS")
    p.add_argument("--cell", required=True, help="the cell whose image the alias should name")
    add_matrix_file_arg(p)
    p.add_argument("--profile", default="hermetic", help="profile (default: hermetic)")
    p.add_argument(
        "--registry", metavar="HOST:PORT", help="registry (default: matrix.yaml's registry.address)"
    )
    p.add_argument("--require-smoke", action="store_true", help="refuse without a passing smoke result")
    p.add_argument("--smoke-results", type=Path, default=None, help="default: <state root>/results/smoke")
    p.add_argument("--require-bench", action="store_true", help="refuse without benchmark results")
    p.add_argument(
        "--bench-ledger", type=Path, default=None, help="default: <state root>/results/bench/ledger.sqlite"
    )
    add_format_arg(p, choices=("text", "json"), default="text")
    _data_dir_option(p)
    p.set_defaults(func=cmd_promote)


# ---------------------------------------------------------------------------------------------- push


def _registry(address: str, settings: Settings, data_dir: Path, home: str) -> RegistryClient:
    """A client for `address`, pinged; `home` is the matrix's registry (the environment's credentials are for it)."""
    client = open_registry(address, settings, data_dir, home=home)
    try:
        client.ping()
    except StrataError as exc:
        client.close()
        status = registry_status(data_dir)
        embedded = status.address == address or (status.address is None and is_loopback_host(address))
        hint = "; start it with `strata registry up`" if embedded and not status.running else ""
        raise type(exc)(f"{exc}{hint}") from None
    return client


def cmd_push(args: argparse.Namespace) -> int:
    with open_events(args) as record:
        return _push(args, record)


def _push(args: argparse.Namespace, record: EventSink) -> int:
    settings = settings_for(args)
    whole = full_plan(args, settings)
    plan = whole.select(args.only)
    registry = args.registry or whole.matrix.model.registry.address
    data_dir = _data_dir(args, settings)
    lock_path = args.lock or whole.matrix.root / "images.lock.json"
    work = settings.ensure(settings.tmp_dir)
    reporter = Reporter(progress_mode(args), total=len(plan.nodes), message=push_message, title="push")
    event = tee(reporter, record)
    engine = engine_client(settings, BUILD_TIMEOUT_SECONDS)
    start = time.monotonic()
    with _registry(registry, settings, data_dir, whole.matrix.model.registry.address) as client:
        options = PushOptions(
            registry=registry,
            policy=matrix_tag_policy(whole.matrix),
            audit=_audit_log(settings),
            cache_dir=settings.compressed_layers_dir,
            profile=whole.matrix.profile,
            force=args.force,
            work_dir=work,
            layer_read=settings.layer_read,
            on_event=event,
        )
        with reporter:
            results = publish_plan(plan, engine, client, options)
        failed = [r for r in results if r.status is PushStatus.FAILED]
        outcome = None
        channel = None
        if not failed:
            outcome = finish_lock(
                lock_path, whole, results, client, options, push_artifact=not args.no_lock_artifact
            )
            if outcome.artifact:
                digest = outcome.artifact.rpartition("@")[2]
                channel = publish_channel(
                    client, whole.matrix.model.registry.namespace, digest, options.audit
                )
    seconds = time.monotonic() - start
    if wants_json(args):
        doc: dict[str, Any] = {
            "ok": not failed,
            "registry": registry,
            "nodes": [r.to_json() for r in results],
            "seconds": round(seconds, 2),
            "lock": None,
        }
        if outcome:
            doc["lock"] = {
                "path": str(outcome.path),
                "written": outcome.written,
                "artifact": outcome.artifact,
                "channel": list(channel.tags) if channel else [],
            }
        print_json("push", doc)
    else:
        _print_push_summary(results, seconds)
        if outcome:
            state = "written" if outcome.written else "unchanged"
            print(f"{outcome.path}: {state}")
            if outcome.artifact:
                print(f"lock artifact: {outcome.artifact}")
            if channel:
                print(channel.describe(registry, whole.matrix.model.registry.namespace))
    write_step_summary(push_summary(results, seconds))
    if failed:
        first = failed[0]
        raise PublishError(
            f"push failed for {len(failed)} of {len(results)} nodes ({first.node}: {first.message}); "
            f"{lock_path.name} not updated"
        )
    return 0


def _print_push_summary(results: Sequence[Any], seconds: float) -> None:
    table = Table(title=f"strata push ({len(results)} nodes, {seconds:.1f}s)")
    for col in ("node", "result", "uploaded", "time", "manifest digest"):
        table.add_column(col, overflow="fold")
    for r in results:
        uploaded = f"{r.bytes_uploaded / 1e6:.1f} MB" if r.bytes_uploaded else "0"
        digest = r.manifest_digest or r.message
        table.add_row(r.node, r.status, uploaded, f"{r.seconds:.1f}s", digest)
    console().print(table)
    total = sum(r.bytes_uploaded for r in results)
    counts = {s: sum(1 for r in results if r.status is s) for s in PushStatus}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"; {total / 1e6:.1f} MB uploaded")


# ---------------------------------------------------------------------------------------------- pin


def cmd_pin(args: argparse.Namespace) -> int:
    text = sys.stderr if wants_json(args) else sys.stdout
    signed_by = None
    if args.require_signature is not None:
        signed = verify_lock_file(args.lock, [load_public_key(args.require_signature)])
        signed_by = signed.keyid
        print(f"{signed.path}: signature valid (key {signed.keyid[:16]})", file=text)
    lock = read_images_lock(args.lock)
    results = pin_files(list(args.files), lock, check=args.check)
    counts = dict.fromkeys((PINNED, REPINNED, ALREADY, UNKNOWN), 0)
    for result in results:
        for outcome in result.outcomes:
            counts[outcome.outcome] += 1
            line = outcome.describe()
            if args.check and outcome.changes:
                line = line.replace(f": {outcome.outcome} ", f": would be {outcome.outcome} ", 1)
            print(line, file=text)
    changed = [r for r in results if r.changed]
    names = {PINNED: "to pin", REPINNED: "to re-pin"} if args.check else {}
    summary = ", ".join(f"{n} {names.get(k, k)}" for k, n in counts.items() if n) or "no image references"
    verb = "would change" if args.check else "changed"
    print(f"{summary}; {len(changed)} of {len(results)} files {verb}", file=text)
    if wants_json(args):
        print_json(
            "pin",
            {
                "check": bool(args.check),
                "lock": str(args.lock),
                "signature_key": signed_by,
                "counts": counts,
                "files": [
                    {
                        "path": str(r.path),
                        "changed": r.changed,
                        "references": [
                            {
                                "line": o.line,
                                "reference": o.original,
                                "outcome": o.outcome,
                                "pinned": o.replacement,
                                "note": o.note,
                            }
                            for o in r.outcomes
                        ],
                    }
                    for r in results
                ],
            },
        )
    return 1 if args.check and changed else 0


# ---------------------------------------------------------------------------------------------- catalog


def cmd_catalog(args: argparse.Namespace) -> int:
    if args.format == "html":
        return cmd_catalog_html(args)
    args.out = args.out or DEFAULT_CATALOG
    settings = settings_for(args)
    matrix_path = Path(args.matrix)
    lock_path = args.lock or matrix_path.resolve().parent / "images.lock.json"
    lock = read_images_lock(lock_path)
    plans = load_plans(matrix_path, {e.profile for e in lock.entries()}, settings.registry_override)
    text = render_catalog(lock, sources_from_plans(lock, plans), lock_path.name)
    written = write_catalog(args.out, text)
    if wants_json(args):
        print_json(
            "catalog",
            {"path": str(args.out), "written": written, "lock": str(lock_path), "tags": sorted(lock.images)},
        )
    else:
        print(f"{args.out}: {'written' if written else 'unchanged'} ({len(lock.images)} tags)")
    return 0


# ---------------------------------------------------------------------------------------------- sync


def cmd_sync(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    src = parse_endpoint(args.source, "SRC")
    dst = parse_endpoint(args.destination, "DST")
    data_dir = _data_dir(args, settings)
    with (
        open_registry(src.registry, settings, data_dir, ca_file=args.src_ca_file) as src_client,
        open_registry(dst.registry, settings, data_dir, ca_file=args.dst_ca_file) as dst_client,
    ):
        items = plan_sync(src, dst, args.only, lambda: src_client.list_tags(src.repository))
        work = settings.ensure(settings.tmp_dir)
        say = Lines(progress_mode(args))
        copies = []
        for item in items:
            result = copy_image(
                src_client,
                src.repository,
                item.reference,
                dst_client,
                dst.repository,
                item.tags,
                force=args.force,
                audit=_audit_log(settings),
                mount_from=args.mount_from,
                work_dir=work,
                on_event=functools.partial(say, label=item.reference),
            )
            copies.append(result)
            if not wants_json(args):
                print(result.describe())
    if wants_json(args):
        print_json(
            "sync",
            {
                "source": args.source,
                "destination": args.destination,
                "images": [
                    {
                        "source": c.source,
                        "destination": c.destination,
                        "status": c.status,
                        "manifest_digest": c.manifest_digest,
                        "tags": list(c.tags),
                        "tags_changed": list(c.tags_changed),
                        "manifests_copied": c.manifests_copied,
                        "blobs_copied": len(c.blobs_copied),
                        "blobs_mounted": len(c.blobs_mounted),
                        "blobs_present": len(c.blobs_present),
                        "bytes_copied": c.bytes_copied,
                    }
                    for c in copies
                ],
            },
        )
    return 0


# ---------------------------------------------------------------------------------------------- promote


def cmd_promote(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    plan = full_plan(args, settings)
    registry = args.registry or plan.matrix.model.registry.address
    audit = _audit_log(settings)
    with _registry(
        registry, settings, _data_dir(args, settings), plan.matrix.model.registry.address
    ) as client:
        promotion = promote_cell_alias(
            plan,
            client,
            args.alias,
            args.cell,
            registry=registry,
            audit=audit,
            require_smoke=args.require_smoke,
            smoke_dir=args.smoke_results or settings.smoke_results_dir,
            require_bench=args.require_bench,
            bench_ledger=args.bench_ledger or settings.ledger_path,
        )
    if wants_json(args):
        print_json(
            "promote",
            {
                "alias": promotion.alias,
                "cell": args.cell,
                "target": promotion.target,
                "digest": promotion.digest,
                "config_digest": promotion.config_digest,
                "previous": promotion.old,
                "changed": promotion.old != promotion.digest,
                "action": promotion.action.value,
                "evidence": list(promotion.evidence),
                "audit_log": str(audit.path),
            },
        )
        return 0
    for line in promotion.evidence:
        print(line)
    if promotion.old == promotion.digest:
        print(f"{promotion.alias} already names {promotion.digest} ({promotion.target}); nothing to do")
    else:
        was = f"was {promotion.old}" if promotion.old else "new alias"
        print(
            f"promoted {promotion.alias} -> {promotion.target}@{promotion.digest} ({was}); audited in {audit.path}"
        )
    return 0

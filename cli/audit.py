"""`strata audit`: the known vulnerabilities of each image of images.lock.json, with the source that said so.

Its own module because pip-audit takes a second or two to import: `strata sign` and `strata pin` do not pay for it.
Register with `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from builder.errors import StrataError
from builder.plan.graph import LayerNode
from cli.common import settings_for
from cli.evidence import (
    add_lock_options,
    chain_of,
    help_formatter,
    images_lock_path,
    plan_sources,
    select_entries,
)
from cli.output import add_format_arg, print_json, wants_json
from registry_sync.publish.attest import write_file
from registry_sync.publish.evidence import VULNERABILITIES_FILE, evidence_dir
from registry_sync.publish.images_lock import read_images_lock
from validate.vulns.debian import NOT_APPLICABLE, BaseStatus, base_status, index_arch
from validate.vulns.debian import UNAVAILABLE as DEBIAN_UNAVAILABLE
from validate.vulns.debian_archive import SecurityIndexUnavailable, SuiteIndex, fetch_suite
from validate.vulns.osv import read_advisories
from validate.vulns.python import AdvisoryFileService, NodeAudit, NodeAudits, file_source, online_service
from validate.vulns.report import image_report


def register(subparsers: Any) -> None:
    """Add `audit`."""
    p = subparsers.add_parser(
        "audit",
        help="known vulnerabilities of each image's wheels (pip-audit) and Debian base (security suite)",
        description="For every image of images.lock.json (or IMAGE, or --only GLOB): pip-audit on the wheel lock of\n"
        "each node of its chain, against --advisories FILE (an OSV JSON file or .zip, offline) or else the\n"
        "online --service; and its base's Debian packages against <codename>-security on deb.debian.org\n"
        "(InRelease checked with gpgv). Writes <out>/<repository>/<tag>/vulnerabilities.json. A source that\n"
        "could not answer is reported as such, never as 'no vulnerabilities'.\n\n"
        "example: strata audit --advisories osv-pypi.zip --only 'tf2.13.1-cpu'",
        formatter_class=help_formatter(),
    )
    p.add_argument("image", nargs="?", metavar="IMAGE", help="a version reference of images.lock.json")
    p.add_argument("--only", action="append", metavar="GLOB", help="cells or nodes (repeatable)")
    p.add_argument(
        "--advisories",
        type=Path,
        default=None,
        metavar="FILE",
        help="OSV advisory file (JSON list, record, or .zip of records): audit offline",
    )
    p.add_argument(
        "--service",
        choices=["pypi", "osv"],
        default="pypi",
        help="online vulnerability service without --advisories (default: pypi)",
    )
    p.add_argument(
        "--osv-url", default=None, metavar="URL", help="OSV API to ask with --service osv (a mirror)"
    )
    p.add_argument("--no-debian", action="store_true", help="do not fetch the Debian security suites")
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="evidence directory (default: build/evidence)"
    )
    add_format_arg(p)
    p.add_argument(
        "--fail-on",
        choices=["incomplete", "findings", "never"],
        default="incomplete",
        help="exit 1 when a source could not answer (default), also on any finding, or never",
    )
    add_lock_options(p)
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    if args.image and args.only:
        raise StrataError("name one IMAGE or --only GLOB, not both")
    settings = settings_for(args)
    lock = read_images_lock(images_lock_path(args))
    entries = select_entries(lock, args.image, args.only)
    sources, _ = plan_sources(args, settings, lock)
    if args.advisories is not None:
        advisories = read_advisories(args.advisories)
        service: Any = AdvisoryFileService(advisories)
        source = file_source(advisories)
    else:
        cache = settings.ensure(settings.cache_dir / "pip-audit")
        service, source = online_service(args.service, cache, osv_url=args.osv_url)
    audits = NodeAudits(service, source)
    suites: dict[tuple[str, str], SuiteIndex | str] = {}

    def audit(node: LayerNode) -> NodeAudit | None:
        return audits.node(node.lock) if node.lock is not None and node.lock.wheels else None

    def debian(node: LayerNode) -> BaseStatus | None:
        if node.parent is not None:
            return None
        codename = (node.rootfs or {}).get("suite")
        if node.lock is None or not node.lock.debs or not codename:
            reason = f"the base is {node.base_image or 'not a root filesystem'}, not a locked Debian root filesystem"
            return BaseStatus(node.id, "", NOT_APPLICABLE, reason=reason)
        suite = f"{codename}-security"
        if args.no_debian:
            return BaseStatus(node.id, suite, DEBIAN_UNAVAILABLE, reason="not checked (--no-debian)")
        key = (codename, index_arch(node.lock))
        if key not in suites:
            try:
                suites[key] = fetch_suite(*key)
            except SecurityIndexUnavailable as exc:
                suites[key] = str(exc)
        index = suites[key]
        if isinstance(index, str):
            return BaseStatus(node.id, suite, DEBIAN_UNAVAILABLE, locked=len(node.lock.debs), reason=index)
        return base_status(node.lock, suite, index.release, index.packages)

    out = args.out or settings.evidence_dir
    reports = []
    for entry in entries:
        report = image_report(
            entry.reference, entry.digest, chain_of(entry, sources[entry.reference]), source, audit, debian
        )
        path = evidence_dir(out, entry.reference) / VULNERABILITIES_FILE
        write_file(path, (json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n").encode())
        reports.append(report)
        if args.format == "table":
            print(f"{entry.reference}: {path.name} written")
            for line in report.lines():
                print(f"  {line}")
    if wants_json(args):
        print_json(
            "audit",
            {
                "complete": all(r.complete for r in reports),
                "images": [r.to_json() for r in reports],
            },
        )
    incomplete = [r for r in reports if not r.complete]
    found = [r for r in reports if r.findings or any(s.updates for s in r.debian)]
    if incomplete and args.fail_on != "never":
        print(
            f"strata: audit incomplete for {len(incomplete)} of {len(reports)} images (see above)",
            file=sys.stderr,
        )
        return 1
    if found and args.fail_on == "findings":
        print(
            f"strata: {len(found)} of {len(reports)} images have known vulnerabilities or updates",
            file=sys.stderr,
        )
        return 1
    return 0

"""`strata catalog --format html`: the static catalog site (registry_sync/publish/site.py), from the registry.

Called by cli/publish.py's `catalog` handler; returns an exit code and raises StrataError subclasses for one-line
errors.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from builder.matrix.load import load_matrix
from cli.common import settings_for
from registry_sync.publish.attest import load_public_key
from registry_sync.publish.images_lock import read_images_lock
from registry_sync.publish.site import SiteInputs, gather_site, render_site, write_site
from registry_sync.registry.connect import open_registry

DEFAULT_SITE = Path("site")


def cmd_catalog_html(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    matrix_path = Path(args.matrix)
    lock_path = args.lock or matrix_path.resolve().parent / "images.lock.json"
    lock = read_images_lock(lock_path)
    model = load_matrix(matrix_path, registry_override=settings.registry_override).model
    registry = args.registry or model.registry.address
    keys = tuple(load_public_key(k) for k in args.key or [])
    out = args.out or DEFAULT_SITE
    inputs = SiteInputs(
        lock_path=lock_path,
        namespace=model.registry.namespace,
        smoke_dir=settings.smoke_results_dir,
        ledger_path=settings.ledger_path,
        evidence_dir=args.evidence or settings.evidence_dir,
        keys=keys,
    )
    start = time.monotonic()
    with open_registry(registry, settings, args.data_dir or settings.registry_dir) as client:
        client.ping()
        site = gather_site(client, lock, inputs)
    gathered = time.monotonic()
    files = render_site(site)
    changed, removed = write_site(out, files)
    done = time.monotonic()
    print(
        f"{out}/index.html: {len(site.tags)} tags, {len(site.aliases)} aliases, {len(site.releases)} releases; "
        f"{changed} files written, {removed} removed (read {gathered - start:.1f}s, rendered {done - gathered:.2f}s)"
    )
    return 0

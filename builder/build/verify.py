"""`strata verify`: rebuild nodes twice from scratch and prove the canonical images are bit-for-bit identical.

Each build ignores every cache: the engine's (--no-cache) and Strata's own build avoidance. Parents come from the
normal build (each parent is itself verified when selected). When the two results differ, `strata diff` says why.
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from builder.build.orchestrate import (
    BuildOptions,
    BuildSession,
    build_images,
    build_session,
    canonical_policy,
    check_buildable,
)
from builder.engine.images import canonicalize_image
from builder.errors import StrataError
from builder.events import EventSink, NodeRebuilding, NodeVerified, ignore_events
from builder.oci.archive import read_image
from builder.oci.canonical import CanonicalImage
from builder.oci.diff import ImageDiff, diff_images
from builder.oci.store import StoreOpener
from builder.plan.graph import LayerNode, Plan
from builder.settings import Settings


@dataclass
class VerifyResult:
    id: str
    reproducible: bool
    digests: list[str]
    diff_ids: list[list[str]] = field(default_factory=list)
    differences: list[dict[str, Any]] = field(default_factory=list)
    engine_digest: str = ""  # the image the normal build produced: must equal both rebuilds
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reproducible": self.reproducible,
            "digests": self.digests,
            "diff_ids": self.diff_ids,
            "matches_engine": bool(self.engine_digest) and all(d == self.engine_digest for d in self.digests),
            "differences": self.differences,
            **({"error": self.error} if self.error else {}),
        }


def summarize_differences(diff: ImageDiff, limit: int = 50) -> list[dict[str, Any]]:
    """Flatten an ImageDiff into rows: {where, path, fields} (config keys or layer files)."""
    rows: list[dict[str, Any]] = []
    for change in diff.config_changes:
        rows.append(
            {"where": "config", "path": change.path, "fields": ["value"], "a": change.a, "b": change.b}
        )
    for layer in diff.layers:
        for entry in layer.changes:
            fields = list(entry.fields) or (["presence"] if (entry.a is None) != (entry.b is None) else [])
            rows.append(
                {
                    "where": f"layer {layer.index}",
                    "path": entry.path,
                    "fields": fields,
                    "step": layer.created_by,
                }
            )
    return rows[:limit]


def verify_targets(plan: Plan, patterns: list[str] | None) -> set[str] | None:
    """Nodes to verify: those a pattern names directly, and every node of a cell a pattern names (ancestors of a
    directly named node are only built, not verified)."""
    if not patterns:
        return None
    cells = {c for c in plan.cell_ids() if any(fnmatch.fnmatchcase(c, p) for p in patterns)}
    return {
        n.id
        for n in plan.nodes
        if set(n.cells) & cells or any(fnmatch.fnmatchcase(n.id, p) for p in patterns)
    }


def verify_nodes(
    plan: Plan,
    client: docker.DockerClient,
    settings: Settings,
    on_event: EventSink = ignore_events,
    rebuilds: int = 2,
    targets: set[str] | None = None,
    keep: Path | None = None,
    caches: Sequence[StoreOpener] = (),
) -> list[VerifyResult]:
    """Build each selected node twice with no cache, canonicalize both, compare digests and diff_ids.

    With rebuilds=1 the image the normal build left in the engine is the first sample (on a fresh machine, such as
    CI, that build was itself from scratch) and one isolated rebuild the second. `targets` limits which nodes are
    verified (default: all); the others are only built normally, as parents. `keep` keeps both canonical OCI layouts
    of each node under keep/<node>/ for independent tools (skopeo, diffoscope).
    """
    check_buildable(plan)
    # Parents must exist (normal build, cached if present) so each rebuild starts FROM the same canonical parent.
    options = BuildOptions(on_event=on_event, caches=caches)
    outcomes = build_images(plan, client, settings, options)
    failed = [o for o in outcomes if not o.status.ok]
    if failed:
        raise StrataError(
            f"cannot verify: the normal build failed first ({failed[0].message or failed[0].status})"
        )
    results: list[VerifyResult] = []
    (plan.matrix.root / "build").mkdir(exist_ok=True)
    scratch = keep or Path(tempfile.mkdtemp(prefix="strata-verify-", dir=plan.matrix.root / "build"))
    try:
        chosen = [n for n in plan.nodes if targets is None or n.id in targets]
        with build_session(plan, client, settings, chosen, on_event) as session:
            for node in chosen:
                result = _verify_node(session, node, scratch, on_event, rebuilds)
                on_event(NodeVerified(node.id, result.reproducible, tuple(result.digests), result.error))
                results.append(result)
                if keep is None:
                    shutil.rmtree(scratch / node.id, ignore_errors=True)
    finally:
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return results


def _verify_node(
    session: BuildSession,
    node: LayerNode,
    scratch: Path,
    on_event: EventSink,
    rebuilds: int,
) -> VerifyResult:
    client = session.client
    layer_read = session.settings.layer_read
    layouts: list[CanonicalImage] = []
    try:
        if rebuilds == 1:
            layouts.append(
                canonicalize_image(
                    node.cache_ref,
                    scratch / node.id / "engine",
                    canonical_policy(session.plan),
                    client=client,
                    layer_read=layer_read,
                )
            )
        for attempt in range(1, rebuilds + 1):
            tag = f"strata-verify/{node.id}:{attempt}"
            on_event(NodeRebuilding(node.id, attempt, rebuilds))
            session.engine_build(node, tag, no_cache=True, log_name=f"verify-{node.id}-{attempt}")
            layouts.append(
                canonicalize_image(
                    tag,
                    scratch / node.id / str(attempt),
                    canonical_policy(session.plan),
                    client=client,
                    layer_read=layer_read,
                )
            )
            session.discard_now(tag)
    except StrataError as exc:
        return VerifyResult(node.id, False, [x.config_digest for x in layouts], error=str(exc))
    first, second = layouts
    digests = [first.config_digest, second.config_digest]
    diff_ids = [[layer.diff_id for layer in x.layers] for x in layouts]
    reproducible = digests[0] == digests[1] and diff_ids[0] == diff_ids[1]
    differences: list[dict[str, Any]] = []
    if not reproducible:
        differences = summarize_differences(diff_images(read_image(first.layout), read_image(second.layout)))
    try:
        engine_digest = str(client.images.get(node.cache_ref).id)
    except docker.errors.ImageNotFound:
        engine_digest = ""
    return VerifyResult(node.id, reproducible, digests, diff_ids, differences, engine_digest)

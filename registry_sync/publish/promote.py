"""`strata promote`: move a floating alias to a cell's current version tag, with evidence and an audit record.

The alias must be declared under `aliases:` in matrix.yaml for that cell; the version tag must be in the
registry. With --require-smoke a passing smoke result for the exact image (by config digest) must exist; with
--require-bench the benchmark ledger must hold steady-state results for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.errors import StrataError
from builder.plan.graph import Plan
from registry_sync.publish.push_plan import (
    NodeTarget,
    PublishError,
    manifest_config_digest,
    matrix_tag_policy,
)
from registry_sync.publish.tag_policy import AuditLog, TagAction, promote_alias
from registry_sync.registry.client import RegistryClient
from validate.bench.ledger import Ledger
from validate.smoke.results import require_pass


class PromotionRefused(PublishError):
    """The evidence a promotion requires (--require-smoke, --require-bench) is missing or failed: policy refusal."""


@dataclass(frozen=True)
class Promotion:
    """An alias move: the alias reference, the version tag it now follows, the digests and what changed."""

    alias: str
    target: str
    digest: str
    config_digest: str
    old: str | None
    action: TagAction
    evidence: tuple[str, ...]


def promote_cell_alias(
    plan: Plan,
    client: RegistryClient,
    alias: str,
    cell: str,
    *,
    registry: str,
    audit: AuditLog,
    smoke_dir: Path,
    bench_ledger: Path,
    require_smoke: bool = False,
    require_bench: bool = False,
) -> Promotion:
    """Move matrix alias `alias` of `cell` to the digest the cell's version tag names now, and audit the move.

    With `require_smoke`, a passing smoke result for that image (by config digest, as `strata smoke` stores it;
    gpu cells need one run with --expect-gpu) must exist under `smoke_dir`; with `require_bench`, the benchmark
    ledger must hold steady-state results for it. Example:
    promote_cell_alias(plan, client, "2.13-cpu", "tf2.13.1-cpu", registry="127.0.0.1:5000", audit=log).
    """
    declared = [a for a in plan.matrix.model.aliases if a.tag == alias]
    match = next((a for a in declared if a.cell == cell), None)
    if match is None:
        if declared:
            cells = ", ".join(sorted({a.cell for a in declared}))
            raise PublishError(f"alias {alias} belongs to cell {cells} in matrix.yaml, not {cell}")
        known = ", ".join(sorted({a.tag for a in plan.matrix.model.aliases})) or "none"
        raise PublishError(f"alias {alias} is not declared in matrix.yaml aliases (declared: {known})")
    nodes = [n for n in plan.nodes if cell in n.cells and n.layer == match.layer]
    if not nodes:
        raise PublishError(
            f"cell {cell} has no {match.layer} node in the plan (cells: {', '.join(plan.cell_ids())})"
        )
    node = nodes[-1]
    target = NodeTarget.of(node, registry)
    manifest = client.get_manifest(target.repository, target.version_tag)
    if manifest is None:
        raise PublishError(
            f"{target.version_ref} is not in the registry: run strata push --only {cell} first"
        )
    config_digest = manifest_config_digest(manifest)
    evidence: list[str] = []
    if require_smoke:
        evidence.append(
            _require_smoke(target, config_digest, smoke_dir, gpu=node.facts.get("flavor") == "gpu")
        )
    if require_bench:
        evidence.append(_require_bench(target, config_digest, bench_ledger))
    decision = promote_alias(
        client, target.repository, alias, manifest.digest, policy=matrix_tag_policy(plan.matrix), audit=audit
    )
    return Promotion(
        alias=f"{target.registry}/{target.repository}:{alias}",
        target=target.version_ref,
        digest=manifest.digest,
        config_digest=config_digest,
        old=decision.old,
        action=decision.action,
        evidence=tuple(evidence),
    )


def _require_smoke(target: NodeTarget, config_digest: str, results_dir: Path, *, gpu: bool) -> str:
    try:
        report = require_pass(results_dir, config_digest, expect_gpu=gpu)
    except StrataError as exc:
        raise PromotionRefused(f"refusing to promote {target.version_ref}: {exc}") from None
    return f"smoke passed ({report.counts()['pass']} checks, {results_dir}/{config_digest}.json)"


def _require_bench(target: NodeTarget, config_digest: str, path: Path) -> str:
    try:
        with Ledger.open(path, create=False) as ledger:
            reps = [r for r in ledger.repetitions(image_id=config_digest) if r.steady]
    except StrataError as exc:
        raise PromotionRefused(f"refusing to promote {target.version_ref}: {exc}") from None
    if not reps:
        raise PromotionRefused(
            f"refusing to promote {target.version_ref}: no steady benchmark results for {config_digest} in {path}; "
            "run `strata bench run` on it first"
        )
    workloads = sorted({r.workload for r in reps})
    return f"benchmarked ({len(reps)} steady repetitions of {', '.join(workloads)} in {path})"

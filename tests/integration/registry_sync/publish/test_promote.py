"""strata promote on a real registry: a matrix alias moves to the cell's current version-tag digest, only with
the evidence asked for (a passing smoke result, benchmark results for that exact image), and every move is audited."""

from __future__ import annotations

import pytest

from registry_sync.publish.promote import promote_cell_alias
from registry_sync.publish.push_plan import NodeTarget, PublishError, PushOptions, publish_plan
from registry_sync.publish.tag_policy import AuditLog, TagAction, TagPolicy
from validate.bench.ledger import Ledger
from validate.bench.metrics import DeviceKey, Repetition
from validate.smoke.check_result import CheckResult
from validate.smoke.results import ImageReport, save_report

pytestmark = pytest.mark.engine
ALIASES = [("9.9-cpu", "c-cpu"), ("latest-cpu", "c-cpu")]


@pytest.fixture
def published(make_chain, engine, plain_registry, plain_client, tmp_path):
    chain = make_chain(plain_registry, aliases=ALIASES)
    options = PushOptions(
        registry=plain_registry,
        policy=TagPolicy(),
        audit=AuditLog(tmp_path / "push.jsonl"),
        cache_dir=tmp_path / "l",
    )
    results = publish_plan(chain.plan, engine, plain_client, options)
    tool = chain.node("tools")
    return chain, results[-1].manifest_digest, engine.images.get(tool.cache_ref).id


def promote(chain, client, tmp_path, alias="9.9-cpu", **kwargs):
    kwargs.setdefault("smoke_dir", tmp_path / "no-smoke-results")
    kwargs.setdefault("bench_ledger", tmp_path / "no-ledger.sqlite")
    return promote_cell_alias(
        chain.plan,
        client,
        alias,
        "c-cpu",
        registry=chain.registry,
        audit=AuditLog(tmp_path / "audit.jsonl"),
        **kwargs,
    )


def smoke(results_dir, image_id, *, passed=True):
    check = (
        CheckResult.passed("import-tf")
        if passed
        else CheckResult.failed("import-tf", "2.13.1", "ImportError")
    )
    save_report(results_dir, ImageReport(image="x", digest=image_id, checks=[check]))


def test_promote_moves_the_alias_and_audits(published, plain_client, tmp_path):
    chain, manifest_digest, _ = published
    repository = NodeTarget.of(chain.node("tools")).repository

    first = promote(chain, plain_client, tmp_path)
    assert (first.action, first.old, first.digest) == (TagAction.CREATE, None, manifest_digest)
    assert plain_client.manifest_digest(repository, "9.9-cpu") == manifest_digest
    again = promote(chain, plain_client, tmp_path)
    assert again.action is TagAction.UNCHANGED
    records = AuditLog(tmp_path / "audit.jsonl").records()
    assert [(r.action, r.tag, r.old, r.new) for r in records] == [
        ("promote", "9.9-cpu", None, manifest_digest)
    ]


def test_require_smoke(published, plain_client, tmp_path):
    chain, manifest_digest, image_id = published
    results = tmp_path / "smoke"
    with pytest.raises(
        PublishError,
        match=f"refusing to promote .*: {image_id}: no smoke result in {results}; run `strata smoke` first",
    ):
        promote(chain, plain_client, tmp_path, require_smoke=True, smoke_dir=results)
    smoke(results, image_id, passed=False)
    with pytest.raises(PublishError, match="smoke failed: import-tf"):
        promote(chain, plain_client, tmp_path, require_smoke=True, smoke_dir=results)
    assert plain_client.manifest_digest(NodeTarget.of(chain.node("tools")).repository, "9.9-cpu") is None

    smoke(results, image_id, passed=True)
    done = promote(chain, plain_client, tmp_path, require_smoke=True, smoke_dir=results)
    assert done.digest == manifest_digest and done.evidence[0].startswith("smoke passed (1 checks")


def test_require_bench(published, plain_client, tmp_path):
    chain, manifest_digest, image_id = published
    ledger_path = tmp_path / "ledger.sqlite"
    with pytest.raises(PublishError, match="no benchmark ledger here"):
        promote(chain, plain_client, tmp_path, "latest-cpu", require_bench=True, bench_ledger=ledger_path)
    with Ledger.open(ledger_path) as ledger:
        ledger.add(
            Repetition(
                run_id="r1",
                image="x",
                image_id=image_id,
                repo_digest=manifest_digest,
                workload="resnet",
                size="s",
                device=DeviceKey("cpu", "test", "-"),
                repetition=0,
                order_index=0,
                started_at="2024-01-01T00:00:00Z",
                samples_per_s=10.0,
                startup_s=1.0,
                steady=True,
                result={},
            )
        )
    done = promote(chain, plain_client, tmp_path, "latest-cpu", require_bench=True, bench_ledger=ledger_path)
    assert done.evidence == (f"benchmarked (1 steady repetitions of resnet in {ledger_path})",)


def test_unpushed_cell_is_refused(make_chain, plain_registry, plain_client, tmp_path):
    chain = make_chain(plain_registry, aliases=ALIASES)
    with pytest.raises(
        PublishError, match=r"tool:9.9.9-cpu is not in the registry: run strata push --only c-cpu first"
    ):
        promote(chain, plain_client, tmp_path)

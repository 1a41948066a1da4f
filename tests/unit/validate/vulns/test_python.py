"""pip-audit over real wheel locks of the default plan: offline against an advisory file naming a locked
package version (the report lists it), and a service that cannot be reached (the report says NOT AUDITED,
never "0 known vulnerabilities")."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from builder.matrix.load import load_matrix
from builder.plan.graph import build_plan
from validate.vulns.osv import read_advisories
from validate.vulns.python import (
    COMPLETE,
    UNAVAILABLE,
    AdvisoryFileService,
    NodeAudits,
    audit_lock,
    file_source,
    online_service,
)
from validate.vulns.report import image_report

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def plan():
    return build_plan(load_matrix(REPO / "matrix.yaml"))


@pytest.fixture(scope="module")
def tools(plan):
    return plan.node("tools-tf2.13.1-cpu")


@pytest.fixture
def advisory_file(tmp_path, tools):
    """An OSV file with one advisory for a wheel the tools lock pins, and one fixed before its version."""
    pinned = sorted(tools.lock.wheels, key=lambda w: w.name)[3]
    records = [
        {
            "id": "TEST-LOCKED-1",
            "aliases": ["CVE-0000-0001"],
            "summary": f"test advisory for {pinned.name} {pinned.version}",
            "affected": [
                {"package": {"ecosystem": "PyPI", "name": pinned.name.upper()}, "versions": [pinned.version]}
            ],
        },
        {
            "id": "TEST-FIXED-2",
            "summary": "fixed long ago",
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": pinned.name},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "0.0.1"}]}],
                }
            ],
        },
    ]
    path = tmp_path / "advisories.json"
    path.write_text(json.dumps(records))
    return path, pinned


def test_offline_audit_lists_the_locked_package_an_advisory_names(advisory_file, tools):
    path, pinned = advisory_file
    advisories = read_advisories(path)
    audit = audit_lock(tools.lock, AdvisoryFileService(advisories), file_source(advisories))
    assert audit.status == COMPLETE
    assert audit.packages == len(tools.lock.wheels) and audit.not_audited == ()
    assert [(f.version, {f.id, *f.aliases}) for f in audit.findings] == [
        (pinned.version, {"TEST-LOCKED-1", "CVE-0000-0001"})
    ]
    doc = audit.to_json()
    assert doc["source"]["mode"] == "offline" and advisories.sha256 in doc["source"]["detail"]
    assert doc["source"]["tool"] == "pip-audit 2.10.1"


def test_the_image_report_counts_findings_of_the_whole_chain(advisory_file, plan, tools):
    path, pinned = advisory_file
    advisories = read_advisories(path)
    source = file_source(advisories)
    audits = NodeAudits(AdvisoryFileService(advisories), source)
    chain = [
        plan.node(n)
        for n in ("base-bookworm", "tf2.13.1-cpu-py3.11", "tools-tf2.13.1-cpu", "user-example-tf2.13.1-cpu")
    ]
    report = image_report(
        "127.0.0.1:5000/strata/example:x",
        "sha256:" + "0" * 64,
        chain,
        source,
        lambda n: audits.node(n.lock) if n.lock and n.lock.wheels else None,
        lambda n: None,
    )
    assert report.findings == 1 and report.python_status == COMPLETE and report.complete
    assert report.lines()[0].startswith(
        f"Python: 1 known vulnerability in {sum(len(n.lock.wheels) for n in chain[1:])} wheels (offline"
    )
    summary = report.to_json()["summary"]
    assert summary["python"]["findings"] == 1 and summary["python"]["not_audited"] == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_service_is_reported_as_not_audited(tmp_path, plan):
    # nothing listens there: the real OSV service of pip-audit cannot answer
    service, source = online_service("osv", tmp_path, osv_url=f"http://127.0.0.1:{_closed_port()}/v1/query")
    node = plan.node("user-example-tf2.13.1-cpu")
    audit = audit_lock(node.lock, service, source)
    assert audit.status == UNAVAILABLE and audit.error
    assert audit.findings == ()
    report = image_report("r:x", "sha256:" + "0" * 64, [node], source, lambda n: audit, lambda n: None)
    assert not report.complete
    line = report.lines()[0]
    assert line.startswith("Python: NOT AUDITED") and "0 known" not in line
    assert report.to_json()["summary"]["python"]["status"] == UNAVAILABLE

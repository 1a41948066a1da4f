"""The real Debian security archive (needs deb.debian.org, reachable here and in CI; marked `network`): both bases
of the default plan get a status from a verified index, never an empty answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.matrix.load import load_matrix
from builder.plan.graph import build_plan
from validate.vulns.debian import FROZEN, OK, base_status, index_arch
from validate.vulns.debian_archive import SecurityIndexUnavailable, fetch_suite

pytestmark = pytest.mark.network
REPO = Path(__file__).resolve().parents[4]


@pytest.mark.parametrize("node_id", ["base-bookworm", "base-bullseye"])
def test_security_status_of_each_base_from_the_real_archive(node_id):
    node = build_plan(load_matrix(REPO / "matrix.yaml")).node(node_id)
    codename = node.rootfs["suite"]
    index = fetch_suite(codename, index_arch(node.lock))
    assert index.release.suite == f"{codename}-security"
    assert "Debian Security Archive Automatic Signing Key" in index.release.signed_by
    status = base_status(node.lock, index.release.suite, index.release, index.packages)
    assert status.status in (OK, FROZEN)
    assert status.in_suite > 0  # a Debian base always has packages that had security updates
    assert status.locked == len(node.lock.debs)


def test_a_wrong_mirror_is_unavailable_not_empty():
    with pytest.raises(SecurityIndexUnavailable, match="HTTP 404"):
        fetch_suite("bookworm", "amd64", mirror="http://deb.debian.org/debian-security/no-such-dir")

"""Tag policy decisions and the audit log."""

from __future__ import annotations

import pytest

from registry_sync.publish.tag_policy import (
    AuditLog,
    TagAction,
    TagPolicy,
    TagPolicyError,
    decide_tag,
    validate_tag,
)

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("existing", "new", "force", "action"),
    [
        (None, A, False, TagAction.CREATE),
        (A, A, False, TagAction.UNCHANGED),
        (A, B, False, TagAction.REFUSE),
        (A, B, True, TagAction.FORCED_MOVE),
        (A, A, True, TagAction.UNCHANGED),
    ],
)
def test_version_tag_decisions(existing, new, force, action):
    assert decide_tag("2.15.0-gpu", existing, new, TagPolicy(), force=force).action is action


def test_refusal_names_both_digests():
    decision = decide_tag("2.15.0", A, B, TagPolicy(), force=False)
    assert A in decision.reason and B in decision.reason


@pytest.mark.parametrize("tag", ["latest", "stable", "2.15-gpu-latest"])
def test_aliases_are_never_pushed_directly_even_with_force(tag):
    assert decide_tag(tag, None, A, TagPolicy(), force=True).action is TagAction.REFUSE


def test_custom_alias_patterns():
    policy = TagPolicy(alias_patterns=("*-current",))
    assert policy.is_alias("gpu-current")
    assert not policy.is_alias("latest")


@pytest.mark.parametrize("tag", ["", "-x", "a" * 129, "a:b", "a/b"])
def test_invalid_tags_are_refused(tag):
    with pytest.raises(TagPolicyError):
        validate_tag(tag)


def test_audit_log_appends_json_lines(tmp_path):
    log = AuditLog(tmp_path / "sub" / "audit.jsonl")
    assert log.records() == []
    log.append("force-push", "127.0.0.1:5000", "strata/tf", "1.0", A, B)
    log.append("promote", "127.0.0.1:5000", "strata/tf", "latest", None, B)
    records = log.records()
    assert [(r.action, r.tag, r.old, r.new) for r in records] == [
        ("force-push", "1.0", A, B),
        ("promote", "latest", None, B),
    ]
    assert all(r.user and r.time.endswith("Z") for r in records)
    assert len((tmp_path / "sub" / "audit.jsonl").read_text().splitlines()) == 2

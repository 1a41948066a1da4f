"""Tag policy: version tags are immutable, floating aliases move only through `promote_alias`, and every forced
move or promotion is appended to an audit log (JSON lines).

The decision is pure (`decide_tag`); the functions that talk to a registry are thin wrappers around it.
"""

from __future__ import annotations

import enum
import fnmatch
import getpass
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from registry_sync.registry.client import RegistryClient, RegistryError

TAG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DEFAULT_ALIAS_PATTERNS = ("latest", "stable", "*-latest", "*-stable")


class TagPolicyError(RegistryError):
    """A push or promotion would break the tag policy (move an immutable tag, push an alias directly)."""


@dataclass(frozen=True)
class TagPolicy:
    """Which tags are floating aliases (fnmatch patterns); every other tag is an immutable version tag."""

    alias_patterns: tuple[str, ...] = DEFAULT_ALIAS_PATTERNS

    def is_alias(self, tag: str) -> bool:
        """True when `tag` is a floating alias, e.g. 'latest' or '2.15-gpu-latest' with the defaults."""
        return any(fnmatch.fnmatchcase(tag, pattern) for pattern in self.alias_patterns)


class TagAction(enum.Enum):
    """What to do with one tag."""

    CREATE = "create"
    UNCHANGED = "unchanged"
    FORCED_MOVE = "forced-move"
    REFUSE = "refuse"


@dataclass(frozen=True)
class TagDecision:
    """The decision for one tag of a push: the action, the digest it points at now (if any) and the new one."""

    tag: str
    action: TagAction
    old: str | None
    new: str
    reason: str = ""


def validate_tag(tag: str) -> None:
    """Raise TagPolicyError unless `tag` is a valid OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})."""
    if not TAG_PATTERN.fullmatch(tag):
        raise TagPolicyError(f"tag {tag!r} is not a valid tag (letters, digits, '_', '.', '-'; at most 128)")


def decide_tag(tag: str, existing: str | None, new: str, policy: TagPolicy, *, force: bool) -> TagDecision:
    """Decide what pushing digest `new` under version tag `tag` does, given the digest it has now.

    Example: decide_tag("2.15.0", "sha256:a", "sha256:b", TagPolicy(), force=False).action is TagAction.REFUSE.
    """
    if policy.is_alias(tag):
        return TagDecision(
            tag,
            TagAction.REFUSE,
            existing,
            new,
            "it is a floating alias; move it with promote_alias (strata promote)",
        )
    if existing is None:
        return TagDecision(tag, TagAction.CREATE, None, new)
    if existing == new:
        return TagDecision(tag, TagAction.UNCHANGED, existing, new)
    if force:
        return TagDecision(tag, TagAction.FORCED_MOVE, existing, new, "forced")
    return TagDecision(
        tag,
        TagAction.REFUSE,
        existing,
        new,
        f"it already points at {existing}; refusing to move it to {new} "
        "(version tags are immutable; --force overrides and is audited)",
    )


def refusal_message(registry: str, repository: str, decision: TagDecision) -> str:
    """One line naming the tag and why it is refused, e.g. '... tag 2.15.0: it already points at sha256:a; ...'."""
    return f"{registry}/{repository}:{decision.tag}: {decision.reason}"


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit log."""

    time: str
    action: str
    registry: str
    repository: str
    tag: str
    old: str | None
    new: str
    user: str


def current_user() -> str:
    """The local user name to record in audit entries (best effort)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


class AuditLog:
    """An append-only JSON-lines file of tag moves: time, action, registry, repository, tag, old, new, user."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(
        self, action: str, registry: str, repository: str, tag: str, old: str | None, new: str
    ) -> AuditRecord:
        """Append one record (flushed and fsynced before returning) and return it."""
        record = AuditRecord(
            time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            action=action,
            registry=registry,
            repository=repository,
            tag=tag,
            old=old,
            new=new,
            user=current_user(),
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(json.dumps(asdict(record), sort_keys=True) + "\n")
            log.flush()
            os.fsync(log.fileno())
        return record

    def records(self) -> list[AuditRecord]:
        """All records, oldest first; empty when the log does not exist yet."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [AuditRecord(**json.loads(line)) for line in lines if line.strip()]


def plan_tags(
    client: RegistryClient, repository: str, tags: list[str], new: str, policy: TagPolicy, *, force: bool
) -> list[TagDecision]:
    """Decide every tag of a push by asking the registry where each tag points now.

    Raises TagPolicyError naming the first refused tag (with both digests) before anything is changed.
    """
    decisions = []
    for tag in tags:
        validate_tag(tag)
        decision = decide_tag(tag, client.manifest_digest(repository, tag), new, policy, force=force)
        if decision.action is TagAction.REFUSE:
            raise TagPolicyError(refusal_message(client.host, repository, decision))
        decisions.append(decision)
    return decisions


def promote_alias(
    client: RegistryClient, repository: str, alias: str, target: str, *, policy: TagPolicy, audit: AuditLog
) -> TagDecision:
    """Point floating alias `alias` at `target` (a version tag or a digest) in `repository`, and audit the move.

    Example: promote_alias(client, "strata/tensorflow", "latest", "2.15.0-gpu", policy=TagPolicy(), audit=log).
    """
    validate_tag(alias)
    if not policy.is_alias(alias):
        raise TagPolicyError(
            f"{client.host}/{repository}:{alias} is a version tag, not a floating alias; only aliases "
            f"({', '.join(policy.alias_patterns)}) can be promoted"
        )
    if not target.startswith("sha256:") and policy.is_alias(target):
        raise TagPolicyError(
            f"{client.host}/{repository}:{target}: promote to a version tag or digest, not an alias"
        )
    manifest = client.get_manifest(repository, target)
    if manifest is None:
        raise TagPolicyError(
            f"{client.host}/{repository}:{target} does not exist; nothing to promote {alias} to"
        )
    old = client.manifest_digest(repository, alias)
    if old == manifest.digest:
        return TagDecision(alias, TagAction.UNCHANGED, old, manifest.digest)
    client.put_manifest(repository, alias, manifest.body, manifest.media_type)
    audit.append("promote", client.host, repository, alias, old, manifest.digest)
    return TagDecision(
        alias, TagAction.CREATE if old is None else TagAction.FORCED_MOVE, old, manifest.digest
    )

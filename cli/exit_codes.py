"""How a `strata` run ends: one exit code per outcome, and the one table mapping each StrataError kind to its code.

CI tells outcomes apart by the code alone: 1 means what was checked failed (a build, a lock, a benchmark, a
reproducibility proof), 4 means the machinery around it did (engine, registry, network), 2 means the command
line or an input it names is wrong. The table is keyed by the qualified class name, so classifying an error never
imports the package that defines it (`strata plan` does not load the registry client); subclasses inherit their
nearest listed ancestor's code. README.md's "Exit codes" section repeats EXIT_CODE_MEANINGS (a unit test compares).
"""

from __future__ import annotations

import textwrap
from enum import IntEnum

from builder.errors import ErrorList, StrataError


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    INCONCLUSIVE = 3
    INFRASTRUCTURE = 4
    BUSY = 75  # EX_TEMPFAIL: try again later
    INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "what was checked failed: a build, a stale or tampered lock, requirements pip cannot "
    "resolve, a benchmark regression, an image that is not reproducible, a smoke check, a signature",
    ExitCode.USAGE: "usage: a bad option or argument, or an input it names (matrix.yaml, a lock, an archive, "
    "a key) is missing or malformed",
    ExitCode.INCONCLUSIVE: "inconclusive (a benchmark that cannot decide) or refused by policy (moving an "
    "immutable tag, promoting without the required evidence)",
    ExitCode.INFRASTRUCTURE: "infrastructure: the Docker engine, a registry, the network or the host failed",
    ExitCode.BUSY: "another strata run holds the state root or checkout (--no-wait, --wait-timeout)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}

# StrataError kind (module.Class) -> exit code; an error takes the code of the first class of its MRO listed here.
ERROR_EXIT_CODES: dict[str, ExitCode] = {
    "builder.errors.StrataError": ExitCode.USAGE,
    "builder.errors.MatrixError": ExitCode.USAGE,
    "builder.errors.HostError": ExitCode.INFRASTRUCTURE,
    "builder.errors.BuildError": ExitCode.FAILED,
    "builder.state_lock.RunLockBusy": ExitCode.BUSY,
    "builder.plan.lockfile.LockError": ExitCode.FAILED,
    "builder.lock.fetch.WheelhouseError": ExitCode.FAILED,
    "builder.lock.pip_resolver.ResolutionFailed": ExitCode.FAILED,
    "builder.oci.store.ImageMismatch": ExitCode.FAILED,
    "builder.engine.store.PullFailed": ExitCode.INFRASTRUCTURE,
    "builder.engine.transfer.MissingBaseLayers": ExitCode.INFRASTRUCTURE,
    "registry_sync.registry.client.RegistryError": ExitCode.INFRASTRUCTURE,
    "registry_sync.registry.server.RegistryServerError": ExitCode.INFRASTRUCTURE,
    "registry_sync.registry.auth.CredentialsError": ExitCode.USAGE,
    "registry_sync.publish.tag_policy.TagPolicyError": ExitCode.INCONCLUSIVE,
    "registry_sync.publish.promote.PromotionRefused": ExitCode.INCONCLUSIVE,
    "registry_sync.publish.push_plan.PublishError": ExitCode.FAILED,
    "registry_sync.publish.sync.SyncError": ExitCode.FAILED,
    "registry_sync.publish.images_lock.LockFileError": ExitCode.USAGE,
    "registry_sync.publish.pin.PinError": ExitCode.USAGE,
    "registry_sync.publish.evidence.EvidenceError": ExitCode.FAILED,
    "registry_sync.publish.sbom.SbomError": ExitCode.FAILED,
    "registry_sync.publish.referrers.ReferrerError": ExitCode.FAILED,
    "registry_sync.publish.lock_channel.LockChannelError": ExitCode.FAILED,
    "registry_sync.publish.attest.SigningError": ExitCode.USAGE,
    "registry_sync.publish.attest.SignatureInvalid": ExitCode.FAILED,
    "validate.container.runner.ContainerError": ExitCode.INFRASTRUCTURE,
    "validate.bench.runner.BenchError": ExitCode.FAILED,
    "validate.vulns.osv.AdvisoryFileError": ExitCode.USAGE,
    "validate.vulns.python.AuditError": ExitCode.FAILED,
    "validate.vulns.debian_archive.SecurityIndexUnavailable": ExitCode.INFRASTRUCTURE,
}


def kind_of(cls: type) -> str:
    """`module.Class`, the key of ERROR_EXIT_CODES."""
    return f"{cls.__module__}.{cls.__qualname__}"


def exit_code_for(error: StrataError) -> ExitCode:
    """The code `strata` exits with for `error`: its nearest listed kind's; several errors exit with the first's.

    Example: `exit_code_for(BuildError("base-bookworm failed"))` is ExitCode.FAILED (1).
    """
    if isinstance(error, ErrorList) and error.errors:
        return exit_code_for(error.errors[0])
    for cls in type(error).__mro__:
        code = ERROR_EXIT_CODES.get(kind_of(cls))
        if code is not None:
            return code
    return ExitCode.USAGE  # unreachable for StrataErrors: the base class is listed


def exit_codes_help() -> str:
    """The table `strata --help` ends with (and README.md repeats)."""
    lines = [
        textwrap.fill(
            EXIT_CODE_MEANINGS[code], 110, initial_indent=f"  {int(code):<4} ", subsequent_indent=" " * 7
        )
        for code in ExitCode
    ]
    return "exit codes:\n" + "\n".join(lines)

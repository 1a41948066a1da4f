"""Every environment variable Strata reads, with what it does: the list `strata --help` prints.

Only cli/ reads the process environment (into Settings, see builder/settings.py); libraries get it from there.
tests/unit/cli/test_invocation.py fails when a variable read in the sources is missing from this list.
"""

from __future__ import annotations

import textwrap

from builder.settings import (
    BUILDER_ENV,
    HOME_ENV,
    INSTALL_STAGE_ENV,
    LAYER_READ_ENV,
    MATRIX_ENV,
    REGISTRY_AUTH_HOSTS_ENV,
    REGISTRY_CA_ENV,
    REGISTRY_CACHE_ENV,
    REGISTRY_ENV,
    SIGNING_PASSPHRASE_ENV,
)

GITHUB_ACTIONS_ENV = "GITHUB_ACTIONS"  # "true" on GitHub's runners: errors also become ::error annotations

ENVIRONMENT: dict[str, str] = {
    MATRIX_ENV: "the matrix file when -f is not given (default: matrix.yaml in the current directory or a parent)",
    HOME_ENV: "the state root: caches, embedded registry data, results, logs (default: .strata/ next to the matrix)",
    REGISTRY_ENV: "host:port replacing matrix.yaml's registry.address",
    "STRATA_REGISTRY_USER": "user name for the matrix's registry (and STRATA_REGISTRY_AUTH_HOSTS)",
    "STRATA_REGISTRY_PASSWORD": "password for the matrix's registry (and STRATA_REGISTRY_AUTH_HOSTS)",
    REGISTRY_AUTH_HOSTS_ENV: "comma-separated host[:port]s the credentials above may also be sent to",
    REGISTRY_CA_ENV: "CA bundle of registries with a private CA",
    REGISTRY_CACHE_ENV: "off: never pull a node from the registry instead of building it",
    BUILDER_ENV: "legacy|buildkit: force a way of building (default: BuildKit where it works)",
    INSTALL_STAGE_ENV: "build: run install stages inside the engine's build, as plain docker build (same images)",
    LAYER_READ_ENV: "save: read engine images through `docker save` even from local overlay2 storage",
    "STRATA_PUSH_WORKERS": "layers `strata push` compresses at once, same bytes whatever the count (default: one per core)",
    SIGNING_PASSPHRASE_ENV: "passphrase of the key of `strata sign` / `strata keygen` (default: asked)",
    "DOCKER_HOST": "the Docker engine (default: the local socket)",
    "SSL_CERT_FILE": "CA bundle for downloads from PyPI and mirrors (default: the system's)",
    "SOURCE_DATE_EPOCH": "mtime clamp of `strata canonicalize` (default 0)",
    GITHUB_ACTIONS_ENV: "true: also print errors naming file:line as GitHub ::error annotations",
    "GITHUB_STEP_SUMMARY": "a file (GitHub Actions sets it): build, smoke and push append a Markdown table to it",
    "COLUMNS": "width of tables (default: the terminal's; in a pipe, as wide as their content)",
}


def environment_help() -> str:
    """The `environment:` section of `strata --help`."""
    width = max(len(name) for name in ENVIRONMENT)
    indent = " " * (width + 4)
    lines = [
        textwrap.fill(what, 110, initial_indent=f"  {name:<{width}}  ", subsequent_indent=indent)
        for name, what in ENVIRONMENT.items()
    ]
    return "environment:\n" + "\n".join(lines)

"""Settings: everything Strata takes from its environment, resolved once by the CLI into one frozen value.

Libraries receive a `Settings` and never read `os.environ` themselves; child processes (docker CLI, mmdebstrap,
apt) get `settings.environ`, the environment the CLI was started with. One state root holds every cache, result,
ledger, audit log and the embedded registry's data:

    <state root>/cache/{wheels,rootfs,debs,compressed-layers}   content-addressed inputs and pushed layers
    <state root>/registry/                                      the embedded registry (`strata registry up`)
    <state root>/results/smoke/  <state root>/results/bench/     smoke reports, benchmark ledger and reports
    <state root>/audit/tags.jsonl                               forced tag moves and promotions
    <state root>/tmp/                                           scratch space of pushes and syncs
    <state root>/logs/lock/<node>.log                           pip's full output of the node's last resolution

The matrix file is the one named with `-f`, else $STRATA_MATRIX, else the nearest matrix.yaml from the current
directory up to the repository root (`find_matrix`). The state root is $STRATA_HOME, else `.strata/` next to the
matrix file. Build logs and rendered contexts go to
`build/` next to the matrix file (the checkout's own working files), and so do the SBOMs, signatures and
vulnerability reports of the published images (`build/evidence/`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import MatrixError

HOME_ENV = "STRATA_HOME"
MATRIX_ENV = "STRATA_MATRIX"  # the matrix file when the command line names none
REGISTRY_ENV = "STRATA_REGISTRY"  # overrides registry.address (e.g. CI's private registry)
BUILDER_ENV = "STRATA_BUILDER"  # legacy | buildkit: force a way of building
LAYER_READ_ENV = (
    "STRATA_LAYER_READ"  # save: read layers through `docker save` even from a local overlay2 engine
)
# build: run install stages inside the engine's build of the Dockerfile (as plain `docker build` does) instead of
# in a container whose files become the layer (builder/plan/install_stage.py); the images are the same either way.
INSTALL_STAGE_ENV = "STRATA_INSTALL_STAGE"
REGISTRY_CACHE_ENV = (
    "STRATA_REGISTRY_CACHE"  # off: never pull a node from the registry instead of building it
)
REGISTRY_CA_ENV = "STRATA_REGISTRY_CA"  # CA bundle for registries with a private CA
# Comma-separated host[:port]s that STRATA_REGISTRY_USER/PASSWORD are also for (besides the matrix's registry)
REGISTRY_AUTH_HOSTS_ENV = "STRATA_REGISTRY_AUTH_HOSTS"
SIGNING_PASSPHRASE_ENV = (
    "STRATA_SIGNING_PASSPHRASE"  # decrypts the key of `strata sign` / encrypts `strata keygen`'s
)
DEFAULT_MATRIX = "matrix.yaml"


@dataclass(frozen=True)
class Settings:
    """Where Strata keeps its state and how it reaches the engine and registries, for one run."""

    state_root: Path
    matrix_file: Path = Path(DEFAULT_MATRIX)
    registry_override: str | None = None
    builder_override: str | None = None
    layer_read: str = ""  # "save" forces `docker save`; anything else lets Strata read local storage
    install_in_build: bool = False  # STRATA_INSTALL_STAGE=build: install stages run inside the engine's build
    registry_cache: bool = True
    registry_ca: Path | None = None
    # Registries STRATA_REGISTRY_USER/PASSWORD may be sent to besides the matrix's own (registry_override or
    # registry.address, which the caller names): host[:port], lower case.
    registry_auth_hosts: tuple[str, ...] = ()
    # PyPI mirrors from pip's configuration (read by the CLI with `pip config list`, see builder.lock.indexes):
    # `package_index` replaces PyPI like pip's index-url, `extra_package_indexes` are pip's extra-index-url.
    # Locks may name wheels on their hosts; fetching falls back to them, the sha256 being the identity.
    package_index: str | None = None
    extra_package_indexes: tuple[str, ...] = ()
    # Layers `strata push` compresses at once (STRATA_PUSH_WORKERS, read by cli/publish.py): one per usable core.
    push_workers: int = field(
        default_factory=lambda: (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        )
    )
    # The environment the CLI started with (read-only by convention; a plain dict so Settings pickles for workers).
    environ: Mapping[str, str] = field(default_factory=dict)

    @property
    def package_indexes(self) -> tuple[str, ...]:
        """Every configured package index (the replacement of PyPI first), without PyPI itself."""
        return ((self.package_index,) if self.package_index else ()) + self.extra_package_indexes

    @property
    def matrix_root(self) -> Path:
        """The directory the matrix file is in: relative paths of matrix.yaml resolve against it."""
        return self.matrix_file.resolve().parent

    @property
    def cache_dir(self) -> Path:
        """Content-addressed caches shared by every cell: wheelhouse, root filesystems, compressed layers."""
        return self.state_root / "cache"

    @property
    def compressed_layers_dir(self) -> Path:
        return self.cache_dir / "compressed-layers"

    @property
    def registry_dir(self) -> Path:
        """The embedded registry's data directory."""
        return self.state_root / "registry"

    @property
    def smoke_results_dir(self) -> Path:
        return self.state_root / "results" / "smoke"

    @property
    def bench_dir(self) -> Path:
        """Benchmark ledger, reports and per-run result files."""
        return self.state_root / "results" / "bench"

    @property
    def lock_logs_dir(self) -> Path:
        """pip's full output of each node's last resolution by `strata lock` (<node>.log)."""
        return self.state_root / "logs" / "lock"

    @property
    def ledger_path(self) -> Path:
        return self.bench_dir / "ledger.sqlite"

    @property
    def audit_log_path(self) -> Path:
        return self.state_root / "audit" / "tags.jsonl"

    @property
    def tmp_dir(self) -> Path:
        return self.state_root / "tmp"

    @property
    def work_dir(self) -> Path:
        """build/ next to the matrix: build logs and per-build contexts."""
        return self.matrix_root / "build"

    @property
    def evidence_dir(self) -> Path:
        """build/evidence next to the matrix: SBOMs, signatures, provenance and vulnerability reports per image."""
        return self.work_dir / "evidence"

    @property
    def signing_passphrase(self) -> bytes | None:
        """$STRATA_SIGNING_PASSPHRASE as bytes, None when unset (read from the environment, never stored apart)."""
        value = self.environ.get(SIGNING_PASSPHRASE_ENV)
        return value.encode() if value else None

    def ensure(self, path: Path) -> Path:
        """`path` (one of the directories above), created if missing."""
        path.mkdir(parents=True, exist_ok=True)
        return path


def resolve_settings(environ: Mapping[str, str], matrix_file: str | Path | None = None) -> Settings:
    """Settings from the process environment and the matrix file named on the command line (pure).

    Example: `resolve_settings({"STRATA_HOME": "/var/strata"}).cache_dir` is `/var/strata/cache`.
    """
    matrix = Path(matrix_file or DEFAULT_MATRIX)
    home = environ.get(HOME_ENV, "").strip()
    state_root = Path(home) if home else matrix.resolve().parent / ".strata"
    ca = environ.get(REGISTRY_CA_ENV, "").strip()
    install_stage = environ.get(INSTALL_STAGE_ENV, "").strip().lower()
    if install_stage not in ("", "build", "container"):
        raise MatrixError(f"{INSTALL_STAGE_ENV}={install_stage[:40]!r}: choose 'build' or 'container'")
    return Settings(
        state_root=state_root.absolute(),
        matrix_file=matrix,
        registry_override=environ.get(REGISTRY_ENV, "").strip() or None,
        builder_override=environ.get(BUILDER_ENV, "").strip() or None,
        layer_read=environ.get(LAYER_READ_ENV, "").strip(),
        install_in_build=install_stage == "build",
        registry_cache=environ.get(REGISTRY_CACHE_ENV, "").strip().lower() not in ("off", "0", "false", "no"),
        registry_ca=Path(ca) if ca else None,
        registry_auth_hosts=tuple(
            h.strip().lower() for h in environ.get(REGISTRY_AUTH_HOSTS_ENV, "").split(",") if h.strip()
        ),
        environ=dict(environ),
    )


def find_matrix(start: Path) -> Path | None:
    """matrix.yaml in `start` or its nearest parent that has one, looking no higher than the repository `start` is
    in (the first directory holding .git) or the filesystem root; None when there is none.

    Example: from `<checkout>/layers/base`, `find_matrix(Path.cwd())` is `<checkout>/matrix.yaml`.
    """
    here = start.absolute()
    for directory in (here, *here.parents):
        candidate = directory / DEFAULT_MATRIX
        if candidate.is_file():
            return candidate
        if (directory / ".git").exists():
            return None
    return None


def matrix_file(named: str | Path | None, environ: Mapping[str, str], cwd: Path) -> Path:
    """The run's matrix file: `named` (-f), else $STRATA_MATRIX, else `find_matrix(cwd)` (relative to `cwd`).

    Raises MatrixError naming where it looked when none is named and none is found.
    """
    if named:
        return Path(named)
    from_env = environ.get(MATRIX_ENV, "").strip()
    if from_env:
        return Path(from_env)
    found = find_matrix(cwd)
    if found is None:
        raise MatrixError(
            f"no {DEFAULT_MATRIX} in {cwd.absolute()} or a parent directory (up to the repository root); "
            f"name one with -f PATH or ${MATRIX_ENV}"
        )
    return Path(os.path.relpath(found, cwd.absolute()))

"""Which way of building images works on this host: buildx, the classic CLI with BuildKit, or legacy.

Hosts differ in ways version numbers do not tell: Debian's docker.io 20.10 ships a CLI with BuildKit
built in but no buildx; a newer static `docker` earlier on PATH may lack buildx and then refuses
`DOCKER_BUILDKIT=1 docker build`. So every `docker` on PATH (plus /usr/bin/docker) is probed, the
candidates are ranked by pure logic, and the first one that really builds a one-file `FROM scratch`
context (seen by the same engine as the SDK client) wins. The answer is cached per process.

Override with STRATA_BUILDER=legacy (always the SDK's legacy builder) or STRATA_BUILDER=buildkit
(a BuildKit path is required; HostError if none works).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import docker
import docker.errors

from builder.errors import HostError

BuilderKind = Literal["buildx", "buildkit-cli", "legacy"]
OVERRIDE_ENV = "STRATA_BUILDER"
FALLBACK_CLI = "/usr/bin/docker"
# From CLI 23.0 on, `DOCKER_BUILDKIT=1 docker build` needs the buildx plugin; older CLIs embed BuildKit.
CLI_WITHOUT_EMBEDDED_BUILDKIT = (23,)
# The engine gained the BuildKit backend in 18.09.
ENGINE_WITH_BUILDKIT = (18, 9)
PROBE_TIMEOUT_SECONDS = 20
VERIFY_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class BuilderChoice:
    """How Strata builds images on this host.

    kind: "buildx" (`<cli> buildx build`), "buildkit-cli" (`DOCKER_BUILDKIT=1 <cli> build`) or
    "legacy" (the docker SDK's legacy build API; `cli` is None). reason says why it was chosen.
    """

    kind: BuilderKind
    cli: str | None
    engine_version: str
    reason: str

    def build_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The environment to run this choice's build command with (based on `environ`)."""
        env = dict(environ)
        if self.kind == "buildkit-cli":
            env["DOCKER_BUILDKIT"] = "1"
        return env

    def build_argv(
        self,
        context: Path,
        tag: str,
        dockerfile: Path | None = None,
        build_args: Mapping[str, str] | None = None,
        quiet: bool = False,
    ) -> list[str]:
        """The CLI command line that builds `context` into `tag` (not available for kind "legacy").

        >>> BuilderChoice("buildkit-cli", "/usr/bin/docker", "20.10", "").build_argv(Path("ctx"), "a:b")
        ['/usr/bin/docker', 'build', '--tag', 'a:b', 'ctx']
        """
        if self.cli is None:
            raise ValueError("the legacy builder has no command line; build through the docker SDK")
        argv = [self.cli, "buildx", "build", "--load"] if self.kind == "buildx" else [self.cli, "build"]
        if quiet:
            argv.append("--quiet")
        argv += ["--tag", tag]
        if dockerfile is not None:
            argv += ["--file", str(dockerfile)]
        for key, value in sorted((build_args or {}).items()):
            argv += ["--build-arg", f"{key}={value}"]
        argv.append(str(context))
        return argv


@dataclass(frozen=True)
class CliProbe:
    """What one `docker` executable said about itself."""

    path: str
    version: tuple[int, ...] | None
    has_buildx: bool


# --- pure logic ---------------------------------------------------------------------------------


_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, ...] | None:
    """Leading numeric version from docker-style version strings; None if there is none.

    >>> parse_version("Docker version 20.10.24+dfsg1, build 297e128")
    (20, 10, 24)
    >>> parse_version("28.2.2")
    (28, 2, 2)
    """
    match = _VERSION_RE.search(text)
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def candidate_paths(path_env: str, fallback: str = FALLBACK_CLI) -> list[str]:
    """`docker` in every PATH directory, in PATH order, then `fallback`; duplicates removed.

    >>> candidate_paths("/usr/local/bin:/usr/bin")
    ['/usr/local/bin/docker', '/usr/bin/docker']
    """
    paths: list[str] = []
    for directory in path_env.split(os.pathsep):
        if directory:
            paths.append(os.path.join(os.path.normpath(directory), "docker"))
    paths.append(fallback)
    return list(dict.fromkeys(paths))


def engine_supports_buildkit(engine_version: str, os_type: str) -> bool:
    """True when the engine has the BuildKit backend (18.09+ on Linux)."""
    version = parse_version(engine_version)
    return os_type.lower() == "linux" and version is not None and version >= ENGINE_WITH_BUILDKIT


def rank_choices(
    probes: Sequence[CliProbe], engine_version: str, engine_buildkit: bool, override: str | None
) -> list[BuilderChoice]:
    """All viable build paths, best first, ending with "legacy" unless BuildKit was demanded.

    Order: every CLI with buildx (PATH order), then every CLI older than 23 that embeds BuildKit when
    the engine has it, then legacy. override "legacy" gives only legacy; "buildkit" drops legacy.
    """
    legacy = BuilderChoice("legacy", None, engine_version, "no CLI builds with BuildKit here; SDK legacy API")
    if override == "legacy":
        return [BuilderChoice("legacy", None, engine_version, f"{OVERRIDE_ENV}=legacy")]
    choices: list[BuilderChoice] = []
    for probe in probes:
        if probe.has_buildx:
            choices.append(BuilderChoice("buildx", probe.path, engine_version, f"{probe.path} has buildx"))
    if engine_buildkit:
        for probe in probes:
            if probe.version is not None and probe.version < CLI_WITHOUT_EMBEDDED_BUILDKIT:
                shown = ".".join(map(str, probe.version))
                reason = f"{probe.path} {shown} embeds BuildKit (no buildx needed); engine {engine_version}"
                choices.append(BuilderChoice("buildkit-cli", probe.path, engine_version, reason))
    if override != "buildkit":
        choices.append(legacy)
    return choices


def read_override(environ: Mapping[str, str]) -> str | None:
    """The STRATA_BUILDER override ("legacy" or "buildkit") or None; HostError on other values."""
    value = environ.get(OVERRIDE_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ("legacy", "buildkit"):
        raise HostError(f"{OVERRIDE_ENV}={value!r} is not understood; use legacy or buildkit (or unset it)")
    return value


# --- effects ------------------------------------------------------------------------------------


def existing_clis(paths: Sequence[str]) -> list[str]:
    """The executable files among `paths`, keeping the first of those that resolve to the same file."""
    seen: set[str] = set()
    found: list[str] = []
    for path in paths:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                found.append(path)
    return found


def _run(argv: Sequence[str], timeout: float, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(list(argv), 127, "", str(exc))


def probe_cli(path: str, environ: Mapping[str, str]) -> CliProbe:
    """Ask one docker CLI for its own version (no engine needed) and whether `buildx version` works."""
    version = parse_version(_run([path, "--version"], PROBE_TIMEOUT_SECONDS, environ).stdout)
    has_buildx = _run([path, "buildx", "version"], PROBE_TIMEOUT_SECONDS, environ).returncode == 0
    return CliProbe(path, version, has_buildx)


def verify_choice(
    choice: BuilderChoice, client: docker.DockerClient, environ: Mapping[str, str]
) -> str | None:
    """Build a one-file `FROM scratch` context through `choice`; None if it worked, else why not.

    The image must then be visible through `client`, which proves the CLI talks to the same engine.
    """
    tag = f"strata-builder-probe:{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="strata-probe-") as tmp:
        context = Path(tmp)
        # Unique content: a cached, content-identical image could be pruned by someone else mid-probe.
        (context / "probe.txt").write_text(f"strata builder probe {tag}\n")
        (context / "Dockerfile").write_text("FROM scratch\nCOPY probe.txt /probe.txt\n")
        try:
            if choice.cli is None:
                client.images.build(
                    path=str(context), tag=tag, rm=True, nocache=True, timeout=VERIFY_TIMEOUT_SECONDS
                )
            else:
                argv = choice.build_argv(context, tag, quiet=True)
                proc = _run(argv, VERIFY_TIMEOUT_SECONDS, env=choice.build_env(environ))
                if proc.returncode != 0:
                    lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
                    return f"`{' '.join(argv[:3])} ...` failed: {lines[0] if lines else proc.returncode}"
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            return f"{choice.cli} built the probe but the engine of the SDK client does not see it"
        except docker.errors.DockerException as exc:
            return f"probe build failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        finally:
            try:
                client.images.remove(tag, force=True, noprune=False)
            except docker.errors.DockerException:
                pass
    return None


_CACHE: dict[tuple[str, str, str | None], BuilderChoice] = {}


def detect_builder(client: docker.DockerClient, environ: Mapping[str, str]) -> BuilderChoice:
    """Pick and verify the best way to build images with `client`'s engine (cached per process).

    `environ` is the environment of the run (STRATA_BUILDER, PATH; the docker CLIs run with it). Raise HostError
    if STRATA_BUILDER=buildkit was asked for and no BuildKit path works, or if not even the legacy builder can
    build a `FROM scratch` image.
    """
    env = environ
    override = read_override(env)
    # The daemon's ID, not the client's URL: unix sockets all show up as http+docker://localhost.
    key = (str(client.info().get("ID", client.api.base_url)), env.get("PATH", ""), override)
    if key in _CACHE:
        return _CACHE[key]
    version_info = client.version()
    engine_version = str(version_info.get("Version", "unknown"))
    buildkit = engine_supports_buildkit(engine_version, str(version_info.get("Os", "linux")))
    probes = [probe_cli(path, env) for path in existing_clis(candidate_paths(env.get("PATH", "")))]
    failures: list[str] = []
    for choice in rank_choices(probes, engine_version, buildkit, override):
        why_not = verify_choice(choice, client, env)
        if why_not is None:
            if failures:
                choice = BuilderChoice(
                    choice.kind,
                    choice.cli,
                    choice.engine_version,
                    f"{choice.reason} (skipped: {'; '.join(failures)})",
                )
            _CACHE[key] = choice
            return choice
        failures.append(f"{choice.kind} via {choice.cli or 'SDK'}: {why_not}")
    if override == "buildkit":
        detail = "; ".join(failures) or "no docker CLI with buildx or with embedded BuildKit found on PATH"
        raise HostError(
            f"{OVERRIDE_ENV}=buildkit but no BuildKit build works ({detail}); "
            "install docker.io (CLI 20.10) or docker-buildx, or unset it"
        )
    raise HostError(f"the Docker engine cannot build even a FROM scratch image ({'; '.join(failures)})")


def clear_cache() -> None:
    """Forget cached choices (for tests and long-lived processes whose PATH changed)."""
    _CACHE.clear()

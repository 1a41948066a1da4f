"""Pure parts of builder.engine.caps: version parsing, candidate order, ranking, command lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.engine import caps as engine_caps
from builder.engine.caps import BuilderChoice, CliProbe
from builder.errors import HostError


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("Docker version 20.10.24+dfsg1, build 297e128", (20, 10, 24)),
        ("28.2.2", (28, 2, 2)),
        ("github.com/docker/buildx v0.10.4 c513d34", (0, 10, 4)),
        ("23.0", (23, 0)),
        ("no version here", None),
        ("", None),
    ],
)
def test_parse_version(text: str, version: tuple[int, ...] | None) -> None:
    assert engine_caps.parse_version(text) == version


def test_candidate_paths_follow_path_order_then_fallback_without_duplicates() -> None:
    path_env = os.pathsep.join(["/usr/local/bin", "", "/usr/bin/", "/bin", "/usr/local/bin"])
    assert engine_caps.candidate_paths(path_env) == [
        "/usr/local/bin/docker",
        "/usr/bin/docker",
        "/bin/docker",
    ]
    assert engine_caps.candidate_paths("") == ["/usr/bin/docker"]


def test_existing_clis_skips_missing_and_files_aliasing_an_earlier_one(tmp_path: Path) -> None:
    real = tmp_path / "a" / "docker"
    real.parent.mkdir()
    real.write_text("#!/bin/sh\n")
    real.chmod(0o755)
    alias = tmp_path / "b" / "docker"
    alias.parent.mkdir()
    alias.symlink_to(real)
    not_exec = tmp_path / "c" / "docker"
    not_exec.parent.mkdir()
    not_exec.write_text("")
    paths = [str(tmp_path / "none" / "docker"), str(real), str(alias), str(not_exec)]
    assert engine_caps.existing_clis(paths) == [str(real)]


def test_engine_supports_buildkit_from_18_09_on_linux() -> None:
    assert engine_caps.engine_supports_buildkit("20.10.24+dfsg1", "linux")
    assert engine_caps.engine_supports_buildkit("18.09.0", "linux")
    assert not engine_caps.engine_supports_buildkit("18.06.1-ce", "linux")
    assert not engine_caps.engine_supports_buildkit("20.10.24", "windows")
    assert not engine_caps.engine_supports_buildkit("unknown", "linux")


NEW_NO_BUILDX = CliProbe("/usr/local/bin/docker", (28, 2, 2), has_buildx=False)
DEBIAN_20_10 = CliProbe("/usr/bin/docker", (20, 10, 24), has_buildx=False)
WITH_BUILDX = CliProbe("/opt/docker", (27, 0, 1), has_buildx=True)


def kinds(choices: list[BuilderChoice]) -> list[tuple[str, str | None]]:
    return [(c.kind, c.cli) for c in choices]


def test_this_hosts_shape_prefers_the_old_cli_over_the_shadowing_new_one() -> None:
    choices = engine_caps.rank_choices([NEW_NO_BUILDX, DEBIAN_20_10], "20.10.24", True, None)
    assert kinds(choices) == [("buildkit-cli", "/usr/bin/docker"), ("legacy", None)]
    assert "embeds BuildKit" in choices[0].reason
    assert all(c.engine_version == "20.10.24" for c in choices)


def test_buildx_comes_first_then_embedded_buildkit_then_legacy() -> None:
    choices = engine_caps.rank_choices([NEW_NO_BUILDX, DEBIAN_20_10, WITH_BUILDX], "24.0.7", True, None)
    assert kinds(choices) == [
        ("buildx", "/opt/docker"),
        ("buildkit-cli", "/usr/bin/docker"),
        ("legacy", None),
    ]


def test_no_embedded_buildkit_when_the_engine_lacks_it() -> None:
    choices = engine_caps.rank_choices([DEBIAN_20_10], "18.06.1", False, None)
    assert kinds(choices) == [("legacy", None)]


def test_a_cli_of_unknown_version_is_not_assumed_to_embed_buildkit() -> None:
    unknown = CliProbe("/usr/bin/docker", None, has_buildx=False)
    assert kinds(engine_caps.rank_choices([unknown], "20.10", True, None)) == [("legacy", None)]


def test_override_legacy_and_buildkit() -> None:
    probes = [WITH_BUILDX, DEBIAN_20_10]
    legacy = engine_caps.rank_choices(probes, "20.10", True, "legacy")
    assert kinds(legacy) == [("legacy", None)]
    assert "STRATA_BUILDER=legacy" in legacy[0].reason
    buildkit = engine_caps.rank_choices(probes, "20.10", True, "buildkit")
    assert kinds(buildkit) == [("buildx", "/opt/docker"), ("buildkit-cli", "/usr/bin/docker")]
    assert engine_caps.rank_choices([NEW_NO_BUILDX], "20.10", True, "buildkit") == []


def test_read_override_accepts_known_values_and_rejects_others() -> None:
    assert engine_caps.read_override({}) is None
    assert engine_caps.read_override({"STRATA_BUILDER": " Legacy "}) == "legacy"
    assert engine_caps.read_override({"STRATA_BUILDER": "buildkit"}) == "buildkit"
    with pytest.raises(HostError, match="STRATA_BUILDER='kaniko' is not understood"):
        engine_caps.read_override({"STRATA_BUILDER": "kaniko"})


def test_build_argv_and_env_per_kind() -> None:
    ctx, dockerfile = Path("/ctx"), Path("/ctx/Dockerfile.gpu")
    buildkit = BuilderChoice("buildkit-cli", "/usr/bin/docker", "20.10", "")
    assert buildkit.build_argv(ctx, "img:1", dockerfile, {"B": "2", "A": "1"}, quiet=True) == [
        "/usr/bin/docker",
        "build",
        "--quiet",
        "--tag",
        "img:1",
        "--file",
        "/ctx/Dockerfile.gpu",
        "--build-arg",
        "A=1",
        "--build-arg",
        "B=2",
        "/ctx",
    ]
    assert buildkit.build_env({"PATH": "/bin"}) == {"PATH": "/bin", "DOCKER_BUILDKIT": "1"}
    buildx = BuilderChoice("buildx", "/opt/docker", "24.0", "")
    assert buildx.build_argv(ctx, "img:1")[:4] == ["/opt/docker", "buildx", "build", "--load"]
    assert "DOCKER_BUILDKIT" not in buildx.build_env({})
    with pytest.raises(ValueError, match="SDK"):
        BuilderChoice("legacy", None, "20.10", "").build_argv(ctx, "img:1")

"""Settings: one state root for every cache, result and log, resolved once from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import MatrixError
from builder.settings import find_matrix, matrix_file, resolve_settings


def test_state_root_is_strata_home_when_set(tmp_path: Path) -> None:
    settings = resolve_settings({"STRATA_HOME": str(tmp_path)}, tmp_path / "elsewhere" / "matrix.yaml")
    assert settings.state_root == tmp_path
    assert settings.registry_dir == tmp_path / "registry"
    assert settings.cache_dir == tmp_path / "cache"
    assert settings.compressed_layers_dir == tmp_path / "cache" / "compressed-layers"
    assert settings.smoke_results_dir == tmp_path / "results" / "smoke"
    assert settings.ledger_path == tmp_path / "results" / "bench" / "ledger.sqlite"
    assert settings.audit_log_path == tmp_path / "audit" / "tags.jsonl"


def test_state_root_defaults_to_dot_strata_next_to_the_matrix(tmp_path: Path) -> None:
    settings = resolve_settings({}, tmp_path / "project" / "matrix.yaml")
    assert settings.state_root == tmp_path / "project" / ".strata"
    assert settings.work_dir == tmp_path / "project" / "build"


def test_every_variable_is_read_once_into_a_typed_field(tmp_path: Path) -> None:
    env = {
        "STRATA_REGISTRY": " registry.example:5000 ",
        "STRATA_BUILDER": "legacy",
        "STRATA_LAYER_READ": "save",
        "STRATA_REGISTRY_CACHE": "off",
        "STRATA_REGISTRY_CA": str(tmp_path / "ca.crt"),
        "PATH": "/usr/bin",
    }
    settings = resolve_settings(env, tmp_path / "matrix.yaml")
    assert settings.registry_override == "registry.example:5000"
    assert settings.builder_override == "legacy"
    assert settings.layer_read == "save"
    assert settings.registry_cache is False
    assert settings.registry_ca == tmp_path / "ca.crt"
    assert settings.environ["PATH"] == "/usr/bin"


def test_empty_values_mean_unset(tmp_path: Path) -> None:
    settings = resolve_settings({"STRATA_REGISTRY": "  ", "STRATA_HOME": ""}, tmp_path / "matrix.yaml")
    assert settings.registry_override is None
    assert settings.state_root == tmp_path / ".strata"
    assert settings.registry_cache is True


def test_find_matrix_looks_upward_and_stops_at_the_repository_root(tmp_path: Path) -> None:
    outer = tmp_path / "matrix.yaml"
    outer.write_text("schema: 1\n")
    repo = tmp_path / "repo"
    deep = repo / "a" / "b"
    deep.mkdir(parents=True)
    assert find_matrix(deep) == outer  # no .git in between: up to the filesystem root
    (repo / ".git").write_text("gitdir: elsewhere\n")  # a worktree's .git is a file
    assert find_matrix(deep) is None  # the matrix above the repository is not this checkout's
    (repo / "matrix.yaml").write_text("schema: 1\n")
    assert find_matrix(deep) == repo / "matrix.yaml"
    (deep / "matrix.yaml").mkdir()  # a directory of that name is not a matrix
    assert find_matrix(deep) == repo / "matrix.yaml"


def test_matrix_file_prefers_the_flag_then_strata_matrix_then_discovery(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "matrix.yaml").write_text("schema: 1\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    assert matrix_file("m.yaml", {"STRATA_MATRIX": "env.yaml"}, sub) == Path("m.yaml")
    assert matrix_file(None, {"STRATA_MATRIX": "env.yaml"}, sub) == Path("env.yaml")
    assert matrix_file(None, {"STRATA_MATRIX": " "}, sub) == Path("../matrix.yaml")
    assert matrix_file(None, {}, tmp_path) == Path("matrix.yaml")
    (tmp_path / "matrix.yaml").unlink()
    with pytest.raises(
        MatrixError, match=r"no matrix.yaml in .*sub or a parent directory .* -f PATH or \$STRATA_MATRIX"
    ):
        matrix_file(None, {}, sub)

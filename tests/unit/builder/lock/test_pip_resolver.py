"""The pip command that resolves inside a base image: isolated from the host's pip, except its package indexes."""

from __future__ import annotations

from pathlib import Path

from builder.lock.pip_resolver import _keep_log, conflict_explanation, in_image_command, resolution_error
from builder.settings import resolve_settings


def test_isolated_without_indexes() -> None:
    cmd = in_image_command("/work/report.json", "/work/requirements.in", None, None)
    assert "--isolated" in cmd and "--only-binary=:all:" in cmd
    assert "--index-url" not in cmd and "--extra-index-url" not in cmd and "-c" not in cmd


def test_mirror_indexes_are_passed_as_pip_options() -> None:
    cmd = in_image_command(
        "/r.json",
        "/req.in",
        "/c.txt",
        "/ca.crt",
        "https://mirror.example/simple",
        ("file:///opt/pypi/simple", "https://more.example/simple"),
    )
    assert cmd[cmd.index("-c") + 1] == "/c.txt" and cmd[cmd.index("--cert") + 1] == "/ca.crt"
    assert cmd[cmd.index("--index-url") :] == [
        "--index-url",
        "https://mirror.example/simple",
        "--extra-index-url",
        "file:///opt/pypi/simple",
        "--extra-index-url",
        "https://more.example/simple",
    ]


# Real pip output, captured once with pip 24.2 (PIP_WHEEL) on Python 3.11 and PyPI:
#   pip install --dry-run --ignore-installed --only-binary=:all: --progress-bar off --report r.json -r rN.in [-c cN.txt]
# requested:  tensorflow-cpu==2.13.1 and numpy==2.0 both in the requirements
# constraint: tensorflow-cpu==2.13.1, scipy==1.14.0, pandas, matplotlib, scikit-learn; constraint numpy==1.23.2
# candidates: tensorflow-cpu>=2.12,<2.14; constraint numpy==2.0.0 (pip tries four releases of TensorFlow)
DATA = Path(__file__).parent / "data"


def pip_output(name: str) -> str:
    return (DATA / f"pip-conflict-{name}.txt").read_text(encoding="utf-8")


def test_conflict_explanation_is_pips_requirement_chain() -> None:
    assert conflict_explanation(pip_output("requested")) == [
        "tensorflow-cpu 2.13.1 depends on numpy<=1.24.3 and >=1.22",
        "The user requested numpy==2.0",
    ]
    assert conflict_explanation(pip_output("constraint")) == [
        "tensorflow-cpu 2.13.1 depends on numpy<=1.24.3 and >=1.22",
        "scipy 1.14.0 depends on numpy<2.3 and >=1.23.5",
        "The user requested (constraint) numpy==1.23.2",
    ]


def test_conflict_explanation_is_trimmed_but_keeps_the_requests() -> None:
    assert conflict_explanation(pip_output("candidates"), limit=2) == [
        "tensorflow-cpu 2.13.1 depends on numpy<=1.24.3 and >=1.22",
        "tensorflow-cpu 2.13.0 depends on numpy<=1.24.3 and >=1.22",
        "... and 2 more (see the log)",
        "The user requested (constraint) numpy==2.0.0",
    ]
    assert len(conflict_explanation(pip_output("candidates"))) == 5  # the default limit shows all four here


def test_resolution_error_shows_the_conflict_and_names_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "lock" / "tf2.13.1-cpu-py3.11.log"
    error = resolution_error("tf2.13.1-cpu-py3.11", "strata/base:h-1", pip_output("constraint"), 1, log)
    assert str(error).splitlines() == [
        "cannot resolve requirements for tf2.13.1-cpu-py3.11 (in strata/base:h-1): conflicting requirements:",
        "    tensorflow-cpu 2.13.1 depends on numpy<=1.24.3 and >=1.22",
        "    scipy 1.14.0 depends on numpy<2.3 and >=1.23.5",
        "    The user requested (constraint) numpy==1.23.2",
        f"  pip's full output: {log}",
    ]
    assert "ResolutionImpossible" not in str(error)


def test_other_pip_failures_keep_pips_last_error() -> None:
    output = "ERROR: Could not find a version that satisfies the requirement nope==9\n" + (
        "ERROR: No matching distribution found for nope==9\n"
    )
    error = resolution_error("tools-x", "img", output, 1, None)
    assert (
        str(error)
        == "cannot resolve requirements for tools-x (in img): No matching distribution found for nope==9"
    )
    assert str(resolution_error("tools-x", "img", "", 137, None)).endswith(": pip exited 137")


def test_the_full_log_is_kept_under_the_state_root(tmp_path: Path) -> None:
    settings = resolve_settings({"STRATA_HOME": str(tmp_path)})
    path = _keep_log(settings.lock_logs_dir, "tf2.13.1-cpu-py3.11", pip_output("requested"))
    assert path == tmp_path / "logs" / "lock" / "tf2.13.1-cpu-py3.11.log"
    assert path.read_text(encoding="utf-8") == pip_output("requested")


def test_pip_runs_without_quiet_so_the_explanation_is_logged() -> None:
    cmd = in_image_command("/work/report.json", "/work/requirements.in", None, None)
    assert "--quiet" not in cmd and "-q" not in cmd
    assert cmd[cmd.index("--progress-bar") + 1] == "off"

"""The README's test command is what CI runs: `.ci/run` calls it byte for byte, with CI=true exported first."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_COMMAND = "bash scripts/setup-host.sh && .venv/bin/strata lock --check && .venv/bin/python -m pytest"


def readme_test_command() -> str:
    """The one line of the fenced block under **Run the tests** in README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("**Run the tests**", 1)
    assert len(section) == 2, "README.md has no **Run the tests** paragraph"
    block = re.search(r"```sh\n(.*?)```", section[1], re.DOTALL)
    assert block, "README.md: no ```sh block after **Run the tests**"
    lines = block.group(1).splitlines()
    assert len(lines) == 1, f"README.md: the test command is one line, got {lines}"
    return lines[0]


def ci_run_commands() -> list[str]:
    """The commands of .ci/run: its lines without comments, blank lines and the shebang."""
    text = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_keeps_the_test_command() -> None:
    assert readme_test_command() == TEST_COMMAND


def test_ci_run_calls_exactly_the_readme_command_last() -> None:
    commands = ci_run_commands()
    assert commands[-1].encode() == readme_test_command().encode()
    assert commands.count(commands[-1]) == 1


def test_ci_run_exports_ci_true_before_the_command_and_stops_on_the_first_error() -> None:
    commands = ci_run_commands()
    assert commands.index("export CI=true") < len(commands) - 1
    assert "set -euo pipefail" in commands
    # Nothing else runs tests or changes what the command sees (no second pytest, no other variables).
    for line in commands[:-1]:
        words = shlex.split(line)
        assert "pytest" not in words, line
        assert words[0] in {"set", "cd", "export"}, f".ci/run runs {line!r} besides the README command"
        if words[0] == "export":
            assert words[1:] == ["CI=true"], line

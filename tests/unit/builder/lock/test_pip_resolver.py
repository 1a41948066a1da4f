"""The pip command that resolves inside a base image: isolated from the host's pip, except its package indexes."""

from __future__ import annotations

from builder.lock.pip_resolver import in_image_command


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

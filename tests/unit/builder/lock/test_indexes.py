"""Which hosts a locked wheel may name, and reading the package indexes of pip's configuration."""

from __future__ import annotations

import subprocess
import sys

import pytest

from builder.lock.indexes import (
    PipIndexes,
    file_index_root,
    parse_pip_config_list,
    read_pip_indexes,
    wheel_url_problem,
)

MIRRORS = ("https://mirror.example:8443/pypi/simple", "file:///srv/pypi/simple/")


@pytest.mark.parametrize(
    "url",
    [
        "https://files.pythonhosted.org/packages/aa/bb/six-1.17.0-py2.py3-none-any.whl",
        "https://FILES.pythonhosted.org:443/packages/six-1.17.0-py2.py3-none-any.whl",
        "https://mirror.example:8443/files/six-1.17.0-py2.py3-none-any.whl",
        "file:///srv/pypi/files/six-1.17.0-py2.py3-none-any.whl",
    ],
)
def test_allowed(url: str) -> None:
    assert wheel_url_problem(url, MIRRORS) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (
            "http://files.pythonhosted.org/six.whl",
            "http://files.pythonhosted.org is neither https://files.pythonhosted.org nor a configured package index",
        ),
        (
            "https://files.pythonhosted.org.evil.example/six.whl",
            "https://files.pythonhosted.org.evil.example is neither https://files.pythonhosted.org nor a "
            "configured package index",
        ),
        (
            "https://mirror.example/files/six.whl",
            "https://mirror.example is neither https://files.pythonhosted.org nor a configured package index",
        ),
        (
            "https://mirror.example:8444/files/six.whl",
            "https://mirror.example:8444 is neither https://files.pythonhosted.org nor a configured package index",
        ),
        ("https://user:pw@files.pythonhosted.org/six.whl", "the URL carries credentials"),
        ("file:///etc/six.whl", "file /etc/six.whl is not under a configured file: package index"),
        (
            "file:///srv/pypi/../../etc/six.whl",
            "file /etc/six.whl is not under a configured file: package index",
        ),
        (
            "file:///srv/pypi-evil/six.whl",
            "file /srv/pypi-evil/six.whl is not under a configured file: package index",
        ),
    ],
)
def test_refused(url: str, problem: str) -> None:
    assert wheel_url_problem(url, MIRRORS) == problem


def test_file_index_root_is_the_directory_holding_simple() -> None:
    assert file_index_root("file:///opt/pypi/simple") == "/opt/pypi"
    assert file_index_root("file:///opt/pypi/simple/") == "/opt/pypi"
    assert file_index_root("file:///opt/wheels/index") == "/opt/wheels/index"


def test_pip_config_list_output_is_parsed_with_pips_precedence() -> None:
    text = (
        ":env:.cert='/etc/ssl/certs/ca-certificates.crt'\n"
        ":env:.find-links='/opt/wheels'\n"
        "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'\n"
        "global.index-url='https://global.example/simple'\n"
        "install.index-url='https://install.example/simple'\n"
    )
    assert parse_pip_config_list(text) == PipIndexes(
        "https://install.example/simple", ("file:///opt/pypi/simple", "file:///opt/pypi-more/simple")
    )
    env = text + ":env:.index-url='https://env.example/simple'\n"
    assert parse_pip_config_list(env).index_url == "https://env.example/simple"
    assert parse_pip_config_list("global.index-url='https://pypi.org/simple'\n") == PipIndexes()
    assert parse_pip_config_list("") == PipIndexes()


def test_read_pip_indexes_asks_pip_itself(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nindex-url = https://mirror.example/simple\nextra-index-url =\n  file:///srv/a/simple\n  https://b.example/simple\n"
    )
    env = {"PIP_CONFIG_FILE": str(config), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, check=False)
    assert probe.returncode == 0, "pip is part of Strata's environment"
    assert read_pip_indexes(env) == PipIndexes(
        "https://mirror.example/simple", ("file:///srv/a/simple", "https://b.example/simple")
    )
    assert read_pip_indexes(env, python=str(tmp_path / "no-python")) == PipIndexes()

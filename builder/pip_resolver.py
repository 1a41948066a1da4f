"""Resolve Python requirements for an image's Python and glibc on the host, with pip's installation report.

Touches the network (PyPI). The host's own pip configuration (extra indexes, find-links, constraints) is ignored:
a lock must depend only on the public index and the inputs we pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import StrataError
from builder.lockfile import PinnedWheel

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class Target:
    """The interpreter and platform wheels must fit: e.g. Python 3.9 on glibc 2.31 (Debian bullseye)."""

    python: str
    glibc: str

    def platforms(self) -> list[str]:
        major, minor = (int(x) for x in self.glibc.split("."))
        tags = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 4, -1)]
        return tags + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]

    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")


def pip_command(requirements: Path, constraints: Path | None, target: Target, report: Path, workdir: Path) -> list[str]:
    """The pip command line that resolves without installing (pure; unit-tested)."""
    cmd = [
        sys.executable, "-m", "pip", "install", "--isolated", "--disable-pip-version-check", "--quiet",
        "--dry-run", "--ignore-installed", "--target", str(workdir / "target"),
        "--report", str(report), "--only-binary=:all:",
        "--python-version", target.python, "--implementation", "cp", "--abi", target.abi(), "--abi", "abi3", "--abi", "none",
    ]
    for tag in target.platforms():
        cmd += ["--platform", tag]
    if os.path.exists(CA_BUNDLE):
        cmd += ["--cert", CA_BUNDLE]
    cmd += ["-r", str(requirements)]
    if constraints is not None:
        cmd += ["-c", str(constraints)]
    return cmd


def resolve(requirements: list[str], constraints: dict[str, str], target: Target, what: str) -> list[PinnedWheel]:
    """Resolve to exact wheels with sha256 hashes. `what` names the node in errors."""
    with tempfile.TemporaryDirectory(prefix="strata-resolve-") as tmp:
        work = Path(tmp)
        req = work / "requirements.in"
        req.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        con = None
        if constraints:
            con = work / "constraints.txt"
            con.write_text("".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())), encoding="utf-8")
        report = work / "report.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        proc = subprocess.run(
            pip_command(req, con, target, report, work), capture_output=True, text=True, env=env, timeout=1800
        )
        if proc.returncode != 0:
            reason = _last_error(proc.stderr) or f"pip exited {proc.returncode}"
            raise StrataError(f"cannot resolve requirements for {what} (Python {target.python}): {reason}")
        data = json.loads(report.read_text(encoding="utf-8"))
    return [_pinned(item, what) for item in data.get("install", [])]


def _pinned(item: dict, what: str) -> PinnedWheel:
    meta = item["metadata"]
    info = item["download_info"]
    sha = info.get("archive_info", {}).get("hashes", {}).get("sha256") or ""
    if not sha:
        hash_field = info.get("archive_info", {}).get("hash", "")
        sha = hash_field.split("=", 1)[1] if hash_field.startswith("sha256=") else ""
    if not sha:
        raise StrataError(f"{what}: index gave no sha256 for {meta['name']} {meta['version']}")
    return PinnedWheel(name=meta["name"], version=meta["version"], sha256=sha, url=info["url"])


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "notice" not in ln]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    return (errors[-1] if errors else (lines[-1] if lines else "")).removeprefix("ERROR: ")[:300]

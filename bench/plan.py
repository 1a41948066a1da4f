"""How long `strata plan` takes: the default matrix and a generated matrix of 200 cells (target: < 1 s).

Run: python bench/plan.py
Prints wall times (best of N) of planning in-process and of the `strata plan` command, and the ratio to the target.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from builder.matrix.load import load_matrix  # noqa: E402
from builder.plan.graph import build_plan  # noqa: E402

TARGET_SECONDS = 1.0


def generated_matrix(root: Path, cells: int) -> Path:
    """The default matrix with extra TF 2.13 patch versions and user layers until it has `cells` cells."""
    shutil.copytree(REPO / "layers", root / "layers")
    text = (REPO / "matrix.yaml").read_text()
    frameworks = []
    # 2 flavors per framework entry: 100 entries of distinct (fake) patch versions give 200 cells.
    for i in range(cells // 2):
        frameworks.append(
            f'  - tf: "2.13.{i + 100}"\n    flavors: [cpu, gpu]\n    requirements: layers/framework/requirements-tf2.13.in\n'
            '    profiles:\n      hermetic: {os: bookworm, cuda: "11.8"}\n      upstream: {os: ubuntu22.04, cuda: "11.8"}\n'
        )
    start = text.index("frameworks:\n") + len("frameworks:\n")
    end = text.index("\n# The tools layer")
    text = text[:start] + "".join(frameworks) + text[end:]
    text = text[: text.index("aliases:")] + "aliases: []\n"
    path = root / "matrix.yaml"
    path.write_text(text)
    return path


def best_of(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        big = generated_matrix(Path(tmp), 200)
        cells = len(load_matrix(big).cells)
        nodes = len(build_plan(load_matrix(big)).nodes)
        rows = [
            ("default matrix, in-process", best_of(5, lambda: build_plan(load_matrix(REPO / "matrix.yaml")))),
            (f"{cells} cells ({nodes} nodes), in-process", best_of(3, lambda: build_plan(load_matrix(big)))),
            (
                "default matrix, `strata plan` command",
                best_of(
                    3,
                    lambda: subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "cli.main",
                            "plan",
                            "-f",
                            str(REPO / "matrix.yaml"),
                            "--format",
                            "json",
                        ],
                        check=True,
                        capture_output=True,
                        cwd=REPO,
                    ),
                ),
            ),
            (
                f"{cells} cells, `strata plan` command",
                best_of(
                    3,
                    lambda: subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "cli.main",
                            "plan",
                            "-f",
                            str(big),
                            "--format",
                            "json",
                        ],
                        check=True,
                        capture_output=True,
                        cwd=REPO,
                    ),
                ),
            ),
        ]
    print(f"{'case':48} {'seconds':>8} {'÷ target (1 s)':>15}")
    for name, secs in rows:
        print(f"{name:48} {secs:8.3f} {secs / TARGET_SECONDS:15.2f}")


if __name__ == "__main__":
    main()

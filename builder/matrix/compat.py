"""TensorFlow ↔ Python ↔ CUDA ↔ cuDNN rules, as data, and the checks that apply them to a cell.

Sources: TensorFlow's tested build configurations (tensorflow.org/install/source#gpu) and NVIDIA's CUDA minor-version
compatibility (any CUDA 11.x runtime runs on a driver >= 450.80.02) and cuDNN's ABI promise within a major version.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import Version


@dataclass(frozen=True)
class TfRule:
    """What one TensorFlow minor release was built and tested with."""

    tf_minor: str
    python: SpecifierSet
    tested_cuda: str
    tested_cudnn: str
    min_driver: str
    compatible_cuda: tuple[str, ...]  # run, but untested: needs `allow: {reason: ...}`
    compatible_cudnn: tuple[str, ...]
    numpy_below: str  # TF's C extensions are built against numpy 1.x

    def python_range(self) -> str:
        lo = hi = None
        for spec in self.python:
            if spec.operator == ">=":
                lo = spec.version
            elif spec.operator == "<":
                major, minor = spec.version.split(".")[:2]
                hi = f"{major}.{int(minor) - 1}"
        return f"{lo}–{hi}"


TF_RULES: dict[str, TfRule] = {
    rule.tf_minor: rule
    for rule in (
        TfRule(
            tf_minor="2.10",
            python=SpecifierSet(">=3.7,<3.11"),
            tested_cuda="11.2",
            tested_cudnn="8.1",
            min_driver="450.80.02",
            compatible_cuda=("11.3", "11.4", "11.5", "11.6", "11.7", "11.8"),
            compatible_cudnn=("8.2", "8.3", "8.4", "8.5", "8.6", "8.7", "8.8", "8.9"),
            numpy_below="2",
        ),
        TfRule(
            tf_minor="2.13",
            python=SpecifierSet(">=3.8,<3.12"),
            tested_cuda="11.8",
            tested_cudnn="8.6",
            min_driver="450.80.02",
            compatible_cuda=(),
            compatible_cudnn=("8.7", "8.8", "8.9"),
            numpy_below="2",
        ),
    )
}

# glibc of each OS we know how to base images on: decides which manylinux wheels a cell can install.
OS_GLIBC: dict[str, str] = {
    "bullseye": "2.31",
    "bookworm": "2.36",
    "trixie": "2.41",
    "ubuntu20.04": "2.31",
    "ubuntu22.04": "2.35",
    "ubuntu24.04": "2.39",
}


def tf_minor(tf: str) -> str:
    v = Version(tf)
    return f"{v.major}.{v.minor}"


@dataclass(frozen=True)
class RuleViolation:
    """One broken rule; `field` is the matrix key that carries the offending value."""

    field: str
    message: str
    deviation: bool  # True: allowed with an explicit `allow: {reason}`; False: never allowed


def check_cell(
    cell_id: str, tf: str, python: str, flavor: str, cuda: str | None, cudnn: str | None
) -> list[RuleViolation]:
    """Apply the rules to one cell. Example: tf 2.10.1 with Python 3.11 gives a non-deviation violation."""
    minor = tf_minor(tf)
    rule = TF_RULES.get(minor)
    if rule is None:
        known = ", ".join(sorted(TF_RULES))
        return [RuleViolation("tf", f"no compatibility rules for tf {tf} (known: {known})", False)]
    out: list[RuleViolation] = []
    if Version(python) not in rule.python:
        out.append(
            RuleViolation(
                "python",
                f"tf {tf} supports Python {rule.python_range()}; cell {cell_id} asks for {python}",
                False,
            )
        )
    if flavor == "gpu":
        if cuda != rule.tested_cuda:
            if cuda in rule.compatible_cuda:
                out.append(
                    RuleViolation(
                        "cuda",
                        f"tf {tf} was tested with CUDA {rule.tested_cuda}; cell {cell_id} uses CUDA {cuda} "
                        "(compatible but untested)",
                        True,
                    )
                )
            else:
                out.append(
                    RuleViolation(
                        "cuda",
                        f"tf {tf} needs CUDA {rule.tested_cuda}"
                        + (
                            f" (or untested {', '.join(rule.compatible_cuda)})"
                            if rule.compatible_cuda
                            else ""
                        )
                        + f"; cell {cell_id} uses CUDA {cuda}",
                        False,
                    )
                )
        if cudnn != rule.tested_cudnn:
            if cudnn in rule.compatible_cudnn:
                out.append(
                    RuleViolation(
                        "cudnn",
                        f"tf {tf} was tested with cuDNN {rule.tested_cudnn}; cell {cell_id} uses cuDNN {cudnn} "
                        "(compatible but untested)",
                        True,
                    )
                )
            else:
                out.append(
                    RuleViolation(
                        "cudnn",
                        f"tf {tf} needs cuDNN {rule.tested_cudnn}; cell {cell_id} uses cuDNN {cudnn}",
                        False,
                    )
                )
    return out

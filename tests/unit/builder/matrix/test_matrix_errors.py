"""A corpus of malformed or incompatible matrices: each must fail with the exact FILE:LINE:COL and message."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from builder.errors import ErrorList, StrataError
from builder.matrix.load import load_matrix

REPO = Path(__file__).resolve().parents[4]
DEFAULT = (REPO / "matrix.yaml").read_text()


def _position(text: str, anchor: str, token: str) -> tuple[int, int]:
    """1-based line of the line containing `anchor`, and column of `token` on that line."""
    for no, line in enumerate(text.splitlines(), start=1):
        if anchor in line:
            return no, line.index(token) + 1
    raise AssertionError(f"anchor {anchor!r} not in mutated matrix")


@pytest.fixture
def matrix_dir(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "layers", tmp_path / "layers")
    return tmp_path


def _errors(path: Path, profile: str = "hermetic") -> list[str]:
    with pytest.raises(StrataError) as info:
        load_matrix(path, profile)
    exc = info.value
    return [str(e) for e in exc.errors] if isinstance(exc, ErrorList) else [str(exc)]


# (case id, old text, new text, anchor line substring, token for column, message regex)
CASES = [
    (
        "unknown-top-key-typo",
        "\nfrASMEworks:",
        "\nfrASMEworks:",
        None,
        None,
        None,
    ),  # placeholder replaced below
]
CASES = [
    (
        "typo-top-level",
        "\naliases:",
        "\naliasses:",
        "aliasses:",
        "aliasses",
        r"unknown key 'aliasses' at top level; did you mean 'aliases'\?",
    ),
    (
        "typo-nested",
        "    flavors: [cpu, gpu]\n    requirements: layers/framework/requirements-tf2.13.in",
        "    flavours: [cpu, gpu]\n    requirements: layers/framework/requirements-tf2.13.in",
        "flavours:",
        "flavours",
        r"unknown key 'flavours' in 'frameworks\[0\]'; did you mean 'flavors'\?",
    ),
    (
        "unquoted-version",
        'tf: "2.10.1"',
        "tf: 2.10",
        "tf: 2.10",
        "2.10",
        r"'frameworks\[1\]\.tf' must be string, got float 2\.1 \(write it quoted",
    ),
    (
        "epoch-string",
        "source_date_epoch: 1700000000",
        'source_date_epoch: "soon"',
        "source_date_epoch",
        '"soon"',
        r"'source_date_epoch' must be integer, got str 'soon'",
    ),
    (
        "epoch-negative",
        "source_date_epoch: 1700000000",
        "source_date_epoch: -5",
        "source_date_epoch",
        "-5",
        r"'source_date_epoch': must be a Unix time from 0 to 4294967295, got -5",
    ),
    (
        "missing-registry",
        "registry:\n  address: 127.0.0.1:5000       # the embedded registry (strata registry up); point at your private registry\n  namespace: strata\n",
        "",
        "schema: 1",
        "schema",
        r"missing required key 'registry' at top level",
    ),
    (
        "missing-namespace",
        "  namespace: strata\n",
        "",
        "registry:",
        "registry",
        r"missing required key 'namespace' in 'registry'",
    ),
    (
        "bad-namespace",
        "  namespace: strata\n",
        "  namespace: Strata!\n",
        "namespace: Strata!",
        "Strata!",
        r"'registry\.namespace': must be a repository path like 'strata' or 'team/vision' \(lower case\), got 'Strata!'",
    ),
    (
        "bad-flavor",
        "    flavors: [cpu, gpu]\n    requirements: layers/framework/requirements-tf2.13.in",
        "    flavors: [cpu, tpu]\n    requirements: layers/framework/requirements-tf2.13.in",
        "flavors: [cpu, tpu]",
        "tpu",
        r"'frameworks\[0\]\.flavors\[1\]': 'cpu' or 'gpu' expected, got 'tpu'",
    ),
    ("python-too-new", 'python: "3.9"', 'python: "3.11"', 'python: "3.11"\n', None, None),
    (
        "bad-version-format",
        'tf: "2.13.1"',
        'tf: "latest"',
        'tf: "latest"',
        '"latest"',
        r"'frameworks\[0\]\.tf': must look like 2\.13 or 2\.13\.1 \(ASCII digits\), got 'latest'",
    ),
    (
        "unknown-tf",
        'tf: "2.13.1"',
        'tf: "2.99.0"',
        'tf: "2.99.0"',
        '"2.99.0"',
        r"no compatibility rules for tf 2\.99\.0",
    ),
    (
        "unknown-os",
        '      hermetic: {os: bookworm, cuda: "11.8"}',
        '      hermetic: {os: bookwurm, cuda: "11.8"}',
        "hermetic: {os: bookwurm",
        "bookwurm",
        r"os 'bookwurm' is not defined in profiles\.hermetic\.os; did you mean 'bookworm'\?",
    ),
    (
        "unknown-cuda",
        '      hermetic: {os: bookworm, cuda: "11.8"}',
        '      hermetic: {os: bookworm, cuda: "12.2"}',
        'cuda: "12.2"',
        '"12.2"',
        r"cuda '12\.2' is not defined in profiles\.hermetic\.cuda",
    ),
    (
        "deviation-without-allow",
        "        allow:\n          reason: >-\n            TF 2.10 was tested with CUDA 11.2 / cuDNN 8.1, which exist only as NVIDIA images; CUDA 11.8 and\n            cuDNN 8.6 from PyPI wheels are minor-version compatible within CUDA 11 and ABI compatible within cuDNN 8.\n",
        "",
        'cuda: "11.8"\n      upstream: {os: ubuntu20.04',
        None,
        None,
    ),
    (
        "allow-without-deviation",
        '      hermetic: {os: bookworm, cuda: "11.8"}',
        '      hermetic: {os: bookworm, cuda: "11.8", allow: {reason: "no reason at all really"}}',
        "allow: {reason",
        "allow",
        r"cell tf2\.13\.1-gpu: 'allow' given but nothing deviates",
    ),
    (
        "allow-reason-short",
        "          reason: >-\n            TF 2.10 was tested",
        "          reason: short\n          x: >-\n            TF 2.10 was tested",
        "reason: short",
        "short",
        r"String should have at least 10 characters",
    ),
    (
        "duplicate-cell",
        "    flavors: [cpu, gpu]\n    requirements: layers/framework/requirements-tf2.13.in",
        "    flavors: [cpu, gpu, cpu]\n    requirements: layers/framework/requirements-tf2.13.in",
        "flavors: [cpu, gpu, cpu]",
        "cpu]",
        r"duplicate cell id 'tf2\.13\.1-cpu'",
    ),
    ("duplicate-key", "schema: 1\n", "schema: 1\nschema: 1\n", "schema: 1", "schema", None),
    (
        "missing-requirements-file",
        "requirements: layers/framework/requirements-tf2.13.in",
        "requirements: layers/framework/nope.in",
        "nope.in",
        "layers/framework/nope.in",
        r"requirements 'layers/framework/nope\.in': not found \(relative to the matrix file\)",
    ),
    (
        "alias-unknown-cell",
        '{tag: "2.13-gpu", cell: tf2.13.1-gpu}',
        '{tag: "2.13-gpu", cell: tf2.13.2-gpu}',
        "cell: tf2.13.2-gpu",
        "tf2.13.2-gpu",
        r"alias '2\.13-gpu' points at unknown cell 'tf2\.13\.2-gpu'; did you mean 'tf2\.13\.1-gpu'\?",
    ),
    (
        "alias-duplicate",
        "  - {tag: latest-cpu, cell: tf2.13.1-cpu}",
        "  - {tag: latest-cpu, cell: tf2.13.1-cpu}\n  - {tag: latest-cpu, cell: tf2.10.1-cpu}",
        "{tag: latest-cpu, cell: tf2.10.1-cpu}",
        "latest-cpu",
        r"alias 'latest-cpu' is declared twice",
    ),
    (
        "alias-bad-tag",
        "{tag: latest-gpu, cell: tf2.13.1-gpu}",
        '{tag: "latest gpu", cell: tf2.13.1-gpu}',
        '"latest gpu"',
        '"latest gpu"',
        r"'aliases\[4\]\.tag': must be a tag of letters, digits, '_', '\.', '-'.*, got 'latest gpu'",
    ),
    (
        "user-pattern-empty",
        'cells: ["*"]',
        'cells: ["tf9*"]',
        'cells: ["tf9*"]',
        '"tf9*"',
        r"user layer 'example': pattern 'tf9\*' selects no cell",
    ),
    (
        "user-bad-name",
        "  - name: example",
        "  - name: Example Team",
        "name: Example Team",
        "Example Team",
        r"'users\[0\]\.name': must be a repository name part like 'example'.*, got 'Example Team'",
    ),
    (
        "image-without-digest",
        "image: ubuntu:22.04@sha256:0bced47fffa3361afa981854fcabcd4577cd43cebbb808cea2b1f33a3dd7f508",
        "image: ubuntu:22.04",
        "image: ubuntu:22.04",
        "ubuntu:22.04",
        r"'profiles\.upstream\.os\.ubuntu22\.04\.image': must be an image pinned by digest, like name:tag@sha256:<64 hex>, got 'ubuntu:22\.04'",
    ),
    (
        "mmdebstrap-without-suite",
        "        suite: bullseye\n",
        "",
        "      bullseye:",
        "bullseye",
        r"source 'mmdebstrap' needs 'suite' and 'mirror'",
    ),
    (
        "wrong-source",
        "        source: wheels",
        "        source: conda",
        "source: conda",
        "conda",
        r"'wheels' or 'image' expected, got 'conda'",
    ),
    (
        "ports-not-ints",
        "ports: [8888, 6006]",
        "ports: [8888, jupyter]",
        "ports: [8888, jupyter]",
        "jupyter",
        r"'users\[0\]\.ports\[1\]' must be integer, got str 'jupyter'",
    ),
    (
        "tags-missing-layer",
        '    user: "{namespace}/{user}"\n',
        "",
        "  repositories:",
        "repositories",
        r"missing required key|tags\.repositories has no entry for layer 'user'",
    ),
    ("bad-yaml", "registry:\n", "registry: [\n", "registry: [", None, r"invalid YAML"),
    ("not-a-mapping", None, "- just\n- a list\n", "- just", "-", r"the matrix must be a YAML mapping"),
    (
        "layer-name-typo",
        '    tools: "{namespace}/tensorflow"',
        '    toolz: "{namespace}/tensorflow"',
        'toolz: "{namespace}',
        "toolz",
        r"unknown key 'toolz' in 'tags\.repositories' \(expected 'base', 'cuda', 'framework', 'tools' or 'user'\); did you mean 'tools'\?",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_matrix_is_rejected_with_location(matrix_dir: Path, case: tuple) -> None:
    name, old, new, anchor, token, pattern = case
    if old is None:
        text = new
    else:
        assert old in DEFAULT, f"case {name}: default matrix no longer contains {old!r}"
        text = DEFAULT.replace(old, new, 1)
    path = matrix_dir / "matrix.yaml"
    path.write_text(text)
    errors = _errors(path)
    assert errors, name
    if name == "python-too-new":
        # bullseye now claims 3.11: the error points at the framework profile entry that picks that os
        line, col = _position(text, "        os: bullseye", "bullseye")
        expected = [
            f"{path}:{line}:{col}: tf 2.10.1 supports Python 3.7–3.10; cell tf2.10.1-{flavor} asks for 3.11"
            for flavor in ("cpu", "gpu")
        ]
        assert errors == expected, errors
        return
    if name == "deviation-without-allow":
        assert any(
            re.search(
                r"tf 2\.10\.1 was tested with CUDA 11\.2; cell tf2\.10\.1-gpu uses CUDA 11\.8 \(compatible but untested\) "
                r"\(allowed only with 'allow: \{reason: \.\.\.\}'",
                e,
            )
            for e in errors
        ), errors
        line, col = _position(text, '        cuda: "11.8"', '"11.8"')
        assert any(e.startswith(f"{path}:{line}:{col}: ") for e in errors), errors
        return
    if name == "duplicate-key":
        line, col = _position(
            text.replace("schema: 1\nschema: 1", "schema: 1\nSECOND", 1), "SECOND", "SECOND"
        )
        assert errors == [f"{path}:{line}:{col}: duplicate key 'schema'"]
        return
    if name == "bad-yaml":
        assert len(errors) == 1 and errors[0].startswith(f"{path}:") and "invalid YAML" in errors[0]
        return
    line, col = _position(text, anchor, token)
    hits = [e for e in errors if re.search(pattern, e)]
    assert hits, f"{name}: no error matches {pattern!r}: {errors}"
    assert hits[0].startswith(f"{path}:{line}:{col}: "), f"{name}: {hits[0]} (expected {path}:{line}:{col})"


def test_no_traceback_for_missing_file(tmp_path: Path) -> None:
    errors = _errors(tmp_path / "absent.yaml")
    assert errors == [f"{tmp_path / 'absent.yaml'}: matrix file not found"]


def test_unknown_profile(matrix_dir: Path) -> None:
    path = matrix_dir / "matrix.yaml"
    path.write_text(DEFAULT)
    errors = _errors(path, profile="cloud")
    line, col = _position(DEFAULT, "\nprofiles:"[1:] if False else "profiles:", "profiles")
    line = [no for no, ln in enumerate(DEFAULT.splitlines(), start=1) if ln.startswith("profiles:")][0]
    assert errors == [f"{path}:{line}:1: unknown profile 'cloud' (matrix defines: hermetic, upstream)"]

"""The machine-readable contract (docs/cli-json.md): `--format json` prints one `{"schema": "strata.<command>/1"}`
document that validates against docs/schemas/strata.<command>.json. Commands that need no engine or registry are
run here through strata's own entry point; the others in tests/integration/cli/test_json_contract.py."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from builder.matrix.load import load_matrix
from builder.plan.graph import build_plan
from cli.main import main
from registry_sync.publish.images_lock import ImagesLock, LockedImage, write_images_lock

REPO = Path(__file__).resolve().parents[3]
MATRIX = str(REPO / "matrix.yaml")
SCHEMAS = REPO / "docs" / "schemas"
DOC = REPO / "docs" / "cli-json.md"
DIGEST = "sha256:" + "4" * 64
Contract = Callable[[str], dict[str, Any]]


@pytest.fixture
def images_lock(tmp_path: Path) -> tuple[Path, LockedImage]:
    node = build_plan(load_matrix(MATRIX)).node("base-bookworm")
    entry = LockedImage(node.tags[0], DIGEST, "sha256:" + "5" * 64, node.id, node.layer, None, node.cells,
                        node.content_hash, "hermetic", {"os": "bookworm"}, 1, 2)  # fmt: skip
    path = tmp_path / "images.lock.json"
    write_images_lock(path, ImagesLock({entry.reference: entry}))
    return path, entry


def test_every_schema_is_a_valid_json_schema_named_after_its_command_and_documented() -> None:
    schemas = sorted(SCHEMAS.glob("strata.*.json"))
    assert len(schemas) >= 19
    doc = DOC.read_text()
    for path in schemas:
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        command = path.name.removeprefix("strata.").removesuffix(".json")
        assert schema["properties"]["schema"] == {"const": f"strata.{command}/1"}, path.name
        assert f"schemas/{path.name}" in doc, f"docs/cli-json.md does not describe {path.name}"
    named = set(re.findall(r"schemas/(strata\.[a-z-]+\.json)", doc))
    assert named == {p.name for p in schemas}, "docs/cli-json.md names a schema that does not exist"


def test_plan(json_contract: Contract, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-f", MATRIX, "--only", "tf2.13.1-cpu", "--format", "json"]) == 0
    doc = json_contract(capsys.readouterr().out)
    assert doc["profile"] == "hermetic" and doc["nodes"][0]["id"] == "base-bookworm"


def test_lock_check(json_contract: Contract, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["lock", "--check", "-f", MATRIX, "--format", "json"])
    out = capsys.readouterr()
    doc = json_contract(out.out)
    assert doc["check"] is True and code == (0 if doc["ok"] else 1)
    assert {lock["state"] for lock in doc["locks"]} <= {"ok", "stale", "missing", "tampered"}
    assert "locks are current" not in out.out  # the text report is not mixed into the document


def test_pin_and_catalog(
    images_lock: tuple[Path, LockedImage],
    tmp_path: Path,
    json_contract: Contract,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, entry = images_lock
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {entry.reference}\nFROM example.org/other:1\n")
    assert main(["pin", str(dockerfile), "--lock", str(path), "--check", "--format", "json"]) == 1
    doc = json_contract(capsys.readouterr().out)
    assert doc["check"] is True and doc["files"][0]["changed"] is True
    assert [r["outcome"] for r in doc["files"][0]["references"]] == ["pinned", "unknown"]
    assert doc["files"][0]["references"][0]["pinned"] == f"{entry.reference}@{DIGEST}"
    out = tmp_path / "catalog.md"
    argv = ["catalog", "-f", MATRIX, "--lock", str(path), "--out", str(out), "--format", "json"]
    assert main(argv) == 0
    doc = json_contract(capsys.readouterr().out)
    assert doc["written"] is True and doc["tags"] == [entry.reference] and out.is_file()


def test_sbom(
    images_lock: tuple[Path, LockedImage],
    tmp_path: Path,
    json_contract: Contract,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, entry = images_lock
    argv = ["sbom", entry.reference, "--lock", str(path), "-f", MATRIX, "--format", "json"]
    assert main(argv) == 0
    doc = json_contract(capsys.readouterr().out)
    (image,) = doc["images"]
    assert image["path"] is None and image["sbom"]["bomFormat"] == "CycloneDX" and image["components"] > 0
    argv = ["sbom", "--only", "base-*", "--lock", str(path), "-f", MATRIX, "--out", str(tmp_path / "e")]
    assert main([*argv, "--validate", "--format", "json"]) == 0
    (image,) = json_contract(capsys.readouterr().out)["images"]
    assert image["valid"] is True and Path(image["path"]).is_file() and "sbom" not in image


def test_audit_offline(
    images_lock: tuple[Path, LockedImage],
    tmp_path: Path,
    json_contract: Contract,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, entry = images_lock
    advisories = tmp_path / "osv.json"
    advisories.write_text("[]")
    argv = ["audit", "--lock", str(path), "-f", MATRIX, "--advisories", str(advisories), "--no-debian"]
    code = main([*argv, "--out", str(tmp_path / "e"), "--format", "json", "--fail-on", "never"])
    assert code == 0
    doc = json_contract(capsys.readouterr().out)
    assert [i["reference"] for i in doc["images"]] == [entry.reference]
    assert (
        doc["complete"] is False
    )  # the Debian base was not checked (--no-debian): never "no vulnerabilities"


def test_registry_status_of_a_registry_that_is_not_running(
    tmp_path: Path, json_contract: Contract, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["registry", "status", "--data-dir", str(tmp_path), "--format", "json"]) == 1
    doc = json_contract(capsys.readouterr().out)
    assert doc["running"] is False and doc["url"] is None and doc["data_dir"] == str(tmp_path)


def test_retired_json_flag_means_format_json_and_says_so(
    tmp_path: Path, json_contract: Contract, capsys: pytest.CaptureFixture[str]
) -> None:
    # diff of two identical (missing) images is not needed: the flag is parsed before anything runs.
    from cli.main import build_parser

    args = build_parser("diff").parse_args(["diff", "a", "b", "--json"])
    assert args.format == "json"
    assert "--json is retired; use --format json" in capsys.readouterr().err
    help_text = build_parser("diff").format_help() + build_parser("canonicalize").format_help()
    assert "--json" not in help_text


def test_diff_takes_format_json(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import build_parser

    args = build_parser("diff").parse_args(["diff", "--format", "json", "a", "b"])
    assert args.format == "json"


def test_lock_with_every_lock_current_writes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    json_contract: Contract,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A copy of the checkout (its own run lock); every lock of the cell is current, so nothing resolves.
    root = tmp_path / "repo"
    for name in ("layers", "locks"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "matrix.yaml", root / "matrix.yaml")
    monkeypatch.setenv("STRATA_HOME", str(tmp_path / "home"))
    argv = ["lock", "-f", str(root / "matrix.yaml"), "--only", "tf2.13.1-cpu", "--format", "json"]
    assert main([*argv, "--progress", "plain"]) == 0
    out = capsys.readouterr()
    doc = json_contract(out.out)
    assert doc["check"] is False and doc["release"] is None
    assert [(lock["node"], lock["state"]) for lock in doc["locks"]] == [
        ("base-bookworm", "unchanged"),
        ("tf2.13.1-cpu-py3.11", "unchanged"),
        ("tools-tf2.13.1-cpu", "unchanged"),
        ("user-example-tf2.13.1-cpu", "unchanged"),
    ]
    assert "0 lock(s) written, 4 unchanged" in out.err

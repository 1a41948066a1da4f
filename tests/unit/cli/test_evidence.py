"""`strata keygen | sbom | verify-signature` and `pin --require-signature` through strata's own entry point, on
files only (signing into the registry is tested against a real registry in tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.matrix.load import load_matrix
from builder.plan.graph import build_plan
from cli.main import main
from registry_sync.publish.attest import load_signer, sign_lock_file
from registry_sync.publish.images_lock import ImagesLock, LockedImage, write_images_lock

REPO = Path(__file__).resolve().parents[3]
MATRIX = str(REPO / "matrix.yaml")
DIGEST = "sha256:" + "4" * 64


@pytest.fixture
def lock(tmp_path):
    node = build_plan(load_matrix(MATRIX)).node("base-bookworm")
    entry = LockedImage(node.tags[0], DIGEST, "sha256:" + "5" * 64, node.id, node.layer, None, node.cells,
                        node.content_hash, "hermetic", {"os": "bookworm"}, 1, 2)  # fmt: skip
    path = tmp_path / "images.lock.json"
    write_images_lock(path, ImagesLock({entry.reference: entry}))
    return path, entry


@pytest.fixture
def keys(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STRATA_SIGNING_PASSPHRASE", "s3cret")
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    out = capsys.readouterr().out
    assert "private key (encrypted)" in out and "key id" in out
    return tmp_path / "keys" / "strata-signing.key", tmp_path / "keys" / "strata-signing.pub"


def test_keygen_without_a_passphrase_source_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("STRATA_SIGNING_PASSPHRASE", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["keygen", "--out", str(tmp_path)]) == 2
    assert "set STRATA_SIGNING_PASSPHRASE" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_sbom_of_a_lock_entry_to_stdout_and_to_a_directory(lock, tmp_path, capsys):
    path, entry = lock
    assert main(["sbom", entry.reference, "--lock", str(path), "-f", MATRIX]) == 0
    bom = json.loads(capsys.readouterr().out)
    assert bom["metadata"]["component"]["hashes"][0]["content"] == "4" * 64
    out = tmp_path / "evidence"
    assert (
        main(
            [
                "sbom",
                "--only",
                "base-*",
                "--lock",
                str(path),
                "-f",
                MATRIX,
                "--out",
                str(out),
                "--validate",
            ]
        )
        == 0
    )
    assert "valid CycloneDX 1.6" in capsys.readouterr().out
    written = out / "strata/base" / entry.reference.rsplit(":", 1)[1] / "sbom.cdx.json"
    assert json.loads(written.read_text()) == bom


def test_sbom_of_an_unknown_image_is_a_one_line_error(lock, capsys):
    path, _ = lock
    assert main(["sbom", "127.0.0.1:5000/strata/base:nope", "--lock", str(path), "-f", MATRIX]) == 2
    assert capsys.readouterr().err.strip() == (
        "strata: 127.0.0.1:5000/strata/base:nope: not a reference of images.lock.json (see `strata catalog`)"
    )


def test_verify_signature_and_pin_require_signature(lock, keys, tmp_path, capsys):
    path, entry = lock
    private, public = keys
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {entry.reference}@{DIGEST}\n")
    pin = ["pin", str(dockerfile), "--lock", str(path), "--check", "--require-signature", str(public)]
    assert main(["verify-signature", str(path), "--key", str(public)]) == 1
    assert "not signed (no images.lock.json.sig; run `strata sign`)" in capsys.readouterr().err
    assert main(pin) == 1
    sign_lock_file(path, load_signer(private, b"s3cret"))
    assert main(["verify-signature", str(path), "--key", str(public)]) == 0
    assert "signature valid" in capsys.readouterr().out
    assert main(pin) == 0
    assert "already pinned" in capsys.readouterr().out
    path.write_text(path.read_text().replace('"hermetic"', '"upstream"'))
    assert main(["verify-signature", str(path), "--key", str(public)]) == 1
    assert "changed after signing" in capsys.readouterr().err
    assert main(pin) == 1
    assert dockerfile.read_text() == f"FROM {entry.reference}@{DIGEST}\n"


def test_verify_signature_of_the_lock_as_json(lock, keys, capsys, json_contract):
    path, _ = lock
    private, public = keys
    sign_lock_file(path, load_signer(private, b"s3cret"))
    assert main(["verify-signature", str(path), "--key", str(public), "--format", "json"]) == 0
    doc = json_contract(capsys.readouterr().out)
    assert doc["kind"] == "lock" and doc["valid"] is True and doc["images"] == 1
    assert doc["signature"] == f"{path}.sig"

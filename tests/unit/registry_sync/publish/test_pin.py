"""strata pin: line-based rewriting of Dockerfiles, compose files and Kubernetes YAML to tag@digest."""

from __future__ import annotations

import pytest

from cli.main import main
from registry_sync.publish.images_lock import ImagesLock, write_images_lock
from registry_sync.publish.pin import ALREADY, PINNED, REPINNED, UNKNOWN, pin_files, pin_text

TF = "127.0.0.1:5000/strata/tensorflow:2.13.1-cpu-py3.11-bookworm"
BASE = "127.0.0.1:5000/strata/base:bookworm-1700000000"
OLD = "sha256:" + "0" * 64


@pytest.fixture
def lock(kit) -> ImagesLock:
    entries = [kit.locked(TF, node="tools"), kit.locked(BASE, node="base", layer="base")]
    return ImagesLock({e.reference: e for e in entries})


def digest(lock: ImagesLock, ref: str) -> str:
    return lock.images[ref].digest


def test_dockerfile_from_lines(lock):
    text = (
        "# syntax=docker/dockerfile:1\n"
        f"FROM --platform=linux/amd64 {TF} AS build\n"
        "RUN echo hi  # FROM comment stays\n"
        f"from {BASE}\n"
        "FROM build AS final\n"
        "COPY --from=build /a /b\n"
        f"COPY --from={BASE} /etc/os-release /os-release\n"
        "FROM ${BASE_IMAGE}\n"
        "FROM ubuntu:22.04\n"
        "FROM scratch\n"
    )
    new, outcomes = pin_text(text, lock, dockerfile=True, file="Dockerfile")
    assert new.splitlines() == [
        "# syntax=docker/dockerfile:1",
        f"FROM --platform=linux/amd64 {TF}@{digest(lock, TF)} AS build",
        "RUN echo hi  # FROM comment stays",
        f"from {BASE}@{digest(lock, BASE)}",
        "FROM build AS final",
        "COPY --from=build /a /b",
        f"COPY --from={BASE}@{digest(lock, BASE)} /etc/os-release /os-release",
        "FROM ${BASE_IMAGE}",
        "FROM ubuntu:22.04",
        "FROM scratch",
    ]
    assert [(o.line, o.outcome) for o in outcomes] == [
        (2, PINNED),
        (4, PINNED),
        (7, PINNED),
        (8, UNKNOWN),
        (9, UNKNOWN),
    ]
    assert outcomes[3].note == "not a literal image reference"
    assert outcomes[4].note == "not in the lock"


def test_compose_and_kubernetes_keep_quotes_comments_and_indentation(lock):
    text = (
        "services:\n"
        "  app:\n"
        f'    image: "{TF}"   # the notebook\r\n'
        "  db:\n"
        "    image: postgres:16\n"
        "---\n"
        "spec:\n"
        "  template:\n"
        "    spec:\n"
        "      containers:\n"
        f"        - image: {BASE}\n"
        "          name: base\n"
        "        - name: sidecar\n"
        f"          image: '{TF}@{OLD}'\n"
        "      initContainers:\n"
        f"      - {{name: init, image: {TF}}}\n"
        '    image: "{{ .Values.image }}"\n'
        "description: this image: is not a key\n"
    )
    new, outcomes = pin_text(text, lock, dockerfile=False)
    lines = new.splitlines(keepends=True)
    assert lines[2] == f'    image: "{TF}@{digest(lock, TF)}"   # the notebook\r\n'
    assert lines[4] == "    image: postgres:16\n"
    assert lines[10] == f"        - image: {BASE}@{digest(lock, BASE)}\n"
    assert lines[13] == f"          image: '{TF}@{digest(lock, TF)}'\n"
    assert lines[15] == text.splitlines(keepends=True)[15]  # flow mappings are not rewritten (line-based)
    assert [(o.line, o.outcome) for o in outcomes] == [
        (3, PINNED),
        (5, UNKNOWN),
        (11, PINNED),
        (14, REPINNED),
        (17, UNKNOWN),
    ]
    assert outcomes[3].note == f"was {OLD}"


def test_second_run_changes_nothing(lock):
    text = f"FROM {TF}\n"
    once, _ = pin_text(text, lock, dockerfile=True)
    twice, outcomes = pin_text(once, lock, dockerfile=True)
    assert twice == once
    assert [o.outcome for o in outcomes] == [ALREADY]


def test_pin_files_writes_only_without_check_and_keeps_mode(lock, tmp_path):
    dockerfile = tmp_path / "Dockerfile.gpu"
    dockerfile.write_text(f"FROM {TF}\n")
    dockerfile.chmod(0o640)
    compose = tmp_path / "compose.yml"
    compose.write_text("services: {}\n")
    results = pin_files([dockerfile, compose], lock, check=True)
    assert [r.changed for r in results] == [True, False]
    assert dockerfile.read_text() == f"FROM {TF}\n"
    pin_files([dockerfile, compose], lock, check=False)
    assert dockerfile.read_text() == f"FROM {TF}@{digest(lock, TF)}\n"
    assert dockerfile.stat().st_mode & 0o777 == 0o640


def test_cli_check_exit_codes_and_one_line_per_reference(lock, tmp_path, capsys):
    lock_path = tmp_path / "images.lock.json"
    write_images_lock(lock_path, lock)
    k8s = tmp_path / "deploy.yaml"
    k8s.write_text(f"containers:\n  - image: {TF}\n  - image: nginx:1.25\n")
    assert main(["pin", str(k8s), "--lock", str(lock_path), "--check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{k8s}:2: would be pinned {TF}@{digest(lock, TF)}"
    assert out[1] == f"{k8s}:3: unknown nginx:1.25 (not in the lock)"
    assert out[2] == "1 to pin, 1 unknown; 1 of 1 files would change"
    assert main(["pin", str(k8s), "--lock", str(lock_path)]) == 0
    assert main(["pin", str(k8s), "--lock", str(lock_path), "--check"]) == 0
    assert f"{k8s}:2: already pinned {TF}@" in capsys.readouterr().out


def test_cli_missing_lock_is_one_line(tmp_path, capsys):
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    assert main(["pin", str(tmp_path / "Dockerfile"), "--lock", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run `strata push` first" in err

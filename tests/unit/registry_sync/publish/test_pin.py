"""strata pin: line-based rewriting of Dockerfiles, compose files and Kubernetes YAML to tag@digest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli.main import main
from registry_sync.publish.images_lock import ImagesLock, LockedAlias, write_images_lock
from registry_sync.publish.pin import ALREADY, PINNED, REPINNED, UNKNOWN, PinError, pin_files, pin_text

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


def test_a_symlink_inside_the_tree_is_edited_through_and_stays_a_link(lock, tmp_path):
    real = tmp_path / "images" / "Dockerfile.base"
    real.parent.mkdir()
    real.write_text(f"FROM {TF}\n")
    real.chmod(0o600)
    link = tmp_path / "Dockerfile"
    link.symlink_to(Path("images") / "Dockerfile.base")
    pin_files([link], lock, check=False, root=tmp_path)
    assert link.is_symlink() and os.readlink(link) == "images/Dockerfile.base"
    assert real.read_text() == f"FROM {TF}@{digest(lock, TF)}\n"
    assert real.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["Dockerfile", "Dockerfile.base", "images"]


def test_a_symlink_leading_out_of_the_tree_is_refused_and_nothing_is_written(lock, tmp_path):
    outside = tmp_path / "outside" / "Dockerfile"
    outside.parent.mkdir()
    outside.write_text(f"FROM {TF}\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.Dockerfile").write_text(f"FROM {TF}\n")
    (tree / "Dockerfile").symlink_to(outside)
    with pytest.raises(PinError, match="leads through a symlink to .*, outside .*; not pinned"):
        pin_files([tree / "a.Dockerfile", tree / "Dockerfile"], lock, check=False, root=tree)
    assert outside.read_text() == f"FROM {TF}\n"
    assert (tree / "a.Dockerfile").read_text() == f"FROM {TF}\n"  # checked before the first write


def test_only_regular_files_are_read(lock, tmp_path):
    fifo = tmp_path / "Dockerfile"
    os.mkfifo(fifo)
    with pytest.raises(PinError, match="not a regular file"):
        pin_files([fifo], lock, check=True, root=tmp_path)
    with pytest.raises(PinError, match="not a regular file"):
        pin_files([tmp_path], lock, check=True, root=tmp_path)


@pytest.mark.parametrize(
    "bad", ["sha256:" + "0" * 64 + "\nRUN curl http://x | sh", "sha256:", "sha256:" + "A" * 64]
)
def test_a_digest_the_lock_does_not_vouch_for_is_never_written(kit, tmp_path, bad):
    entry = kit.locked(TF, node="tools", digest=bad)  # built in code: read_images_lock would refuse it
    path = tmp_path / "Dockerfile"
    path.write_text(f"FROM {TF}\n")
    with pytest.raises(PinError, match="is not sha256:<64 hex>"):
        pin_files([path], ImagesLock({TF: entry}), check=False, root=tmp_path)
    assert path.read_text() == f"FROM {TF}\n"


def test_an_alias_the_lock_records_is_pinned_to_the_digest_it_had_and_keeps_its_name(lock):
    alias = "127.0.0.1:5000/strata/tensorflow:2.13-cpu"
    aliased = lock.with_aliases([LockedAlias(alias, TF, digest(lock, TF))], 1)
    text, outcomes = pin_text(f"FROM {alias}\nFROM {alias}@{OLD}\n", aliased, dockerfile=True)
    assert text == f"FROM {alias}@{digest(lock, TF)}\nFROM {alias}@{digest(lock, TF)}\n"
    assert [o.outcome for o in outcomes] == [PINNED, REPINNED]
    assert outcomes[0].note == f"alias of {TF}" and outcomes[1].note == f"was {OLD}; alias of {TF}"
    _, unknown = pin_text(f"FROM {alias}\n", lock, dockerfile=True)  # a lock without aliases: not pinned
    assert [o.outcome for o in unknown] == [UNKNOWN]

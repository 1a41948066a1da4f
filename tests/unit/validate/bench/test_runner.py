"""The runner's pure parts: the seeded, interleaved schedule."""

from __future__ import annotations

from collections import Counter

from validate.bench.runner import interleaved_schedule


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

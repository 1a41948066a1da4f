"""Equivalence statistics against synthetic repetitions whose true ratio we know."""

from __future__ import annotations

import numpy as np
import pytest

from validate.bench.stats import (
    Verdict,
    coefficient_of_variation,
    compare,
    median_interval,
    repetitions_needed,
    robust_cv,
)


def samples(rng: np.random.Generator, median: float, cv: float, n: int) -> list[float]:
    """Repetition throughputs: log-normal around `median` with roughly the given CV."""
    return list(median * np.exp(rng.normal(0.0, cv, size=n)))


def test_equal_images_are_equivalent() -> None:
    rng = np.random.default_rng(1)
    ref, cand = samples(rng, 100.0, 0.005, 10), samples(rng, 100.0, 0.005, 10)
    result = compare(ref, cand, seed=7)
    assert result.verdict is Verdict.EQUIVALENT, result.summary()
    assert 0.97 <= result.ci_low <= result.ratio <= result.ci_high <= 1.03


def test_five_percent_slower_is_a_regression() -> None:
    rng = np.random.default_rng(2)
    ref, cand = samples(rng, 100.0, 0.005, 10), samples(rng, 95.0, 0.005, 10)
    result = compare(ref, cand, seed=7)
    assert result.verdict is Verdict.REGRESSION, result.summary()
    assert result.verdict.fails
    assert result.ci_high < 0.97
    assert result.ratio == pytest.approx(0.95, abs=0.01)


def test_five_percent_faster_is_an_improvement() -> None:
    rng = np.random.default_rng(3)
    ref, cand = samples(rng, 100.0, 0.005, 10), samples(rng, 105.0, 0.005, 10)
    result = compare(ref, cand, seed=7)
    assert result.verdict is Verdict.IMPROVEMENT, result.summary()
    assert not result.verdict.fails


def test_half_percent_slower_within_three_percent_margin_is_equivalent() -> None:
    rng = np.random.default_rng(4)
    ref, cand = samples(rng, 100.0, 0.005, 10), samples(rng, 99.5, 0.005, 10)
    result = compare(ref, cand, margin=0.03, seed=7)
    assert result.verdict is Verdict.EQUIVALENT, result.summary()
    assert result.ratio == pytest.approx(0.995, abs=0.005)


def test_half_percent_slower_is_not_equivalent_under_a_tighter_margin_than_the_noise_allows() -> None:
    rng = np.random.default_rng(4)
    ref, cand = samples(rng, 100.0, 0.005, 10), samples(rng, 99.5, 0.005, 10)
    result = compare(ref, cand, margin=0.003, seed=7)
    assert result.verdict is not Verdict.EQUIVALENT, result.summary()


def test_very_noisy_repetitions_are_invalid_not_averaged() -> None:
    rng = np.random.default_rng(5)
    ref, cand = samples(rng, 100.0, 0.005, 10), samples(rng, 100.0, 0.20, 10)
    result = compare(ref, cand, seed=7)
    assert result.verdict is Verdict.INVALID, result.summary()
    assert result.verdict.fails
    assert "candidate robust CV" in result.reason and "reference" not in result.reason


def test_gpu_bound_is_one_percent() -> None:
    rng = np.random.default_rng(6)
    ref, cand = samples(rng, 100.0, 0.02, 10), samples(rng, 100.0, 0.02, 10)
    assert compare(ref, cand, device="cpu", seed=7).verdict is not Verdict.INVALID
    assert compare(ref, cand, device="gpu", seed=7).verdict is Verdict.INVALID


def test_too_few_noisy_repetitions_are_inconclusive_with_a_stated_estimate() -> None:
    rng = np.random.default_rng(8)
    ref, cand = samples(rng, 100.0, 0.03, 4), samples(rng, 98.5, 0.03, 4)
    result = compare(ref, cand, seed=7)
    assert result.verdict is Verdict.INCONCLUSIVE, result.summary()
    assert result.repetitions_needed is not None and result.repetitions_needed > 4
    assert f"about {result.repetitions_needed} repetitions" in result.reason


def test_same_seed_same_interval() -> None:
    rng = np.random.default_rng(9)
    ref, cand = samples(rng, 100.0, 0.01, 6), samples(rng, 99.0, 0.01, 6)
    assert compare(ref, cand, seed=3) == compare(ref, cand, seed=3)


def test_equivalence_is_rarely_claimed_when_the_truth_sits_on_the_margin() -> None:
    """TOST property: at a true ratio of exactly 1 - margin, 'equivalent' should come up at most ~5%."""
    rng = np.random.default_rng(10)
    trials = 200
    claimed = sum(
        compare(samples(rng, 100.0, 0.01, 10), samples(rng, 97.0, 0.01, 10), seed=i).verdict
        is Verdict.EQUIVALENT
        for i in range(trials)
    )
    assert claimed / trials <= 0.10


def test_interval_covers_the_true_ratio_about_as_often_as_promised() -> None:
    rng = np.random.default_rng(11)
    trials = 200
    covered = 0
    for i in range(trials):
        result = compare(samples(rng, 100.0, 0.01, 10), samples(rng, 98.0, 0.01, 10), seed=i)
        covered += result.ci_low <= 0.98 <= result.ci_high
    assert 0.80 <= covered / trials <= 0.99


def test_rejects_too_few_repetitions_and_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        compare([1.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        compare([1.0, 0.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="margin"):
        compare([1.0] * 3, [1.0] * 3, margin=0.0)


def test_repetitions_needed_shrinks_the_interval_past_the_nearest_bound() -> None:
    # Estimate 0.985, half-width 0.02 on log scale, nearest bound 0.97 at log-distance ~0.0156.
    needed = repetitions_needed(0.985, 0.985 * np.exp(-0.02), 0.985 * np.exp(0.02), 0.03, 5)
    assert needed == int(np.ceil(5 * (0.02 / (np.log(0.985) - np.log(0.97))) ** 2))
    assert repetitions_needed(0.97, 0.95, 0.99, 0.03, 5) is None


def test_cv_and_median_interval() -> None:
    assert coefficient_of_variation([1.0]) == 0.0
    assert coefficient_of_variation([9.0, 11.0]) == pytest.approx(np.std([9, 11], ddof=1) / 10)
    median, low, high = median_interval([10.0, 11.0, 12.0, 13.0, 14.0])
    assert median == 12.0 and 10.0 <= low <= median <= high <= 14.0


def test_one_disturbed_repetition_does_not_void_the_run_but_a_bimodal_one_does() -> None:
    rng = np.random.default_rng(12)
    ref = samples(rng, 100.0, 0.005, 8)
    burst = [*samples(rng, 100.0, 0.005, 7), 55.0]  # one container ran during a burst of host load
    assert compare(ref, burst, seed=1).verdict is Verdict.EQUIVALENT
    bimodal = samples(rng, 100.0, 0.005, 4) + samples(rng, 55.0, 0.005, 4)
    assert compare(ref, bimodal, seed=1).verdict is Verdict.INVALID


def test_robust_cv_matches_the_classic_cv_on_normal_data() -> None:
    rng = np.random.default_rng(13)
    values = list(rng.normal(100.0, 2.0, size=4000))
    assert robust_cv(values) == pytest.approx(coefficient_of_variation(values), rel=0.05)
    assert (
        robust_cv([100.0, 101.0, 99.0, 100.0, 180.0])
        < 0.02
        < coefficient_of_variation([100, 101, 99, 100, 180])
    )

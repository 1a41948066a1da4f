"""Equivalence statistics: can we say a candidate image is as fast as a reference? Pure, no Docker.

A sample is one throughput value per repetition (one fresh container each). The effect is the ratio of
medians, candidate / reference, with a percentile bootstrap confidence interval over repetitions.

A 90% interval lying inside [1 - margin, 1 + margin] is the two one-sided tests procedure (TOST) at
alpha = 0.05 on log throughput: each one-sided test rejects "worse than the margin" at 5%.

Verdicts, in the order they are decided:
    invalid       a sample's repetition CV exceeds the device's bound; noisy runs are reported, never averaged.
                  The CV is estimated robustly (1.4826 x MAD / median), matching the median-based effect, so
                  one repetition hit by a burst of host load does not void a run; the classic CV is reported too.
    equivalent    the interval lies inside [1 - margin, 1 + margin]
    regression    the interval lies entirely below 1 - margin
    improvement   the interval lies entirely above 1 + margin
    inconclusive  anything else, with an estimate of how many repetitions per image would decide it
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Repetition CV above which a sample is too noisy to compare. GPUs are steady once warm; on CPU the
# engine shares cores with everything else on the host, so 5% is the bound we document and enforce.
CV_BOUND = {"gpu": 0.01, "cpu": 0.05}
MIN_REPETITIONS = 3
BOOTSTRAP_RESAMPLES = 10_000
# Above this an estimate of needed repetitions is not useful; we say "more than".
MAX_USEFUL_REPETITIONS = 1000


class Verdict(str, enum.Enum):
    """Outcome of one reference/candidate comparison."""

    EQUIVALENT = "equivalent"
    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    INCONCLUSIVE = "inconclusive"
    INVALID = "invalid"

    @property
    def fails(self) -> bool:
        """Whether a gate should stop on this verdict."""
        return self in (Verdict.REGRESSION, Verdict.INVALID)


@dataclass(frozen=True)
class Comparison:
    """Ratio of median throughputs (candidate / reference) with its CI and verdict."""

    ratio: float
    ci_low: float
    ci_high: float
    verdict: Verdict
    margin: float
    confidence: float
    reference_n: int
    candidate_n: int
    reference_cv: float  # robust CV (what the bound applies to)
    candidate_cv: float
    cv_bound: float
    # Repetitions per image the interval would likely need to reach a verdict (inconclusive only).
    repetitions_needed: int | None
    reason: str

    def summary(self) -> str:
        """One line: verdict, ratio, interval and why."""
        return (
            f"{self.verdict.value}: ratio {self.ratio:.4f} "
            f"[{self.ci_low:.4f}, {self.ci_high:.4f}] at {self.confidence:.0%}, margin ±{self.margin:.1%}; "
            f"{self.reason}"
        )


def robust_cv(samples: Sequence[float]) -> float:
    """1.4826 x median absolute deviation over median: the CV of normal data, but not moved by one outlier.

    >>> round(robust_cv([100, 101, 99, 100, 180]), 4)
    0.0148
    """
    values = np.asarray(samples, dtype=float)
    if values.size < 2:
        return 0.0
    center = float(np.median(values))
    return float(1.4826 * np.median(np.abs(values - center)) / center)


def coefficient_of_variation(samples: Sequence[float]) -> float:
    """Sample standard deviation over mean (0.0 for fewer than two samples)."""
    values = np.asarray(samples, dtype=float)
    if values.size < 2:
        return 0.0
    return float(values.std(ddof=1) / values.mean())


def bootstrap_ratio_of_medians(
    reference: Sequence[float],
    candidate: Sequence[float],
    confidence: float,
    seed: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap interval of median(candidate) / median(reference).

    Each bootstrap draw resamples both groups independently, with replacement.
    """
    ref = np.asarray(reference, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    rng = np.random.default_rng(seed)
    ref_medians = np.median(rng.choice(ref, size=(resamples, ref.size), replace=True), axis=1)
    cand_medians = np.median(rng.choice(cand, size=(resamples, cand.size), replace=True), axis=1)
    log_ratios = np.log(cand_medians) - np.log(ref_medians)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(log_ratios, [tail, 1.0 - tail])
    ratio = float(np.median(cand) / np.median(ref))
    return ratio, float(math.exp(low)), float(math.exp(high))


def repetitions_needed(ratio: float, ci_low: float, ci_high: float, margin: float, n: int) -> int | None:
    """Repetitions per image for the interval to clear the nearest margin bound, if the estimate holds.

    The interval's half-width on the log scale shrinks as 1/sqrt(n); it must become smaller than the
    distance from the estimate to the nearest bound of [1 - margin, 1 + margin]. None when the estimate
    sits on a bound (no number of repetitions decides it).
    """
    half_width = (math.log(ci_high) - math.log(ci_low)) / 2.0
    log_ratio = math.log(ratio)
    distance = min(abs(log_ratio - math.log(1.0 - margin)), abs(math.log(1.0 + margin) - log_ratio))
    if distance < 1e-9:
        return None
    needed = math.ceil(n * (half_width / distance) ** 2)
    return max(needed, n + 1)


def compare(
    reference_samples: Sequence[float],
    candidate_samples: Sequence[float],
    margin: float = 0.03,
    confidence: float = 0.90,
    seed: int = 0,
    device: str = "cpu",
    cv_bound: float | None = None,
) -> Comparison:
    """Compare per-repetition throughputs of a candidate image against a reference image.

    >>> compare([100, 101, 99, 100, 100], [100, 100, 101, 99, 100]).verdict.value
    'equivalent'
    """
    if not 0.0 < margin < 1.0:
        raise ValueError(f"margin must be in (0, 1), got {margin}")
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    for name, samples in (("reference", reference_samples), ("candidate", candidate_samples)):
        if len(samples) < MIN_REPETITIONS:
            raise ValueError(f"{name} has {len(samples)} repetitions; at least {MIN_REPETITIONS} are needed")
        if min(samples) <= 0 or not all(math.isfinite(s) for s in samples):
            raise ValueError(f"{name} throughputs must be positive and finite")
    bound = CV_BOUND[device] if cv_bound is None else cv_bound
    ref_cv = robust_cv(reference_samples)
    cand_cv = robust_cv(candidate_samples)
    ratio, low, high = bootstrap_ratio_of_medians(reference_samples, candidate_samples, confidence, seed)
    needed: int | None = None
    lower_bound, upper_bound = 1.0 - margin, 1.0 + margin
    noisy = [
        f"{name} robust CV {cv:.2%}"
        for name, cv in (("reference", ref_cv), ("candidate", cand_cv))
        if cv > bound
    ]
    if noisy:
        verdict = Verdict.INVALID
        reason = f"{' and '.join(noisy)} above the {device} bound {bound:.1%}; rerun on a quieter host"
    elif lower_bound <= low and high <= upper_bound:
        verdict = Verdict.EQUIVALENT
        reason = "interval inside the margin (TOST, alpha 0.05 per side at 90%)"
    elif high < lower_bound:
        verdict = Verdict.REGRESSION
        reason = f"candidate slower than the margin allows (at most {high:.4f} of the reference)"
    elif low > upper_bound:
        verdict = Verdict.IMPROVEMENT
        reason = f"candidate faster than the margin (at least {low:.4f} of the reference)"
    else:
        verdict = Verdict.INCONCLUSIVE
        n = min(len(reference_samples), len(candidate_samples))
        needed = repetitions_needed(ratio, low, high, margin, n)
        if needed is None or needed > MAX_USEFUL_REPETITIONS:
            reason = (
                f"interval straddles a margin bound and the estimate sits near it; more than "
                f"{MAX_USEFUL_REPETITIONS} repetitions per image would be needed"
            )
        else:
            reason = (
                f"interval straddles a margin bound; about {needed} repetitions per image would decide it"
            )
    return Comparison(
        ratio=ratio,
        ci_low=low,
        ci_high=high,
        verdict=verdict,
        margin=margin,
        confidence=confidence,
        reference_n=len(reference_samples),
        candidate_n=len(candidate_samples),
        reference_cv=ref_cv,
        candidate_cv=cand_cv,
        cv_bound=bound,
        repetitions_needed=needed,
        reason=reason,
    )


def median_interval(
    samples: Sequence[float], confidence: float = 0.90, seed: int = 0
) -> tuple[float, float, float]:
    """Median of one image's throughputs and its percentile bootstrap interval (for plots)."""
    values = np.asarray(samples, dtype=float)
    if values.size == 1:
        return float(values[0]), float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(BOOTSTRAP_RESAMPLES, values.size), replace=True), axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(medians, [tail, 1.0 - tail])
    return float(np.median(values)), float(low), float(high)

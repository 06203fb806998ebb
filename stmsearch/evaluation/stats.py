"""Intervals for the numbers a trial reports: Wilson for accuracies, a paired bootstrap for speed-ups;
and the exact paired sign test that compares two methods image by image."""
from __future__ import annotations

import math
import statistics

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``correct / n`` (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 or n correct.
    """
    if n <= 0:
        raise ValueError(f"wilson_interval: n must be positive, got {n}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """median(numerator) / median(denominator): a speed-up from paired times (reference over candidate)."""
    return statistics.median(numerator) / statistics.median(denominator)


def bootstrap_ratio_ci(numerator: list[float], denominator: list[float], resamples: int = 2000,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`median_ratio`, resampling whole pairs.

    The i-th entries of the two lists were timed back to back, so a pair shares whatever the
    machine was doing then; resampling pairs keeps that.
    """
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"bootstrap_ratio_ci: need two equal lists of >= 2 paired times, got {len(a)} and {len(b)}")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    ratios = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return float(lo), float(hi)


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided p-value of a paired sign test (McNemar's exact test).

    ``wins``: images only method A gets right; ``losses``: images only method B gets right.
    Images both get right or both get wrong carry no information about which is better, so
    under the null hypothesis each of the ``n = wins + losses`` discordant images is a win with
    probability 1/2. p = P(a result at least as lopsided) = 2 * P(Binomial(n, 1/2) <= min), at most 1.
    Exact integer arithmetic (math.comb), so it holds for any n.
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"sign_test: counts must be >= 0, got wins={wins}, losses={losses}")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2 ** n)

"""The report's statistics, in one place: 95% t-intervals of a mean and Holm's step-down adjustment."""

from __future__ import annotations

import math
from collections.abc import Sequence

CONFIDENCE = 0.95


def mean_interval(values: Sequence[float]) -> tuple[float, float, int]:
    """``(mean, half-width of its 95% t-interval, n)``; the half-width is ``inf`` for one value (no noise
    estimate). Every "±" the report prints is this half-width, never a standard deviation."""
    from scipy.stats import t

    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return mean, math.inf, 1
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)), n


def t_test_p(values: Sequence[float]) -> float:
    """Two-sided p-value of a one-sample t-test of mean 0 (paired differences); ``nan`` below two values, 0 or 1
    for values without spread."""
    from scipy.stats import t

    values = [float(v) for v in values]
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    return float(2 * t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error, valid under any dependence), in the input order;
    ``nan`` entries are left out of the family and stay ``nan``."""
    indexed = sorted((p, k) for k, p in enumerate(p_values) if not math.isnan(p))
    m, running, out = len(indexed), 0.0, [math.nan] * len(p_values)
    for rank, (p, k) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        out[k] = running
    return out

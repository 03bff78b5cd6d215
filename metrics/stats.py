"""Summary statistics over the measured calls of a row, NaN-aware, with bootstrap confidence intervals."""
from __future__ import annotations

import math
import statistics

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def clean(values) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def median(values) -> float:
    v = clean(values)
    return statistics.median(v) if v else float("nan")


def percentile(values, q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default; NaN unless there are enough values
    for it to be more than the maximum in disguise (p90 needs 10, p99 needs 100)."""
    v = sorted(clean(values))
    if not v or len(v) < math.ceil(1 / (1 - q / 100) - 1e-9) if q < 100 else not v:
        return float("nan")
    pos = (len(v) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def stdev(values) -> float:
    """Sample standard deviation; NaN for fewer than two values, where spread is unknown, not zero."""
    v = clean(values)
    return statistics.stdev(v) if len(v) > 1 else float("nan")


def geometric_mean(values) -> float:
    v = [x for x in clean(values) if x > 0]
    return math.exp(sum(map(math.log, v)) / len(v)) if v else float("nan")


def bootstrap_ci(groups, statistic=np.median, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
                 level: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile-bootstrap interval of `statistic` over the values of `groups`.

    Groups are resampled whole (a cluster bootstrap): the sequences of one batched call share its
    latency and are not independent draws, so resampling them one by one would narrow the interval
    falsely. Pass one-element groups for independent values. NaN with fewer than two groups."""
    groups = [np.asarray(clean(g), dtype=float) for g in groups]
    groups = [g for g in groups if g.size]
    if len(groups) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))  # (R, G)
    if all(g.size == 1 for g in groups):
        flat = np.concatenate(groups)
        stats = statistic(flat[picks], axis=1)  # (R,)
    else:
        stats = np.array([statistic(np.concatenate([groups[i] for i in row])) for row in picks])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def geometric_mean_ci(ratios, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the geometric mean of positive ratios (paired speedups)."""
    logs = [[math.log(r)] for r in clean(ratios) if r > 0]
    low, high = bootstrap_ci(logs, np.mean, seed=seed)
    return math.exp(low) if low == low else low, math.exp(high) if high == high else high


def half_width_ratio(median_value: float, low: float, high: float) -> float:
    """CI half-width relative to the median: the stability test of a row."""
    if any(x != x for x in (median_value, low, high)) or median_value == 0:
        return float("nan")
    return (high - low) / 2 / abs(median_value)

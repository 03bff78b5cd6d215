"""Summary statistics over the repetitions of a row, NaN-aware."""
from __future__ import annotations

import math
import statistics


def clean(values) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def median(values) -> float:
    v = clean(values)
    return statistics.median(v) if v else float("nan")


def percentile(values, q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    v = sorted(clean(values))
    if not v:
        return float("nan")
    pos = (len(v) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def stdev(values) -> float:
    v = clean(values)
    return statistics.stdev(v) if len(v) > 1 else 0.0 if v else float("nan")

"""One latency figure's spread over a load point's requests, in ms: the median with its 95% bootstrap interval,
p90 and p99 (NaN below 10 and 100 values, so no percentile pretends to be one)."""
from __future__ import annotations

from metrics.stats import bootstrap_ci, median, percentile


def spread(name: str, values: list[float], groups: list[list[float]] | None = None) -> dict:
    """Median with its 95% bootstrap interval (resampling groups, e.g. a request's gaps, where given), p90, p99."""
    ms = [v * 1000 for v in values]
    low, high = bootstrap_ci([[v * 1000 for v in g] for g in groups] if groups else [[v] for v in ms])
    return {f"{name}_median": median(ms), f"{name}_ci_low": low, f"{name}_ci_high": high,
            f"{name}_p90": percentile(ms, 90), f"{name}_p99": percentile(ms, 99)}

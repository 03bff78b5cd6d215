"""SLO attainment of a load point and the capacity a search finds (scenarios/capacity.py), with a one-sided bound.

- attainment: the share of a load point's requests that finished ok within both SLOs (metrics.serving.meets).
- the target share: `capacity_percentile` / 100 x `capacity_attainment` (p90 and 1.0: 90% of requests must meet
  both targets, which is p90 TTFT and p90 TPOT within target when one of them binds).
- its interval: bootstrapped over blocks of consecutive requests (by arrival), resampled whole, since in a queue
  one request's wait follows the one before it; the 90% two-sided interval, whose low end is a one-sided 95% bound.
- capacity_rps: the highest open-loop rate probed whose attainment met the target; capacity_rps_ci_low: the
  highest probed rate whose attainment's lower bound still meets it; capacity_concurrency and its bound the same
  over the closed-loop concurrencies of a search by concurrency.

The same functions fill the rows and recompute them from requests.jsonl (the SLO explorer), so the two agree.
"""
from __future__ import annotations

import math

import numpy as np

from metrics.serving import RequestRecord, meets
from metrics.stats import BOOTSTRAP_RESAMPLES, CONFIDENCE

NAN = float("nan")


def target_share(percentile: float, attainment: float) -> float:
    return percentile / 100 * attainment


def hits(records: list[RequestRecord], slo_ttft_ms: float, slo_tpot_ms: float) -> list[bool]:
    """Whether each request met the SLOs, in arrival order (a failed request did not)."""
    ordered = sorted(records, key=lambda r: (r.scheduled if r.scheduled == r.scheduled else math.inf, r.request_id))
    return [meets(r, slo_ttft_ms, slo_tpot_ms) for r in ordered]


def attainment(records: list[RequestRecord], slo_ttft_ms: float, slo_tpot_ms: float) -> float:
    h = hits(records, slo_ttft_ms, slo_tpot_ms)
    return sum(h) / len(h) if h else NAN


def attainment_interval(records: list[RequestRecord], slo_ttft_ms: float, slo_tpot_ms: float, seed: int = 0,
                        resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """(low, high): each end a one-sided 95% bound on the share of requests meeting the SLOs, from a block
    bootstrap (blocks of about sqrt(n) consecutive requests). NaN with fewer than two blocks."""
    h = np.asarray(hits(records, slo_ttft_ms, slo_tpot_ms), dtype=float)
    size = max(1, round(math.sqrt(len(h))))
    starts = range(0, len(h), size)
    if len(starts) < 2:
        return NAN, NAN
    met = np.array([h[s:s + size].sum() for s in starts])
    count = np.array([len(h[s:s + size]) for s in starts], dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(met), size=(resamples, len(met)))
    shares = met[picks].sum(axis=1) / count[picks].sum(axis=1)
    tail = (1 - CONFIDENCE) * 100  # one-sided at each end: together a 90% interval
    low, high = np.percentile(shares, [tail, 100 - tail])
    return float(low), float(high)


def capacity(probes: list[tuple[float, float, float]], target: float) -> tuple[float, float]:
    """(capacity_rps, capacity_rps_ci_low) from (rate, attainment, attainment_low) of a search's open-loop probes:
    the highest rate that met the target, and the highest whose lower bound still meets it (0: none)."""
    met = [rate for rate, share, _ in probes if share == share and share >= target]
    bound = [rate for rate, _, low in probes if low == low and low >= target]
    best = max(met, default=0.0)
    return best, min(max(bound, default=0.0), best)


class CapacityFigures:
    """The columns of a capacity search's probe rows (scenarios/capacity.py); other rows leave them empty."""

    columns = ("capacity_probe", "slo_attainment", "slo_attainment_ci_low", "slo_attainment_ci_high",
               "capacity_target", "capacity_rps", "capacity_rps_ci_low", "capacity_probes",
               "capacity_concurrency", "capacity_concurrency_ci_low")
    help = {  # column -> one line for docs/columns.md (scripts/reference.py); a group shares its line
        "capacity_probe": "capacity search rows: which probe of the search this row is (1: synchronous, one request "
                          "at a time; then open-loop rates), the search's rows share run, engine, method and variant",
        **dict.fromkeys(("slo_attainment", "slo_attainment_ci_low", "slo_attainment_ci_high"),
                        "capacity search rows: share of the requests that finished within both SLOs, and its one-sided "
                        "95% bounds from a bootstrap over blocks of consecutive requests"),
        "capacity_target": "capacity search rows: the share that must meet the SLOs, `capacity_percentile` / 100 × "
                           "`capacity_attainment`",
        **dict.fromkeys(("capacity_rps", "capacity_rps_ci_low", "capacity_probes"),
                        "the last row of a capacity search: the highest request rate probed that met the target share, "
                        "the highest whose attainment's lower bound (one-sided 95%) still met it, and the probes run"),
        **dict.fromkeys(("capacity_concurrency", "capacity_concurrency_ci_low"),
                        "the last row of a capacity search by concurrency (`capacity_by`): the highest closed-loop "
                        "concurrency probed that met the target share, and the highest whose attainment's lower bound "
                        "(one-sided 95%) still met it"),
    }

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        row = row or {}
        return {c: row.get(c, NAN) for c in CapacityFigures.columns}

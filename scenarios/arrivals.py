"""When requests arrive: open-loop schedules (Poisson, or gamma for bursty traffic) computed before the load starts.

A schedule is a list of offsets in seconds from the start of the load, one per request, made from a seeded
generator so that every engine of a run is offered exactly the same traffic. Nothing here sends anything:
scenarios/load.py keeps to the schedule and records how late each send really was.
"""
from __future__ import annotations

import math

import numpy as np


def inter_arrivals(count: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Gaps between consecutive arrivals at `rate` requests/s.

    The gaps are gamma-distributed with shape `burstiness` and mean 1/rate, as vLLM's benchmark draws them:
    shape 1 is a Poisson process (exponential gaps, coefficient of variation 1); below 1 the same mean
    rate comes in bursts, above 1 more evenly. An infinite rate sends everything at once."""
    if count <= 0:
        return []
    if math.isinf(rate):
        return [0.0] * count
    if rate <= 0 or burstiness <= 0:
        raise ValueError(f"rate and burstiness must be positive, got rate={rate}, burstiness={burstiness}")
    rng = np.random.default_rng(seed)
    return rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=count).tolist()


def schedule(count: int, rate: float, burstiness: float = 1.0, seed: int = 0,
             duration_s: float = 0.0) -> list[float]:
    """Arrival offsets of up to `count` requests (0: no cap), cut at `duration_s` seconds (0: no cut).

    The first request arrives after its own gap, not at 0, so that a short schedule is not biased towards
    an early burst. With a duration and no count, as many requests as fall inside the duration."""
    if count <= 0 and duration_s <= 0:
        raise ValueError("a schedule needs a request count or a duration")
    if math.isinf(rate):
        if count <= 0:
            raise ValueError("an infinite rate needs a request count: a duration alone would send without end")
        return [0.0] * count
    times: list[float] = []
    block = max(count, 64) if count > 0 else max(64, int(rate * duration_s * 1.5) + 16)
    t, drawn = 0.0, 0
    while True:
        for gap in inter_arrivals(block, rate, burstiness, seed + 7919 * drawn):
            t += gap
            if (duration_s > 0 and t > duration_s) or (count > 0 and len(times) >= count):
                return times
            times.append(t)
        drawn += 1

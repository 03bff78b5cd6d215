"""Latency detail of one row: when each new token of one call came to exist.

Timing every token needs a clock read, and on a GPU a device sync, after every step; inside a measured call
that would change what is measured. So each row gets one extra call after its measured ones, traced and
labelled as such (`token_times_ms`), on the row's first work unit. Its total is slightly slower than a
measured call's; its shape (TTFT, steady steps, speculative rounds landing several tokens at once, stalls)
is what it is for.

    with TokenTrace(device) as trace:               # metrics/timing.py
        method(inputs, settings, engine, trace)
    trace.token_times_ms()  # [ms since the call started, one per new token (per sequence)]
"""
from __future__ import annotations

# The traced call's probe is metrics.timing.TokenTrace; what is here reads its figures and needs no torch, so
# charts and History can use it.


def format_times(times: list[float]) -> str:
    return " ".join(f"{t:.3f}" for t in times)


def parse_times(text) -> list[float]:
    """The CSV cell back to token times (ms); [] for an empty or missing cell."""
    if not isinstance(text, str) or not text.strip():
        return []
    return [float(t) for t in text.split()]


def inter_token_ms(times: list[float]) -> list[float]:
    """Gaps between consecutive tokens (ms). Tokens that arrived together spread their step's gap evenly, as
    streamed events do under load (metrics/load.py), so a round of k tokens counts as k gaps."""
    gaps: list[float] = []
    i = 1
    while i < len(times):
        j = i
        while j < len(times) and times[j] == times[i]:
            j += 1
        gaps += [(times[i] - times[i - 1]) / (j - i)] * (j - i)
        i = j
    return gaps

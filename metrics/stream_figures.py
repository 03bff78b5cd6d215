"""Figures of a load point (from its RequestRecords, metrics/serving.py) that other tools define differently, recomputed from each request's streamed events
(requests.jsonl keeps each event's arrival time and token count), and the timing of reasoning apart from the answer.

- itl_event_ms: one gap per streamed event (vLLM `bench serve`'s ITL, genai-perf's): an event of k tokens is one
  gap, where `itl_ms` (metrics/serving.py) counts k gaps of a k-th of it.
- ttfat_ms: send to the first answer token, where a server streams reasoning apart (`reasoning_content` /
  `reasoning` deltas); TTFT stays the time to the first token of any kind.
- offered_request_rate: requests / the time of the last scheduled arrival, the load an open loop really offered
  (a short Poisson draw offers more or less than its `request_rate`).
"""
from __future__ import annotations

from metrics.spread import spread
from metrics.stats import median

NAN = float("nan")

ITL_EVENT = tuple(f"itl_event_ms_{s}" for s in ("median", "ci_low", "ci_high", "p90", "p99"))
TTFAT = tuple(f"ttfat_ms_{s}" for s in ("median", "ci_low", "ci_high", "p90", "p99"))


def event_gaps_s(r) -> list[float]:
    times = [e[0] for e in r.events if e[1] > 0] if r.status == "ok" else []
    return [b - a for a, b in zip(times, times[1:])]


def ttfat_s(r) -> float:
    return r.first_answer - r.sent if r.status == "ok" else NAN


def offered_rate(records: list) -> float:
    last = max((r.scheduled for r in records if r.scheduled == r.scheduled), default=NAN)
    return len(records) / last if last == last and last > 0 else NAN


def stream_figures(records: list, open_loop: bool = True) -> dict:
    ok = [r for r in records if r.status == "ok"]
    out: dict = dict.fromkeys(StreamFigures.columns, NAN)
    groups = [g for r in ok if (g := event_gaps_s(r))]
    if groups:
        out.update(spread("itl_event_ms", [v for g in groups for v in g], groups))
    if any(r.reasoning_tokens for r in ok):
        out.update(spread("ttfat_ms", [ttfat_s(r) for r in ok]))
        reasoning = sum(r.reasoning_tokens for r in ok)
        tokens = sum(r.output_tokens for r in ok)
        out["reasoning_tokens"] = reasoning / len(ok)
        out["answer_tokens"] = (tokens - reasoning) / len(ok)
        out["reasoning_share"] = reasoning / tokens if tokens else NAN
        out["reasoning_ms_median"] = median([(r.first_answer - r.first_token) * 1000 for r in ok])
    if open_loop:
        out["offered_request_rate"] = offered_rate(records)
    return out


class StreamFigures:
    """Columns of load rows computed from each request's events (metrics/serving.py fills them with the others)."""

    columns = (*ITL_EVENT, *TTFAT, "reasoning_ms_median", "reasoning_tokens", "answer_tokens", "reasoning_share",
               "offered_request_rate")
    help = {
        **dict.fromkeys(ITL_EVENT, "load rows: inter-token latency with one gap per streamed event (vLLM bench serve's "
                                   "and genai-perf's ITL; an event of k tokens is one gap), interval resampled by request; "
                                   "`itl_ms_*` counts k gaps per such event"),
        **dict.fromkeys(TTFAT, "load rows: time to first answer token, send to the first content after the reasoning, "
                               "where the server streams reasoning apart (`reasoning_content` / `reasoning` deltas, e.g. "
                               "vLLM --reasoning-parser); empty when no request reasoned"),
        "reasoning_ms_median": "load rows: first token to first answer token (the reasoning phase), median per request",
        **dict.fromkeys(("reasoning_tokens", "answer_tokens", "reasoning_share"),
                        "load rows: reasoning and answer tokens per request (mean) and reasoning / all output tokens"),
        "offered_request_rate": "open-loop load rows: requests / time of the last scheduled arrival, the rate the drawn "
                                "arrivals really offered, beside the `request_rate` asked for",
    }

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        row = row or {}
        return {c: row.get(c, NAN) for c in StreamFigures.columns}

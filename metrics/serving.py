"""Figures of a load point from its per-request records: TTFT, TPOT, ITL, end-to-end latency, throughput, goodput.

Every time in a record is in seconds from the start of its load point (the moment the first request was
due), on the clock of the process that sent the requests. The same functions fill a CSV row after the run
and recompute it later from requests.jsonl (the dashboard's SLO explorer), so the two always agree.

- TTFT: send to the first token (queueing included: that is what the user waits for).
- ITL: the gap between consecutive tokens of one request. A streamed event that carries k tokens counts as
  k gaps of (its gap / k), never as one gap: a server that sends tokens in chunks would otherwise look k
  times slower per token.
- TPOT: (end - first token) / (output tokens - 1), per request.
- goodput: requests per second that finished ok and met every SLO that is set (0 = no target).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from metrics.spread import spread
from metrics.stats import BOOTSTRAP_RESAMPLES, CONFIDENCE, median, percentile
from metrics.stream_figures import stream_figures

NAN = float("nan")
LAG_LIMIT_MS = 10.0  # sender lag p99 above this: the row measured the client, not the engine


@dataclass
class RequestRecord:
    """One request of a load point, as requests.jsonl stores it (times in s from the load start)."""

    request_id: int
    prompt_index: int
    scheduled: float  # when it was due (open loop: its arrival; closed loop: when its slot freed)
    sent: float = NAN  # when the sender really sent it
    first_token: float = NAN
    token_times: list = field(default_factory=list)  # one time per output token, the first one included
    end: float = NAN
    prompt_tokens: int = 0
    output_tokens: int = 0
    status: str = "pending"  # ok, error
    error: str = ""
    queue: float = NAN  # seconds waiting before the engine started on it, where the engine says
    text: str = ""
    repetition: int = 0  # the runner's stop logic keeps records of whole repetitions only
    session: int = -1  # a multi-turn session's index (scenarios/sessions.py), -1: a single request
    turn: int = 0  # its turn within the session, 0 first
    # Streamed requests: each event as [arrival time, tokens in it], so any tool's ITL can be recomputed
    # (metrics/stream_figures.py); the first answer token's time and the reasoning tokens where the server streams
    # reasoning apart; what the server said of this request itself (vLLM --enable-per-request-metrics: queue_time_ms,
    # time_to_first_token_ms, generation_time_ms, mean_itl_ms).
    events: list = field(default_factory=list)
    first_answer: float = NAN
    reasoning_tokens: int = 0
    server: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("text")
        out.pop("repetition")
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}

    @classmethod
    def from_json(cls, data: dict) -> "RequestRecord":
        known = {k: (NAN if v is None and k in FLOAT_FIELDS else v) for k, v in data.items() if k in FIELDS}
        return cls(**known)

    def fail(self, error: str, at: float) -> None:
        self.status, self.error = "error", error
        if self.end != self.end:
            self.end = at


FIELDS = set(RequestRecord.__dataclass_fields__)
FLOAT_FIELDS = {"scheduled", "sent", "first_token", "end", "queue", "first_answer"}


def spread_tokens(events: list[tuple[float, int]]) -> list[float]:
    """Token times from streamed events (arrival time, tokens in it).

    The first event's tokens all carry its time (they arrived together, after TTFT); each later event of k
    tokens spreads its k tokens evenly over the gap since the event before it, so ITL is counted per token."""
    times: list[float] = []
    previous = None
    for at, count in events:
        if count <= 0:
            continue
        if previous is None:
            times += [at] * count
        else:
            gap = (at - previous) / count
            times += [previous + gap * (j + 1) for j in range(count)]
        previous = at
    return times


def ttft_s(r: RequestRecord) -> float:
    return r.first_token - r.sent if r.status == "ok" else NAN


def tpot_s(r: RequestRecord) -> float:
    if r.status != "ok" or r.output_tokens < 2:
        return NAN
    return (r.end - r.first_token) / (r.output_tokens - 1)


def itls_s(r: RequestRecord) -> list[float]:
    t = r.token_times if r.status == "ok" else []
    return [b - a for a, b in zip(t, t[1:])]


def e2e_s(r: RequestRecord) -> float:
    return r.end - r.sent if r.status == "ok" else NAN


def lag_ms(r: RequestRecord) -> float:
    return (r.sent - r.scheduled) * 1000


def duration_s(records: list[RequestRecord]) -> float:
    """From the load start (0: the first request was due) to the last request's end."""
    ends = [r.end for r in records if r.end == r.end]
    return max(ends) if ends else NAN


def meets(r: RequestRecord, slo_ttft_ms: float, slo_tpot_ms: float) -> bool:
    """Finished ok within both targets; a target of 0 is no target, and a one-token request has no TPOT to miss."""
    if r.status != "ok":
        return False
    if slo_ttft_ms and not ttft_s(r) * 1000 <= slo_ttft_ms:
        return False
    tpot = tpot_s(r)
    return not (slo_tpot_ms and tpot == tpot and tpot * 1000 > slo_tpot_ms)


def goodput(records: list[RequestRecord], slo_ttft_ms: float, slo_tpot_ms: float) -> float:
    """Requests/s that met the SLOs, over the load point's whole duration."""
    span = duration_s(records)
    if not records or not span or span != span:
        return NAN
    return sum(meets(r, slo_ttft_ms, slo_tpot_ms) for r in records) / span


def rate_intervals(records: list[RequestRecord], span: float, slo_ttft_ms: float, slo_tpot_ms: float) -> dict:
    """95% intervals of output tok/s and goodput, requests resampled. A rate is (requests in flight on average) x
    (tokens per second of a request's own time) by Little's law; the first is held at the load point's, the
    second is resampled (output tokens, or 1 per request within the SLOs, over send-to-end time), so the interval
    carries the spread of the requests' latencies and lengths. Failed or missed requests count 0."""
    out = dict.fromkeys(("output_tokens_per_s_ci_low", "output_tokens_per_s_ci_high", "goodput_ci_low",
                         "goodput_ci_high"), NAN)
    busy = np.array([r.end - r.sent if r.end == r.end and r.sent == r.sent else 0.0 for r in records])
    if len(records) < 2 or span != span or span <= 0 or busy.sum() <= 0:
        return out
    in_flight = busy.sum() / span
    picks = np.random.default_rng(0).integers(0, len(records), size=(BOOTSTRAP_RESAMPLES, len(records)))
    spent = np.maximum(busy[picks].sum(axis=1), 1e-12)
    tail = (1 - CONFIDENCE) / 2 * 100
    for name, counts in (("output_tokens_per_s", [r.output_tokens if r.status == "ok" else 0 for r in records]),
                         ("goodput", [1.0 if meets(r, slo_ttft_ms, slo_tpot_ms) else 0.0 for r in records])):
        rates = in_flight * np.asarray(counts, dtype=float)[picks].sum(axis=1) / spent
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = (float(v) for v in np.percentile(rates, [tail, 100 - tail]))
    return out


class LoadFigures:
    """The columns of load rows (scenarios/load.py). Rows of fixed calls leave them empty; load rows also fill
    the shared ttft_ms_* / tpot_ms_* columns, per request instead of per call."""

    columns = (
        "concurrency", "request_rate", "burstiness", "requests", "failed_requests", "duration_s",
        "request_throughput", "output_tokens_per_s", "output_tokens_per_s_ci_low", "output_tokens_per_s_ci_high",
        "ttft_ms_p99", "tpot_ms_p99",
        "itl_ms_median", "itl_ms_ci_low", "itl_ms_ci_high", "itl_ms_p90", "itl_ms_p99",
        "e2e_ms_median", "e2e_ms_ci_low", "e2e_ms_ci_high", "e2e_ms_p90", "e2e_ms_p99", "queue_ms_median",
        "slo_ttft_ms", "slo_tpot_ms", "goodput", "goodput_ci_low", "goodput_ci_high",
        "send_lag_ms_p99", "sender_lagged", "server_command", "endpoint",
    )
    help = {  # column -> one line for docs/columns.md (scripts/reference.py); a group shares its line
        **dict.fromkeys(("concurrency", "request_rate", "burstiness"),
                        "load rows: the load point, closed loop (requests in flight) or open loop (requests/s, `inf` all at "
                        "once; gamma shape of the gaps, 1 = Poisson); empty on rows of fixed calls"),
        **dict.fromkeys(("requests", "failed_requests", "duration_s"),
                        "load rows: measured requests (warm-up excluded), those that failed, and the time from the first "
                        "request being due to the last one ending"),
        **dict.fromkeys(("request_throughput", "output_tokens_per_s"),
                        "load rows: finished requests / `duration_s` and their output tokens / `duration_s`"),
        **dict.fromkeys(("output_tokens_per_s_ci_low", "output_tokens_per_s_ci_high", "goodput_ci_low", "goodput_ci_high"),
                        "load rows: 95% intervals of output tok/s and goodput: requests resampled, each rate taken as the "
                        "mean requests in flight (held) × tokens, or requests within the SLOs, per second of request time "
                        "(Little's law); a failed or missed request counts 0"),
        **dict.fromkeys(("ttft_ms_p99", "tpot_ms_p99"),
                        "load rows: p99 of per-request TTFT and TPOT (from 100 requests; their medians, intervals and p90 "
                        "are in `ttft_ms_*` / `tpot_ms_*`)"),
        **dict.fromkeys(("itl_ms_median", "itl_ms_ci_low", "itl_ms_ci_high", "itl_ms_p90", "itl_ms_p99"),
                        "load rows: inter-token latency, one gap per token (a streamed event of k tokens is k gaps), "
                        "interval resampled by request"),
        **dict.fromkeys(("e2e_ms_median", "e2e_ms_ci_low", "e2e_ms_ci_high", "e2e_ms_p90", "e2e_ms_p99"),
                        "load rows: send to last token, per request"),
        "queue_ms_median": "load rows: time a request waited before the engine started on it, where the engine says "
                           "(static and continuous batching; a server that sends per-request figures, e.g. vLLM with "
                           "--enable-per-request-metrics)",
        **dict.fromkeys(("slo_ttft_ms", "slo_tpot_ms", "goodput"),
                        "load rows: the latency targets (0 = none) and the requests/s that finished within both; the SLO "
                        "explorer recomputes it from `requests.jsonl` for other targets"),
        **dict.fromkeys(("send_lag_ms_p99", "sender_lagged"),
                        "load rows: how late the load generator sent against its schedule (p99 from 100 requests, the "
                        "worst below), and true when above 10 ms: the row measured the client, not the engine"),
        **dict.fromkeys(("server_command", "endpoint"),
                        "server rows: the command the tool started the server with (what decides drafting, parallelism, "
                        "dtype on the server) and the URL measured"),
    }
    SHARED = ("ttft_ms_median", "ttft_ms_ci_low", "ttft_ms_ci_high", "ttft_ms_p90",
              "tpot_ms_median", "tpot_ms_ci_low", "tpot_ms_ci_high", "tpot_ms_p90")

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        """Rows of fixed calls: these columns stay as the row has them (empty unless a load row set them)."""
        row = row or {}
        return {c: row.get(c, NAN) for c in LoadFigures.columns}

    @staticmethod
    def figures(records: list[RequestRecord], slo_ttft_ms: float = 0.0, slo_tpot_ms: float = 0.0,
                open_loop: bool | None = None) -> dict:
        """open_loop None leaves offered_request_rate to whoever set it (it needs the load point)."""
        ok = [r for r in records if r.status == "ok"]
        span = duration_s(records)
        out = {"requests": len(records), "failed_requests": len(records) - len(ok), "duration_s": span,
               "slo_ttft_ms": slo_ttft_ms, "slo_tpot_ms": slo_tpot_ms}
        out["request_throughput"] = len(ok) / span if span == span and span > 0 else NAN
        out["output_tokens_per_s"] = sum(r.output_tokens for r in ok) / span if span == span and span > 0 else NAN
        out.update(spread("ttft_ms", [ttft_s(r) for r in ok]))
        out.update(spread("tpot_ms", [tpot_s(r) for r in ok]))
        itl_groups = [itls_s(r) for r in ok if len(r.token_times) > 1]
        out.update(spread("itl_ms", [v for g in itl_groups for v in g], itl_groups))
        out.update(spread("e2e_ms", [e2e_s(r) for r in ok]))
        out["queue_ms_median"] = median([r.queue * 1000 for r in ok])
        out["goodput"] = goodput(records, slo_ttft_ms, slo_tpot_ms)
        out.update(rate_intervals(records, span, slo_ttft_ms, slo_tpot_ms))
        lags = [lag_ms(r) for r in records if r.sent == r.sent]
        # p99 of the lag needs 100 sends to be a p99; below that the worst send stands in, which can only flag more.
        lag = percentile(lags, 99) if len(lags) >= 100 else (max(lags) if lags else NAN)
        out["send_lag_ms_p99"] = lag
        out["sender_lagged"] = bool(lag > LAG_LIMIT_MS) if lag == lag else ""
        streamed = stream_figures(records, bool(open_loop))
        if open_loop is None:
            streamed.pop("offered_request_rate")
        out.update(streamed)
        return out

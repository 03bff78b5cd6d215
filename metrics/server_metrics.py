"""What a server says about itself on /metrics (Prometheus text), as a load row's columns: deltas of its counters and
histograms around the load, and the peak of its KV-cache gauge sampled during it.

One table of metric names per server kind (SERVER_METRICS): adding a server is one entry. A histogram's delta gives
an exact mean (sum / count) and, for percentiles, the upper bound of the bucket that holds them. Counters are summed over label sets (engines, models); vLLM's per-position acceptance counter
is kept by its `position` label.

- τ (mean_accepted_tokens) = 1 + accepted / drafts; acceptance at position i = accepted at i / drafts (vLLM's
  definitions, which equal this tool's: a vLLM draft is one verify step that proposed tokens).
- SGLang reports τ only as a gauge (`sglang:spec_accept_length`), read at the end of the load, not as a delta.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

NAN = float("nan")
HISTOGRAMS = ("queue", "ttft", "itl", "e2e")


@dataclass(frozen=True)
class ServerNames:
    """The metric names of one server kind; a role it does not report is left out."""

    prefix: str  # how its names start: tells the kind from a /metrics text
    histograms: dict = field(default_factory=dict)  # queue, ttft, itl, e2e -> histogram (seconds)
    counters: dict = field(default_factory=dict)  # drafts, draft_tokens, accepted, prefix_queries, prefix_hits, preemptions
    per_position: str = ""  # counter of accepted drafts by position label (0-based)
    gauges: dict = field(default_factory=dict)  # kv_usage (0..1), tau, prefix_hit_rate


SERVER_METRICS = {
    "vllm": ServerNames(
        "vllm:",
        histograms={"queue": "vllm:request_queue_time_seconds", "ttft": "vllm:time_to_first_token_seconds",
                    "itl": "vllm:inter_token_latency_seconds", "e2e": "vllm:e2e_request_latency_seconds"},
        counters={"drafts": "vllm:spec_decode_num_drafts", "draft_tokens": "vllm:spec_decode_num_draft_tokens",
                  "accepted": "vllm:spec_decode_num_accepted_tokens", "prefix_queries": "vllm:prefix_cache_queries",
                  "prefix_hits": "vllm:prefix_cache_hits", "preemptions": "vllm:num_preemptions"},
        per_position="vllm:spec_decode_num_accepted_tokens_per_pos",
        gauges={"kv_usage": "vllm:kv_cache_usage_perc"}),
    # python/sglang/srt/metrics/collector.py and docs/references/production_metrics.md: prefix hits are cached
    # prompt tokens over prompt tokens; a retraction is SGLang's preemption.
    "sglang": ServerNames(
        "sglang:",
        histograms={"queue": "sglang:queue_time_seconds", "ttft": "sglang:time_to_first_token_seconds",
                    "itl": "sglang:inter_token_latency_seconds", "e2e": "sglang:e2e_request_latency_seconds"},
        counters={"prefix_queries": "sglang:prompt_tokens", "prefix_hits": "sglang:cached_tokens",
                  "preemptions": "sglang:num_retracted_requests"},
        gauges={"kv_usage": "sglang:token_usage", "tau": "sglang:spec_accept_length"}),
    # TGI's router: queue and end-to-end histograms; it has no TTFT, ITL or drafting counters.
    "tgi": ServerNames(
        "tgi_",
        histograms={"queue": "tgi_request_queue_duration", "e2e": "tgi_request_duration"}),
}

Samples = dict  # metric name -> list of (labels dict, value)


def parse(text: str, prefixes: tuple[str, ...] | None = None) -> Samples:
    """The samples of a Prometheus exposition whose names start with one of prefixes (every server's by default)."""
    prefixes = prefixes or tuple(n.prefix for n in SERVER_METRICS.values())
    out: Samples = {}
    for line in text.splitlines():
        if not line.startswith(prefixes):
            continue
        head, _, tail = line.rpartition(" ")
        try:
            value = float(tail)
        except ValueError:
            continue
        name, _, labels = head.partition("{")
        pairs = {}
        for part in labels.rstrip("}").split('",'):
            key, _, v = part.partition("=")
            if key.strip():
                pairs[key.strip()] = v.strip().strip('"')
        out.setdefault(name.strip(), []).append((pairs, value))
    return out


def kind_of(samples: Samples) -> str:
    """The server kind whose names the samples carry ('' when none)."""
    for kind, names in SERVER_METRICS.items():
        if any(n.startswith(names.prefix) for n in samples):
            return kind
    return ""


def total(samples: Samples, name: str) -> float:
    """A counter summed over its label sets (prometheus_client names counters NAME_total)."""
    values = samples.get(name + "_total", samples.get(name, []))
    return sum(v for _, v in values) if values else NAN


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in samples.get(name + "_total", samples.get(name, [])):
        if label in labels:
            out[labels[label]] = out.get(labels[label], 0.0) + v
    return out


def gauge(samples: Samples, name: str, how=max) -> float:
    values = [v for _, v in samples.get(name, [])]
    return how(values) if values else NAN


def histogram(samples: Samples, name: str) -> tuple[dict[float, float], float, float]:
    """(cumulative count by upper bound, sum, count), summed over label sets."""
    buckets: dict[float, float] = {}
    for labels, v in samples.get(name + "_bucket", []):
        try:
            le = float(labels.get("le", "nan").replace("+Inf", "inf"))
        except ValueError:
            continue
        buckets[le] = buckets.get(le, 0.0) + v
    return buckets, total(samples, name + "_sum"), total(samples, name + "_count")


def quantile_bound(buckets: dict[float, float], q: float) -> float:
    """The upper bound of the bucket holding rank q * count (cumulative buckets): the q-quantile is at most this.
    Interpolating inside a bucket, as Prometheus' histogram_quantile does, would invent a value: with vLLM's
    queue-time buckets every sub-millisecond wait would read as 150 ms. Inf when the rank is in the +Inf bucket."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]) or buckets[bounds[-1]] <= 0:
        return NAN
    rank = q * buckets[bounds[-1]]
    return next((b for b in bounds if buckets[b] >= rank and buckets[b] > 0), NAN)


@dataclass
class Snapshot:
    """One read of /metrics, kept only for the names of its kind."""

    kind: str
    samples: Samples

    @classmethod
    def of(cls, text: str) -> "Snapshot":
        samples = parse(text)
        return cls(kind_of(samples), samples)


def spec_figures(names: ServerNames, before: Samples, after: Samples) -> dict:
    """Drafting figures from counter deltas: drafted, accepted, rate, τ, by position and k (the highest position)."""
    out: dict = {}
    c = names.counters
    delta = {role: total(after, c[role]) - total(before, c[role])
             for role in ("drafts", "draft_tokens", "accepted") if role in c}
    delta = {k: (0.0 if v != v else v) for k, v in delta.items()}
    if "draft_tokens" in delta:
        out["drafted_tokens"], out["accepted_tokens"] = delta["draft_tokens"], delta.get("accepted", 0.0)
        if delta["draft_tokens"] > 0:
            out["acceptance_rate"] = out["accepted_tokens"] / out["drafted_tokens"]
    drafts = delta.get("drafts", 0.0)
    if drafts > 0:
        out["server_drafts"] = drafts
        out["mean_accepted_tokens"] = 1 + delta.get("accepted", 0.0) / drafts
    if names.per_position:
        a, b = by_label(after, names.per_position, "position"), by_label(before, names.per_position, "position")
        positions = sorted(a, key=lambda p: int(p) if p.isdigit() else 0)
        if positions:
            out["server_k"] = len(positions)
            if drafts > 0:
                out["acceptance_by_position"] = "|".join(f"{(a[p] - b.get(p, 0.0)) / drafts:.3f}" for p in positions)
    if "tau" in names.gauges and (tau := gauge(after, names.gauges["tau"])) == tau and tau > 0:
        out["mean_accepted_tokens"] = tau
    return out


def server_figures(before: Snapshot, after: Snapshot, kv_peak: float = NAN) -> dict:
    """The server-side columns of a load point from two reads of /metrics around it (and the KV peak sampled
    during it); empty when the server's kind is unknown."""
    kind = after.kind or before.kind
    if not kind:
        return {}
    names = SERVER_METRICS[kind]
    out: dict = {"server_kind": kind}
    for role in HISTOGRAMS:
        if role not in names.histograms:
            continue
        (b1, s1, n1), (b2, s2, n2) = histogram(before.samples, names.histograms[role]), \
            histogram(after.samples, names.histograms[role])
        count = (n2 if n2 == n2 else 0.0) - (n1 if n1 == n1 else 0.0)
        if count <= 0:
            continue
        delta = {le: v - b1.get(le, 0.0) for le, v in b2.items()}
        out[f"server_{role}_ms_mean"] = ((s2 - (s1 if s1 == s1 else 0.0)) / count) * 1000
        out[f"server_{role}_ms_p50_le"] = quantile_bound(delta, 0.5) * 1000
        out[f"server_{role}_ms_p99_le"] = quantile_bound(delta, 0.99) * 1000
    c = names.counters
    if "prefix_queries" in c:
        queries = total(after.samples, c["prefix_queries"]) - total(before.samples, c["prefix_queries"])
        hits = total(after.samples, c["prefix_hits"]) - total(before.samples, c["prefix_hits"])
        if queries > 0:
            out["prefix_cache_hit_rate"] = hits / queries
    if "preemptions" in c:
        p = total(after.samples, c["preemptions"]) - total(before.samples, c["preemptions"])
        out["preemptions"] = p if p == p else NAN
    if kv_peak == kv_peak:
        out["kv_cache_usage_peak"] = kv_peak
    out.update(spec_figures(names, before.samples, after.samples))
    return out


def kv_usage(text: str) -> float:
    """The KV-cache usage gauge of one /metrics read (0..1), for sampling during a load."""
    samples = parse(text)
    kind = kind_of(samples)
    name = SERVER_METRICS[kind].gauges.get("kv_usage", "") if kind else ""
    return gauge(samples, name) if name else NAN


class ServerFigures:
    """The columns a server fills from /metrics and its per-request figures (engines/server/); empty for in-process
    engines. The drafting ones it fills (drafted, accepted, τ, by position) are DraftCounts' columns."""

    columns = (
        "server_kind", "server_spec_method", "server_k", "server_drafts",
        *(f"server_{r}_ms_{s}" for r in HISTOGRAMS for s in ("mean", "p50_le", "p99_le")),
        "server_ttft_ms_median", "prefix_cache_hit_rate", "preemptions", "kv_cache_usage_peak", "client_ttft_overhead_ms",
        "server_command_run",
    )
    help = {
        "server_kind": "server rows: whose /metrics names were read (`vllm`, `sglang`, `tgi`; metrics/server_metrics.py)",
        **dict.fromkeys(("server_spec_method", "server_k"),
                        "server rows: the server's own drafting, from its --speculative-config (e.g. `ngram`, `eagle3`, "
                        "`draft_model`) and its k, from the command or the per-position counters; "
                        "`num_draft_tokens` says the same k"),
        "server_drafts": "server rows: verify steps that drafted (vLLM `spec_decode_num_drafts`), the τ denominator",
        **dict.fromkeys(tuple(f"server_{r}_ms_{s}" for r in HISTOGRAMS for s in ("mean", "p50_le", "p99_le")),
                        "server rows: the server's own queue time, TTFT, inter-token latency (one gap per engine step) "
                        "and end-to-end latency over the load's requests, from its histogram deltas: the exact mean, and "
                        "the upper bound of the bucket holding p50 / p99 (the percentile is at most that)"),
        "server_ttft_ms_median": "server rows: the engine's own queue + time to first token, median per request, where "
                                 "the server sends per-request figures (vLLM --enable-per-request-metrics: from when its "
                                 "engine core queued the request, so its API server's tokenizing and IPC are not in it)",
        "prefix_cache_hit_rate": "server rows: prefix-cache hits / queries (tokens) over the load",
        "preemptions": "server rows: requests the server preempted (SGLang: retracted) during the load",
        "kv_cache_usage_peak": "server rows: highest KV-cache usage (0..1) sampled from /metrics during the load",
        "client_ttft_overhead_ms": "server rows: client TTFT minus the engine's (`server_ttft_ms_median`'s, per request, "
                                   "then the median; else minus `server_ttft_ms_mean`, means): time outside the engine, "
                                   "network, HTTP/SSE and the server's front end included",
        "server_command_run": "server rows: the command line that really ran ({model}, {port} filled in)",
    }

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        row = row or {}
        return {c: row.get(c, NAN) for c in ServerFigures.columns}

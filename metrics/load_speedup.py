"""Where drafting stops paying under load: a drafting load row against the plain greedy row at the same load point,
paired on the same requests (same request id, so the same prompt and, open loop, the same arrival time).

- TPOT speedup: geometric mean over paired requests of plain TPOT / drafting TPOT, with its 95% bootstrap interval;
- output tok/s speedup: the same for each request's output tokens / its end-to-end time (queueing included), the
  rate a user sees.
Above 1 drafting is faster; the chart (views/load_charts.py) marks the first load point whose interval falls below 1.
"""
from __future__ import annotations

from metrics.serving import RequestRecord, e2e_s, tpot_s
from metrics.stats import geometric_mean, geometric_mean_ci

NAN = float("nan")


def paired(plain: list[RequestRecord], drafting: list[RequestRecord]) -> list[tuple[RequestRecord, RequestRecord]]:
    mine = {r.request_id: r for r in drafting if r.status == "ok"}
    return [(p, mine[p.request_id]) for p in plain
            if p.status == "ok" and p.request_id in mine and mine[p.request_id].prompt_index == p.prompt_index]


def speedups(plain: list[RequestRecord], drafting: list[RequestRecord]) -> dict:
    """The LoadSpeedup columns of the drafting row."""
    pairs = paired(plain, drafting)
    out = {}
    for name, ratio in (
            ("tpot", lambda p, d: tpot_s(p) / tpot_s(d)),
            ("tokens_per_s", lambda p, d: (d.output_tokens / e2e_s(d)) / (p.output_tokens / e2e_s(p)))):
        values = []
        for p, d in pairs:
            try:
                v = ratio(p, d)
            except ZeroDivisionError:
                continue
            if v == v and 0 < v < float("inf"):
                values.append(v)
        low, high = geometric_mean_ci(values) if len(values) > 1 else (NAN, NAN)
        out.update({f"load_speedup_{name}": geometric_mean(values), f"load_speedup_{name}_ci_low": low,
                    f"load_speedup_{name}_ci_high": high})
    out["load_speedup_pairs"] = len(pairs)
    return out


class LoadSpeedup:
    """Columns of drafting load rows (decoding.METHODS[m].drafts, or a server row whose server drafted tokens)."""

    columns = ("load_speedup_tpot", "load_speedup_tpot_ci_low", "load_speedup_tpot_ci_high",
               "load_speedup_tokens_per_s", "load_speedup_tokens_per_s_ci_low", "load_speedup_tokens_per_s_ci_high",
               "load_speedup_pairs")
    help = {
        **dict.fromkeys(columns[:3], "drafting load rows: plain greedy TPOT / this row's TPOT at the same load point, "
                                     "engine and variant, paired by request: geometric mean and 95% bootstrap interval"),
        **dict.fromkeys(columns[3:6], "drafting load rows: the same for each request's output tokens / end-to-end time "
                                      "(the tok/s a user sees, queueing included)"),
        "load_speedup_pairs": "drafting load rows: requests paired with the plain row (same request id and prompt)",
    }

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        row = row or {}
        return {c: row.get(c, NAN) for c in LoadSpeedup.columns}

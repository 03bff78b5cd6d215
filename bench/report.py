"""The summary table printed at the end of a headless run."""
from __future__ import annotations

import math

from bench.rows import RANDOM_WEIGHTS_NOTE

COLUMNS = [  # (row key, header, format)
    ("method", "method", "{}"), ("setting", "setting", "{}"), ("engine", "engine", "{}"),
    ("quantization", "quant", "{}"), ("attention", "attn", "{}"), ("status", "status", "{}"),
    ("latency_ms_median", "latency ms", "{:.1f}"), ("latency_ms_p90", "p90 ms", "{:.1f}"),
    ("ttft_ms_median", "TTFT ms", "{:.1f}"), ("tpot_ms_median", "TPOT ms", "{:.2f}"),
    ("tokens_per_s_per_sequence_median", "tok/s/seq", "{:.1f}"),
    ("tokens_per_s_per_sequence_std", "±", "{:.1f}"),
    ("aggregate_tokens_per_s_median", "agg tok/s", "{:.1f}"),
    ("peak_allocated_mib", "peak MiB", "{:.0f}"), ("acceptance_rate", "accept", "{:.2f}"),
    ("mean_accepted_tokens", "tok/fwd", "{:.2f}"), ("speedup_vs_standard", "speedup", "{:.2f}x"),
]


def cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def table(rows: list[dict]) -> str:
    grid = [[h for _, h, _ in COLUMNS]] + [[cell(r.get(k), f) for k, _, f in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = "\n".join(lines)
    notes = [
        "tok/s/seq = one sequence's new tokens / its call's latency (what a user waits for); agg tok/s = all",
        "new tokens of a call / its latency (throughput). Compare each only with itself. speedup = tok/s/seq vs standard.",
    ]
    errors = [f"{r['method']} [{r['setting']}]: {r['status']}: {r['error']}" for r in rows if r.get("status") != "ok"]
    if any(RANDOM_WEIGHTS_NOTE in str(r.get("notes", "")) for r in rows):
        notes.append("Random weights: acceptance figures (accept, tok/fwd) mean nothing; draft and target never agree.")
    for r in rows:
        for n in str(r.get("notes") or "").split("; "):
            if n and n != RANDOM_WEIGHTS_NOTE and f"note: {n}" not in notes:
                notes.append(f"note: {n}")
    return "\n".join([out, ""] + notes + errors)

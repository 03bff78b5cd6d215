"""The summary table printed at the end of a headless run (the dashboard's Run table uses the same cells).

Each figure is shown with what stands behind it: the 95% interval of per-sequence speed, a `!` on
rows whose interval is wider than 10% of the median, and speedups rounded to what their interval
supports, `n.s.` (no significant difference) when it contains 1."""
from __future__ import annotations

import math

from metrics.rows import RANDOM_WEIGHTS_NOTE

# (row key, header, format): a format string, or the name of a cell function below
COLUMNS = [
    ("method", "method", "{}"), ("setting", "setting", "{}"), ("engine", "engine", "{}"),
    ("quantization", "quant", "{}"), ("attention", "attn", "{}"), ("status", "status", "{}"),
    ("repetitions", "reps", "{}"),
    ("latency_ms_median", "latency ms", "{:.1f}"), ("latency_ms_p90", "p90 ms", "{:.1f}"),
    ("ttft_ms_median", "TTFT ms", "{:.1f}"), ("tpot_ms_median", "TPOT ms", "{:.2f}"),
    ("tokens_per_s_per_sequence_median", "tok/s/seq", "{:.1f}"),
    ("tokens_per_s_per_sequence", "95% CI", "interval"), ("unstable", "!", "unstable"),
    ("aggregate_tokens_per_s_median", "agg tok/s", "{:.1f}"),
    ("peak_allocated_mib", "peak MiB", "{:.0f}"), ("joules_per_token", "J/tok", "{:.3f}"),
    ("mbu", "MBU", "{:.2f}"), ("acceptance_rate", "accept", "{:.2f}"),
    ("mean_accepted_tokens", "tok/fwd", "{:.2f}"), ("speedup_vs_standard", "speedup", "speedup"),
    ("predicted_speedup", "predicted", "{:.2f}x"),
    ("target_nll", "NLL", "{:.2f}"), ("greedy_match", "=greedy", "{:.2f}"), ("heldout_ppl", "ppl", "{:.1f}"),
]


def missing(value) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def interval(row: dict, stem: str) -> str:
    low, high = row.get(f"{stem}_ci_low"), row.get(f"{stem}_ci_high")
    if missing(low) or missing(high):
        return "-"
    return f"{low:.1f}-{high:.1f}"


def unstable(row: dict, key: str) -> str:
    return "!" if row.get(key) in (True, "True", "true") else ""


def speedup(row: dict, key: str) -> str:
    """Digits the interval supports: a half-width of 0.05 earns one decimal, 0.005 two; n.s. when it holds 1."""
    value, low, high = row.get(key), row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if missing(value):
        return "-"
    if missing(low) or missing(high) or high - low < 1e-12:  # the baseline against itself
        return f"{value:.2f}x"
    half = max((high - low) / 2, 1e-9)
    digits = min(3, max(0, -math.floor(math.log10(half))))
    text = f"{value:.{digits}f}x"
    return text + " n.s." if low <= 1.0 <= high else text


CELLS = {"interval": interval, "unstable": unstable, "speedup": speedup}
K_SWEEP_GROUP = ("run_id", "method", "do_sample", "engine", "quantization", "attention")


def best_k(rows: list[dict]) -> set[int]:
    """Indexes of the rows whose k gives the fastest per-sequence speed among the rows that differ only by k."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if r.get("status") == "ok" and not missing(r.get("num_draft_tokens")) and \
                not missing(r.get("tokens_per_s_per_sequence_median")):
            groups.setdefault(tuple(str(r.get(k)) for k in K_SWEEP_GROUP), []).append(i)
    best = set()
    for members in groups.values():
        if len({str(rows[i]["num_draft_tokens"]) for i in members}) > 1:
            best.add(max(members, key=lambda i: rows[i]["tokens_per_s_per_sequence_median"]))
    return best


def cell_text(row: dict, key: str, fmt: str) -> str:
    if fmt in CELLS:
        return CELLS[fmt](row, key)
    value = row.get(key)
    if missing(value):
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


# Load rows (scenarios/load.py): per-request latencies at a load point, and what the engine delivered there.
LOAD_COLUMNS = [
    ("method", "method", "{}"), ("setting", "setting", "{}"), ("engine", "engine", "{}"), ("status", "status", "{}"),
    ("requests", "reqs", "{:.0f}"), ("failed_requests", "failed", "{:.0f}"), ("request_throughput", "req/s", "{:.2f}"),
    ("output_tokens_per_s", "out tok/s", "{:.1f}"), ("ttft_ms_median", "TTFT ms", "{:.1f}"),
    ("ttft_ms_p90", "TTFT p90", "{:.1f}"), ("tpot_ms_median", "TPOT ms", "{:.2f}"), ("tpot_ms_p90", "TPOT p90", "{:.2f}"),
    ("itl_ms_median", "ITL ms", "{:.2f}"), ("e2e_ms_median", "e2e ms", "{:.1f}"), ("queue_ms_median", "queue ms", "{:.1f}"),
    ("goodput", "goodput", "{:.2f}"), ("sender_lagged", "lag!", "unstable"),
]


def is_load_row(row: dict) -> bool:
    return not missing(row.get("concurrency")) or not missing(row.get("request_rate"))


def grid_text(rows: list[dict], columns: list, starred: set[int] = frozenset()) -> str:
    grid = [[h for _, h, _ in columns]] + [[cell_text(r, k, f) + (" *" if k == "setting" and i in starred else "")
                                            for k, _, f in columns] for i, r in enumerate(rows)]
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def load_table(rows: list[dict]) -> str:
    slo = {(r.get("slo_ttft_ms"), r.get("slo_tpot_ms")) for r in rows if r.get("status") == "ok"}
    notes = [
        "Per request: TTFT = send to first token (queueing included), TPOT = (last - first token) / (tokens - 1),",
        "ITL = gap between tokens (an event of k tokens is k gaps); medians and p90 (p90 from 10 requests).",
        "req/s and out tok/s = finished requests and their tokens / the load's duration; goodput = req/s within the SLOs"
        + (" (none set: goodput = req/s)." if slo == {(0.0, 0.0)} else
           f" (TTFT <= {next(iter(slo))[0]:g} ms, TPOT <= {next(iter(slo))[1]:g} ms; 0 = no target)." if len(slo) == 1
           else "."),
        "lag! = the load generator sent more than 10 ms late (p99): that row measured the client, not the engine.",
    ]
    errors = [f"{r['method']} [{r['setting']}] on {r['engine']}: {r['status']}: {r['error']}"
              for r in rows if r.get("status") != "ok"]
    notes += turn_lines(rows)
    for r in rows:
        for n in str(r.get("notes") or "").split("; "):
            if n and f"note: {n}" not in notes:
                notes.append(f"note: {n}")
    return "\n".join([grid_text(rows, LOAD_COLUMNS), ""] + notes + errors)


def turn_lines(rows: list[dict]) -> list[str]:
    """Multi-turn rows: the median TTFT of each turn, where a prefix cache shows (later turns answered sooner)."""
    out = []
    for r in rows:
        text = r.get("ttft_ms_by_turn")
        if r.get("status") == "ok" and isinstance(text, str) and text.strip():
            values = " · ".join(f"{float(v):.0f}" for v in text.split())
            out.append(f"TTFT by turn (ms, medians), {r['method']} [{r['setting']}] on {r['engine']}: {values}")
    return out


def table(rows: list[dict]) -> str:
    if rows and all(is_load_row(r) for r in rows):
        return load_table(rows)
    starred = best_k(rows)
    grid = [[h for _, h, _ in COLUMNS]] + [[cell_text(r, k, f) + (" *" if k == "setting" and i in starred else "")
                                            for k, _, f in COLUMNS] for i, r in enumerate(rows)]
    widths = [max(len(line[i]) for line in grid) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = "\n".join(lines)
    notes = [
        "tok/s/seq = one sequence's new tokens / its call's latency (what a user waits for); agg tok/s = all",
        "new tokens of a call / its latency (throughput). Compare each only with itself. speedup = tok/s/seq vs standard,",
        "paired per prompt and repetition (geometric mean). 95% CI: bootstrap interval of the median tok/s/seq;",
        "! = unstable (CI half-width above 10% of the median: more repetitions or a quieter machine);",
        "n.s. = no significant difference from standard (the speedup's CI contains 1).",
        "NLL = mean negative log-likelihood per token of the text under the unquantized target (lower = likelier);",
        "=greedy = share of sequences token-identical to standard greedy's; ppl = the target's held-out perplexity.",
    ]
    if starred:
        notes.append("* = the best k of a num_draft_tokens sweep (fastest tok/s/seq among rows differing only by k).")
    errors = [f"{r['method']} [{r['setting']}]: {r['status']}: {r['error']}" for r in rows if r.get("status") != "ok"]
    if any(RANDOM_WEIGHTS_NOTE in str(r.get("notes", "")) for r in rows):
        notes.append("Random weights: acceptance figures (accept, tok/fwd) mean nothing; draft and target never agree.")
    notes += regime_notes(rows)
    for r in rows:
        for n in str(r.get("notes") or "").split("; "):
            if n and n != RANDOM_WEIGHTS_NOTE and f"note: {n}" not in notes:
                notes.append(f"note: {n}")
    return "\n".join([out, ""] + notes + errors)


def regime_notes(rows: list[dict]) -> list[str]:
    """Which regime each engine's rows ran in (the `regime` column, from MBU): a comparison of methods on a
    host-bound engine mostly measures Python, not decoding."""
    by_engine: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("status") == "ok" and not missing(r.get("regime")) and r.get("regime"):
            by_engine.setdefault(str(r["engine"]), []).append(r)
    if not by_engine:
        return ["regime: not measured here (MBU needs a GPU's copy bandwidth); on a GPU, eager generate is "
                "host-bound and compiled engines bandwidth-bound"] if rows else []
    parts = []
    for engine, rs in by_engine.items():
        kinds = sorted({r["regime"] for r in rs})
        mbus = [float(r["mbu"]) for r in rs if not missing(r.get("mbu"))]
        parts.append(f"{engine} {'/'.join(kinds)} (MBU {min(mbus):.2f}-{max(mbus):.2f})" if len(mbus) > 1 else
                     f"{engine} {'/'.join(kinds)} (MBU {mbus[0]:.2f})")
    return ["regime by engine: " + "; ".join(parts) + ". MBU = bytes read per token / TPOT / copy bandwidth; "
            "host-bound below 0.10 (Python and launches: drafting cannot help), bandwidth-bound from 0.30."]

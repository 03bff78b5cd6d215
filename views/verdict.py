"""A run's rows turned into a short verdict: warnings first, then answers in plain words, each with its figure
and 95% interval. The CLI prints `text()` under its table, the Results page and the HTML report show `html()`,
History shows `markdown()`; one function decides what all of them say.

    v = verdict(rows)            # rows: dicts as in runs.csv (the runner's, or DataFrame.to_dict("records"))
    print(v.text())

The rules: a difference whose interval holds 1 is never called faster ("no measurable difference (n.s.)");
rows whose intervals overlap at the top are named as a tie. Two rows of the same run, engine and variant are
compared by their paired speedups over standard (the sharper test), any others by their own intervals.
"""
from __future__ import annotations

import math

from decoding import BASELINE, METHODS
from metrics.rows import RANDOM_WEIGHTS_NOTE
from store.notebook import text as cell
from views import compare, table
from views.verdict_forms import Answer, Verdict

GROUP = ("run_id", "engine", "quantization", "attention")  # rows paired with the same standard row
WORKLOAD = ("max_new_tokens", "num_prompts", "prompt_tokens", "dtype", "device", "device_name", "cpu_model")
MOST = 0.5  # more than this share of rows unstable: a warning
MAX_TIES = 3  # tied rows named; the rest are counted


def num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def flag(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0", "yes")


def is_load(row: dict) -> bool:
    return not math.isnan(num(row.get("concurrency"))) or not math.isnan(num(row.get("request_rate")))


def has(rows, key: str) -> list[dict]:
    """The rows with a positive figure in key."""
    return [r for r in rows if num(r.get(key)) > 0]


def bounds(row: dict, stem: str) -> tuple[float, float]:
    return num(row.get(f"{stem}_ci_low")), num(row.get(f"{stem}_ci_high"))


def ci(row: dict, stem: str, digits: int = 1) -> str:
    low, high = bounds(row, stem)
    return "" if math.isnan(low) or math.isnan(high) else f"95% CI {low:.{digits}f}-{high:.{digits}f}"


def is_baseline(row: dict) -> bool:
    return str(row.get("method")) == BASELINE and not flag(row.get("do_sample"))


def group(row: dict) -> tuple:
    return tuple(cell(row.get(k)) for k in GROUP)


class Labels:
    """`method [setting] on engine`, with the quantization when there is one, and the run when several."""

    def __init__(self, rows: list[dict]):
        self.several = len({cell(r.get("run_id")) for r in rows}) > 1

    def __call__(self, row: dict) -> str:
        out = f"{cell(row.get('method'))} [{cell(row.get('setting'))}] on {cell(row.get('engine'))}"
        out += "" if cell(row.get("quantization")) in ("", "none") else f" {cell(row.get('quantization'))}"
        if self.several:
            out += f" (run {cell(row.get('run_name')) or cell(row.get('run_id'))})"
        return out


def ratio(row: dict, key: str, what: str = "standard's speed") -> str:
    """`1.5x standard's (95% CI 1.3-1.7x)`, or no measurable difference when the interval holds 1."""
    value, (low, high) = num(row.get(key)), bounds(row, key)
    if math.isnan(value) or is_baseline(row):
        return ""
    shown = table.speedup(row, key).replace(" n.s.", "")
    if math.isnan(low) or math.isnan(high):
        return f"{shown} {what}"
    interval = f"95% CI {low:.2f}-{high:.2f}x"
    if low <= 1.0 <= high:
        return f"no measurable difference from standard (n.s.: {shown}, {interval})"
    return f"{shown} {what} ({interval}, {'faster' if low > 1 else 'slower'})"


def tied(a: dict, b: dict, stem: str, key: str) -> bool:
    """Whether b cannot be told apart from a: by the paired ratio when both stand against the same standard row,
    else by their own intervals (no intervals: only equal medians tie)."""
    if key and group(a) == group(b):
        ra = (1.0, 1.0) if is_baseline(a) else bounds(a, key)
        rb = (1.0, 1.0) if is_baseline(b) else bounds(b, key)
        if not any(math.isnan(x) for x in ra + rb):
            return ra[0] <= rb[1] and rb[0] <= ra[1]
    (la, ha), (lb, hb) = bounds(a, stem), bounds(b, stem)
    if any(math.isnan(x) for x in (la, ha, lb, hb)):
        return num(a.get(f"{stem}_median")) == num(b.get(f"{stem}_median"))
    return la <= hb and lb <= ha


def best(rows: list[dict], stem: str, key: str = "") -> tuple[dict | None, list[dict]]:
    """The top row by the median of stem and the rows tied with it, in order."""
    rows = has(rows, f"{stem}_median")
    if not rows:
        return None, []
    ranked = sorted(rows, key=lambda r: num(r.get(f"{stem}_median")), reverse=True)
    return ranked[0], [r for r in ranked[1:] if tied(ranked[0], r, stem, key)]


def baseline_of(row: dict, rows: list[dict]) -> dict | None:
    return next((r for r in rows if is_baseline(r) and group(r) == group(row)), None)


def quality(row: dict, rows: list[dict]) -> str:
    parts = []
    match = num(row.get("greedy_match"))
    if not math.isnan(match) and not is_baseline(row):
        parts.append(f"greedy match {match:.0%}")
    nll, base = num(row.get("target_nll")), baseline_of(row, rows)
    base_nll = num(base.get("target_nll")) if base else math.nan
    if not math.isnan(nll):
        parts.append(f"NLL {nll - base_nll:+.2f} vs standard" if not math.isnan(base_nll) and base is not row
                     else f"NLL {nll:.2f}")
    return ", ".join(parts)


def short(label, stem: str, digits: int = 1, unit: str = "tok/s"):
    key = stem if stem.startswith(("capacity", "cost")) else f"{stem}_median"
    return lambda r: f"{label(r)} ({num(r.get(key)):.{digits}f}{' ' + unit if unit else ''})"


def tie_words(top: dict, ties: list[dict], describe, short, others: int = 0) -> str:
    """`describe(top)`, or the tie named as one: its size, the top row described, the others by name. With no
    tie, the `others` compared rows are all measurably below it, and the answer says so."""
    if not ties:
        return describe(top) + (f"; the other {others} row{'s are' if others > 1 else ' is'} measurably slower"
                                if others else "")
    more = f" and {len(ties) - MAX_TIES} more" if len(ties) > MAX_TIES else ""
    return (f"a tie between {len(ties) + 1} rows (their intervals overlap). Highest median: {describe(top)}. "
            f"Tied with it: {', '.join(short(r) for r in ties[:MAX_TIES])}{more}.")


def fastest(rows: list[dict], label) -> Answer | None:
    stem, key = "tokens_per_s_per_sequence", "speedup_vs_standard"
    top, ties = best(rows, stem, key)
    if top is None:
        return None

    def describe(r):
        figure = f"{num(r.get(f'{stem}_median')):.1f} tok/s per sequence"
        interval = ci(r, stem)
        parts = [f"{label(r)} {figure}" + (f" ({interval})" if interval else ""), ratio(r, key), quality(r, rows)]
        return ", ".join(p for p in parts if p)

    compared = [r for r in rows if r is not top and num(r.get(f"{stem}_median")) == num(r.get(f"{stem}_median"))]
    return Answer("Fastest for one user", tie_words(top, ties, describe, short(label, stem), len(compared)))


def throughput(rows: list[dict], label, one_user: dict | None) -> Answer | None:
    stem, key = "aggregate_tokens_per_s", "throughput_vs_standard"
    top, ties = best(rows, stem, key)
    if top is None:
        return None

    def describe(r):
        interval = ci(r, stem)
        batch = "" if "batch_size=" in cell(r.get("setting")) else f" at batch size {cell(r.get('batch_size')) or '?'}"
        head = (f"{label(r)}{batch}: "
                f"{num(r.get(f'{stem}_median')):.1f} tok/s in all" + (f" ({interval})" if interval else ""))
        parts = [head, ratio(r, key, "standard's throughput")]
        per_seq, best_seq = num(r.get("tokens_per_s_per_sequence_median")), num(
            (one_user or {}).get("tokens_per_s_per_sequence_median"))
        if one_user is r:
            parts.append("at no per-sequence cost: it is also the fastest one-user row")
        elif per_seq > 0 and best_seq > 0:
            cost = 1 - per_seq / best_seq
            parts.append(f"each sequence gets {per_seq:.1f} tok/s"
                         + (f", {cost:.0%} less than the fastest one-user row ({best_seq:.1f})" if cost >= 0.005
                            else ", as fast as the fastest one-user row"))
        return ", ".join(p for p in parts if p)

    return Answer("Highest throughput", tie_words(top, ties, describe, short(label, stem)))


def slo_words(rows: list[dict]) -> str:
    targets = {(num(r.get("slo_ttft_ms")), num(r.get("slo_tpot_ms"))) for r in rows}
    if len(targets) != 1:
        return "at each row's SLOs"
    ttft, tpot = next(iter(targets))
    parts = [f"TTFT <= {ttft:g} ms" if ttft > 0 else "", f"TPOT <= {tpot:g} ms" if tpot > 0 else ""]
    parts = [p for p in parts if p]
    return f"within {' and '.join(parts)}" if parts else "with no SLO set (goodput = finished requests/s)"


def point(row: dict) -> str:
    rate, conc = num(row.get("request_rate")), num(row.get("concurrency"))
    return f"{rate:g} req/s offered" if not math.isnan(rate) else f"concurrency {conc:g}"


def under_load(rows: list[dict], label) -> list[Answer]:
    out = []
    good = [r for r in rows if not math.isnan(num(r.get("goodput")))]
    if good:
        top = max(good, key=lambda r: num(r.get("goodput")))
        finished = num(top.get("request_throughput"))
        out.append(Answer("Under load", f"{label(top)} at {point(top)}: {num(top.get('goodput')):.2f} req/s "
                          f"{slo_words(good)}" + (f", of {finished:.2f} req/s finished" if finished >= 0 else "")))
    for key, unit in (("capacity_rps", "req/s"), ("capacity_concurrency", "requests in flight")):
        if capped := sorted(has(rows, key), key=lambda r, k=key: -num(r.get(k))):
            out.append(Answer("Capacity", capacity_words(capped, key, unit, label)))
    return out


def capacity_words(capped: list[dict], key: str, unit: str, label) -> str:
    """The highest capacity with its one-sided bound, the searches within that bound as a tie, the rest below."""
    top, low = capped[0], num(capped[0].get(f"{key}_ci_low"))
    ties = [r for r in capped[1:] if num(r.get(key)) >= low]

    def describe(r):
        bound = num(r.get(f"{key}_ci_low"))
        return (f"{label(r)} sustains {num(r.get(key)):.2f} {unit} {slo_words([r])}"
                + (f" (one-sided 95% lower bound {bound:.2f} {unit})" if not math.isnan(bound) else ""))

    text = tie_words(top, ties, describe, short(label, key, 2, unit))
    if rest := [r for r in capped[1:] if r not in ties]:
        text += "; below it: " + ", ".join(f"{label(r)} {num(r.get(key)):.2f} {unit} (bound "
                                           f"{num(r.get(f'{key}_ci_low')):.2f})" for r in rest)
    return text


def memory(rows: list[dict], label) -> Answer | None:
    gpu = has(rows, "peak_allocated_mib")
    key, what = ("peak_allocated_mib", "peak allocated on the GPU") if gpu else ("peak_rss_mib", "peak process RAM")
    measured = gpu or has(rows, "peak_rss_mib")
    parts = []
    if measured:
        low = min(measured, key=lambda r: num(r.get(key)))
        high = max(measured, key=lambda r: num(r.get(key)))
        parts.append(f"lowest {what}: {label(low)}, {num(low.get(key)):.0f} MiB"
                     + (f" (highest: {num(high.get(key)):.0f} MiB, {label(high)})"
                        if num(high.get(key)) > num(low.get(key)) * 1.01 else
                        " (every row within 1% of it)" if len(measured) > 1 else ""))
    ppl: dict[str, list[float]] = {}
    for r in has(rows, "heldout_ppl"):
        ppl.setdefault(cell(r.get("quantization")) or "none", []).append(num(r.get("heldout_ppl")))
    plain = min(ppl["none"]) if "none" in ppl else math.nan
    for quant in sorted(q for q in ppl if q != "none"):
        value = min(ppl[quant])
        parts.append(f"{quant} held-out perplexity {value:.2f} vs {plain:.2f} unquantized ({value / plain - 1:+.1%})"
                     if plain > 0 else f"{quant} held-out perplexity {value:.2f} (no unquantized row to compare)")
    return Answer("Memory and quantization", "; ".join(parts)) if parts else None


def cheapest(rows: list[dict], label, stem: str, topic: str) -> Answer | None:
    priced = has(rows, stem)
    if not priced:
        return None
    ranked = sorted(priced, key=lambda r: num(r.get(stem)))
    top = ranked[0]
    ties = [r for r in ranked[1:] if not math.isnan(bounds(top, stem)[1])
            and bounds(r, stem)[0] <= bounds(top, stem)[1]]

    def describe(r):
        currency = cell(r.get("currency"))
        interval = ci(r, stem, 2)
        return f"{label(r)} {num(r.get(stem)):.2f}{' ' + currency if currency else ''}" + (
            f" ({interval})" if interval else "")

    return Answer(topic, tie_words(top, ties, describe, short(label, stem, 2, "")))


def against(rows: list[dict], baseline: str, label) -> list[Answer]:
    """For History: each other run's fastest row against the baseline run's row of the same method and setting."""
    base = [r for r in rows if cell(r.get("run_id")) == str(baseline)]
    out = []
    for run_id in dict.fromkeys(cell(r.get("run_id")) for r in rows):
        if run_id == str(baseline):
            continue
        top, _ = best([r for r in rows if cell(r.get("run_id")) == run_id], "tokens_per_s_per_sequence")
        match = next((b for b in base if all(cell(b.get(k)) == cell(top.get(k)) for k in compare.ROW_MATCH)),
                     None) if top else None
        if match is None:
            continue
        change, low, high = compare.change_interval(match, top, "tokens_per_s_per_sequence_median",
                                                    "tokens_per_s_per_sequence")
        if math.isnan(change):
            continue
        words = (f"no measurable difference (n.s.: {change:+.1f}%, 95% CI {low:+.1f} to {high:+.1f}%)"
                 if not math.isnan(low) and low <= 0 <= high else
                 f"{change:+.1f}% tok/s per sequence" + (f" (95% CI {low:+.1f} to {high:+.1f}%)"
                                                         if not math.isnan(low) else ""))
        out.append(Answer("Against the baseline run", f"{label(top)}, this run's fastest row, vs the same row of "
                                                      f"the baseline run: {words}"))
    return out


def warnings(rows: list[dict], ok: list[dict], label) -> list[str]:
    out = []
    failed = len(rows) - len(ok)
    if failed:
        out.append(f"{failed} of {len(rows)} rows failed; the verdict reads the {len(ok)} that finished."
                   if ok else "no row finished: there is nothing to compare.")
    judged = [r for r in ok if cell(r.get("unstable")) != ""]
    shaky = [r for r in judged if flag(r.get("unstable"))]
    if judged and len(shaky) == len(judged):
        out.append(f"every row is unstable ({'its' if len(judged) == 1 else 'each'} per-sequence tok/s interval "
                   "is wider than 10% of the median either side): differences may be noise; run more repetitions "
                   "or on a quieter machine.")
    elif len(shaky) > MOST * len(judged):
        out.append(f"most rows ({len(shaky)} of {len(judged)}) are unstable (the per-sequence tok/s interval is "
                   "wider than 10% of the median either side): differences may be noise.")
    lagged = [r for r in ok if flag(r.get("sender_lagged"))]
    if lagged:
        out.append(f"the load generator lagged on {len(lagged)} row(s) (sent more than 10 ms late, p99): those rows "
                   "measured the client, not the engine.")
    if any(flag(r.get("random_weights")) or RANDOM_WEIGHTS_NOTE in str(r.get("notes") or "") for r in ok):
        out.append("random weights: the texts are noise and acceptance figures are meaningless.")
    for kind in ([r for r in ok if not is_load(r)], [r for r in ok if is_load(r)]):
        differ = []
        for key in WORKLOAD:
            values = list(dict.fromkeys(
                f"{num(r.get(key)):.1f}" if key == "prompt_tokens" and not math.isnan(num(r.get(key)))
                else cell(r.get(key)) for r in kind))
            values = [v for v in values if v not in ("", "nan")]
            if len(values) > 1:
                differ.append(f"{key} {', '.join(values[:4])}")
        if differ:
            out.append(f"the compared rows ran different workloads ({'; '.join(differ)}): compare only rows that "
                       "ran the same.")
    for r in ok:
        spec, match = METHODS.get(str(r.get("method"))), num(r.get("greedy_match"))
        if spec and spec.drafts and not flag(r.get("do_sample")) and match < 1.0:
            out.append(f"{label(r)} is lossless, yet only {match:.0%} of its sequences match greedy "
                       f"(greedy_match {match:.2f} < 1.0): its texts differ from standard's.")
    return out


def verdict(rows, baseline: str | None = None) -> Verdict:
    """The verdict on rows (one run, or the runs History picked; baseline: the run the others are held against)."""
    rows = [dict(r) for r in rows]
    ok = [r for r in rows if str(r.get("status")) == "ok"]
    label = Labels(ok)
    calls, load = [r for r in ok if not is_load(r)], [r for r in ok if is_load(r)]
    answers = []
    one_user = fastest(calls, label)
    answers.append(one_user)
    answers.append(throughput(calls, label, best(calls, "tokens_per_s_per_sequence")[0]))
    answers.extend(under_load(load, label))
    answers.append(memory(ok, label))
    answers.append(cheapest(ok, label, "cost_per_million_tokens", "Cheapest per million tokens"))
    answers.append(cheapest(load, label, "cost_per_million_good_tokens", "Cheapest per million good tokens"))
    if baseline and any(cell(r.get("run_id")) == str(baseline) for r in ok):
        answers.extend(against(ok, baseline, label))
    return Verdict(warnings(rows, ok, label), [a for a in answers if a])

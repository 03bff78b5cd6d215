"""Plotly figures of result rows: pure functions DataFrame -> Figure, shared by the dashboard and reports.

    fig = charts.tokens_per_s(store.load_rows("results/runs.csv"))
    figs = {name: draw(rows) for name, draw in charts.FIGURES.items()}

Every function takes rows as the store writes them (any subset of runs) and draws only rows with
status ok. One run: one bar per method x setting, coloured by method. Several runs: one colour per
run, so the same method lines up side by side. Per-sequence tok/s (what one user waits for) and
aggregate tok/s (all sequences of a call) never share a chart: `tokens_per_s` and `speedup` use the
first, `batch_throughput` the second.

FIGURES is the registry: the dashboard lays out every entry, in order, on Results and History, so a
new chart is one function plus one line there. Method order and colours come from decoding.METHODS;
charts about a kind of method pick rows by the method's attributes (drafts, sweeps_batch), not names.
"""
from __future__ import annotations

import html
import re
import textwrap

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from decoding import BASELINE, METHODS
from metrics.rows import RANDOM_WEIGHTS_NOTE
from metrics.trace import inter_token_ms, parse_times
from views.layout import laid_out, laid_out_by  # noqa: F401  (laid_out: for figures drawn outside FIGURES)
from store.notebook import run_labels
from views import load_decisions, pareto

# Row keys shown on hover, so a bar can be traced to the exact settings that produced it.
HOVER_KEYS = [
    "run_id", "method", "setting", "engine", "model", "draft_model", "dtype", "quantization", "attention",
    "device", "device_name", "batch_size", "do_sample", "temperature", "top_p", "top_k", "num_beams",
    "num_return_sequences", "num_draft_tokens", "max_new_tokens", "num_prompts", "sequences", "warmup",
    "repetitions", "calls", "random_weights", "notes",
]
NUMERIC = [
    "batch_size", "tokens_per_s_per_sequence_median", "tokens_per_s_per_sequence_std",
    "aggregate_tokens_per_s_median", "aggregate_tokens_per_s_std", "latency_ms_median", "ttft_ms_median",
    "tpot_ms_median", "tpot_ms_p90",
    "peak_allocated_mib", "peak_reserved_mib", "speedup_vs_standard", "acceptance_rate", "mean_accepted_tokens",
    "speedup_vs_standard_ci_low", "speedup_vs_standard_ci_high", "predicted_speedup", "draft_step_ratio",
    "drafted_tokens",
]
UNKNOWN_COLOR = "#94a3b8"  # rows of a method this checkout no longer has (old CSVs in History)
DASHES = ["solid", "dot", "dash", "dashdot", "longdash"]
RUN_COLORS = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777"]
VARIANT_KEYS = ["engine", "quantization", "attention", "dtype", "model"]  # appended to labels when they vary
HEIGHT = 340
EMPTY_HEIGHT = 150


def method_color(method) -> str:
    spec = METHODS.get(str(method))
    return spec.color if spec else UNKNOWN_COLOR


def methods_that(attribute: str) -> list[str]:
    """Methods whose spec sets `attribute` (drafts, sweeps_batch, ...), in display order."""
    return [name for name, spec in METHODS.items() if getattr(spec, attribute)]


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Finished rows in method order, figures as numbers, plus `label`, `run` and `hover` columns."""
    if df is None or df.empty:
        return pd.DataFrame(columns=["label", "run", "hover", "method"])
    d = df[df["status"].astype(str) == "ok"].copy()
    if d.empty:
        return d.assign(label=[], run=[], hover=[])
    for c in NUMERIC:
        if c in d:
            d[c] = pd.to_numeric(d[c], errors="coerce")
    rank = {m: i for i, m in enumerate(METHODS)}
    d["_order"] = d["method"].map(rank).fillna(len(METHODS))
    d = d.sort_values(["run_id", "_order", "batch_size"], kind="stable")
    varying = [k for k in VARIANT_KEYS if k in d and d[k].astype(str).nunique() > 1]
    from views.table import best_k

    # The best k of a k sweep is marked on its bar (outline, ★), never in the category: the same setting of
    # two runs must share one category to be drawn side by side.
    starred = best_k(d.to_dict("records"))
    d["best_k"] = [i in starred for i in range(len(d))]
    d["label"] = d["method"].astype(str) + " [" + d["setting"].astype(str) + "]"
    for k in varying:
        d["label"] += " · " + d[k].astype(str)
    d["run"] = d["run_id"].astype(str).map(run_labels(d))  # legends: `name or run id · device name`
    d["hover"] = [hover_text(r) for r in d[[k for k in HOVER_KEYS if k in d]].to_dict("records")]  # only what is shown
    return d


def hover_text(row: dict) -> str:
    lines = []
    for k in HOVER_KEYS:
        v = row.get(k)
        if v is None or (isinstance(v, float) and pd.isna(v)) or str(v) in ("", "nan", "<NA>"):
            continue
        lines.append(f"{k}: {html.escape(str(v))}")
    return "<br>".join(lines)


def empty(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    # Plotly never wraps an annotation: a long message would run past a half-width card at 800 px.
    message = "<br>".join(textwrap.wrap(message, 40))
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=14, color="#64748b"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    # Short: a run fills only some charts (per-call or load ones), and the page should not be mostly blank cards.
    return style(fig, title).update_layout(height=EMPTY_HEIGHT, margin=dict(t=50, b=10))


def style(fig: go.Figure, title: str, y_title: str = "", x_title: str = "") -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.01, font=dict(size=15)), template="plotly_white", height=HEIGHT,
        margin=dict(l=60, r=20, t=70, b=40), legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1,
                                                         xanchor="right"),
        hoverlabel=dict(align="left", font_size=11), bargap=0.25)
    if y_title:
        fig.update_yaxes(title_text=y_title)
    if x_title:
        fig.update_xaxes(title_text=x_title)
    fig.update_xaxes(tickangle=-30, automargin=True)
    # Every quantity drawn here (speeds, times, memory, ratios, shares, NLL) is >= 0: a wide interval or a
    # std larger than the median must not pull an axis below zero.
    fig.update_yaxes(rangemode="nonnegative")
    return fig


def whiskers(part: pd.DataFrame, y: str, ci: str | None, error: str | None):
    """Asymmetric 95% CI whiskers from the `{ci}_ci_low/_ci_high` columns; a std bar for older CSVs, cut at
    zero, since none of these quantities can be negative."""
    if ci and f"{ci}_ci_low" in part and part[f"{ci}_ci_low"].notna().any():
        low, high = (pd.to_numeric(part[f"{ci}_ci_{e}"], errors="coerce") for e in ("low", "high"))
        return dict(type="data", symmetric=False, array=(high - part[y]).clip(lower=0).fillna(0),
                    arrayminus=(part[y] - low).clip(lower=0).fillna(0), visible=True, thickness=1.2), \
            [f" [95% CI {lo:.3g}–{hi:.3g}]" if pd.notna(lo) else "" for lo, hi in zip(low, high)]
    if error and error in part:
        err = pd.to_numeric(part[error], errors="coerce")
        return dict(type="data", symmetric=False, array=err.fillna(0), arrayminus=err.clip(upper=part[y]).fillna(0),
                    visible=True, thickness=1.2), [f" ± {e:.3g} (std)" if pd.notna(e) else "" for e in err]
    return None, [""] * len(part)


def is_unstable(part: pd.DataFrame) -> list[bool]:
    return [str(v).lower() == "true" for v in part.get("unstable", pd.Series([""] * len(part)))]


def bars(d: pd.DataFrame, y: str, error: str | None = None, fmt: str = ".1f", unit: str = "",
         labels: bool = False, also: tuple[str, str] | None = None, ci: str | None = None) -> list[go.Bar]:
    """One trace coloured by method for one run; one trace per run when several are compared.
    ci: stem of the 95% interval columns drawn as whiskers (error: a std column, for CSVs without them);
    unstable rows are hatched and marked `!`. labels: print each value above its bar.
    also: (column, name) of a second figure to name in the hover after the bar's own value."""
    def number(v) -> str:
        return f"{v:{fmt}}{unit}" if pd.notna(v) else "n/a"

    def trace(part: pd.DataFrame, name: str, color, legend: bool) -> go.Bar:
        error_y, spread = whiskers(part, y, ci, error)
        shaky = is_unstable(part) if ci else [False] * len(part)
        first = [number(v) + s + (" · unstable (CI wider than ±10%)" if u else "")
                 for v, s, u in zip(part[y], spread, shaky)]
        if also:
            first = [f"{f} · {also[1]} {number(v)}" for f, v in zip(first, part[also[0]])]
        best = list(part["best_k"]) if "best_k" in part else [False] * len(part)
        text = [number(v) + (" !" if u else "") + (" ★" if b else "") for v, u, b in zip(part[y], shaky, best)] \
            if labels else [("!" if u else "") + ("★" if b else "") for u, b in zip(shaky, best)]
        first = [f + (" · ★ best k of its sweep" if b else "") for f, b in zip(first, best)]
        return go.Bar(
            x=part["label"], y=part[y], name=name, marker_color=color, showlegend=legend,
            marker_pattern_shape=["x" if u else "" for u in shaky],
            marker_line=dict(color="#0f172a", width=[2.5 if b else 0 for b in best]),
            text=text, textposition="outside", cliponaxis=False, error_y=error_y,
            hovertext=[f"<b>{v}</b><br>{h}" for v, h in zip(first, part["hover"])],
            hovertemplate="%{hovertext}<extra></extra>")

    runs = list(dict.fromkeys(d["run"]))
    if len(runs) == 1:
        return [trace(d, runs[0], [method_color(m) for m in d["method"]], False)]
    return [trace(d[d["run"] == r], r, RUN_COLORS[i % len(RUN_COLORS)], True) for i, r in enumerate(runs)]


def tokens_per_s(df: pd.DataFrame) -> go.Figure:
    """Per-sequence decoding speed, median over calls, whiskers = its 95% bootstrap interval."""
    title = "Tokens/s per sequence (median, 95% CI; hatched ! = unstable)"
    d = prepare(df)
    if d.empty:
        return empty(title, "no finished rows yet")
    d = d[d["tokens_per_s_per_sequence_median"].notna()] if "tokens_per_s_per_sequence_median" in d else d.iloc[0:0]
    if d.empty:  # a load run has per-request speeds, not per-call ones: they are under Load
        return empty(title, "no per-call rows: a load run's speeds are on the load charts")
    fig = go.Figure(bars(d, "tokens_per_s_per_sequence_median", "tokens_per_s_per_sequence_std", unit=" tok/s",
                         ci="tokens_per_s_per_sequence"))
    fig = style(fig, title, "tokens/s per sequence")
    fig.update_yaxes(rangemode="tozero")
    return fig


def latency(df: pd.DataFrame) -> go.Figure:
    """Median call latency split into time to first token and the decode time after it."""
    title = "Latency per call: time to first token + decode (median)"
    d = prepare(df)
    if d.empty:
        return empty(title, "no finished rows yet")
    # A call's latency split needs both figures: a load row has per-request TTFTs but no per-call latency.
    d = d[d["latency_ms_median"].notna() & d["ttft_ms_median"].notna()] if "latency_ms_median" in d else d.iloc[0:0]
    if d.empty:
        return empty(title, "no per-call rows: a load run's latencies are on the load charts")
    d["decode_ms"] = (d["latency_ms_median"] - d["ttft_ms_median"]).clip(lower=0)
    runs = list(dict.fromkeys(d["run"]))
    several = len(runs) > 1
    if several:
        title = "Latency per call: time to first token (hatched) + decode (median)"
    fig = go.Figure()
    for i, run in enumerate(runs):
        part = d[d["run"] == run]
        # One stack per run, side by side (offsetgroup); decode sits on TTFT (base).
        for key, name in (("ttft_ms_median", "time to first token"), ("decode_ms", "decode")):
            color = RUN_COLORS[i % len(RUN_COLORS)] if several else ("#f97316" if key == "ttft_ms_median" else "#2563eb")
            fig.add_bar(
                x=part["label"], y=part[key], name=run if several else name, marker_color=color,
                showlegend=not several or key == "decode_ms",  # several runs: the legend names runs
                marker_pattern_shape="/" if several and key == "ttft_ms_median" else "",
                offsetgroup=run, base=part["ttft_ms_median"] if key == "decode_ms" else None,
                hovertext=[f"<b>{name}: {v:.1f} ms</b> (latency {t:.1f} ms)<br>{h}"
                           for v, t, h in zip(part[key], part["latency_ms_median"], part["hover"])],
                hovertemplate="%{hovertext}<extra></extra>")
    fig.update_layout(barmode="group", legend_traceorder="normal")
    return style(fig, title, "ms per call")


def time_per_output_token(df: pd.DataFrame) -> go.Figure:
    """Decode time per new token after the first, median over calls. The p90 tick is there because the
    median hides the slow calls a user also waits through (long drafts rejected, a batch's longest sequence)."""
    title = "Time per output token (bar = median, tick = p90)"
    d = prepare(df)
    if d.empty:
        return empty(title, "no finished rows yet")
    if "tpot_ms_p90" not in d:
        d["tpot_ms_p90"] = float("nan")
    d = d[d["tpot_ms_median"].notna()] if "tpot_ms_median" in d else d.iloc[:0]
    if d.empty:
        return empty(title, "no time-per-output-token figures in these rows")
    fig = go.Figure()
    # The ticks share their run's offsetgroup so they sit on that run's bars when runs are grouped.
    for trace in bars(d, "tpot_ms_median", fmt=".2f", unit=" ms", also=("tpot_ms_p90", "p90")):
        trace.offsetgroup = trace.name
        fig.add_trace(trace)
    for i, run in enumerate(dict.fromkeys(d["run"])):
        part = d[d["run"] == run]
        fig.add_scatter(
            x=part["label"], y=part["tpot_ms_p90"], mode="markers", name="p90", legendgroup="p90",
            showlegend=i == 0, offsetgroup=run,
            marker=dict(symbol="line-ew-open", size=18, color="#0f172a", line=dict(width=2.5, color="#0f172a")),
            hovertext=[f"<b>p90 {p:.2f} ms</b> (median {m:.2f} ms)<br>{h}" if pd.notna(p) else "p90 n/a"
                       for p, m, h in zip(part["tpot_ms_p90"], part["tpot_ms_median"], part["hover"])],
            hovertemplate="%{hovertext}<extra></extra>")
    fig.update_layout(barmode="group", scattermode="group")
    return style(fig, title, "ms per output token")


def memory(df: pd.DataFrame) -> go.Figure:
    """Peak GPU memory allocated during the measured calls; for rows without GPU figures (CPU runs), the
    process's peak resident memory (RSS) instead, so a CPU run shows what it held in RAM."""
    title = "Peak GPU memory allocated"
    d = prepare(df)
    if d.empty:
        return empty(title, "no finished rows yet")
    gpu = d[d["peak_allocated_mib"].notna()]
    if gpu.empty:
        rss = d[pd.to_numeric(d.get("peak_rss_mib"), errors="coerce").notna()] if "peak_rss_mib" in d else d.iloc[:0]
        if rss.empty:
            return empty(title, "no memory figures in these rows")
        rss = rss.assign(peak_rss_mib=pd.to_numeric(rss["peak_rss_mib"], errors="coerce"))
        fig = go.Figure(bars(rss, "peak_rss_mib", fmt=".0f", unit=" MiB"))
        return style(fig, "Peak process memory (RSS: CPU RAM, the whole process; no GPU in these rows)", "MiB")
    # Like with like: a graph engine's activations live in its graph pool and every engine's caches sit in the
    # process-wide counter, so a row's own footprint is drawn wherever the row has one (metrics/memory.py).
    if "footprint_mib" in gpu and pd.to_numeric(gpu["footprint_mib"], errors="coerce").notna().all():
        gpu = gpu.assign(footprint_mib=pd.to_numeric(gpu["footprint_mib"], errors="coerce"))
        fig = go.Figure(bars(gpu, "footprint_mib", fmt=".0f", unit=" MiB"))
        return style(fig, "GPU memory each row needs (its weights + engine caches + graph pool + call peak)", "MiB")
    fig = go.Figure(bars(gpu, "peak_allocated_mib", fmt=".0f", unit=" MiB"))
    return style(fig, title, "MiB")


def speedup(df: pd.DataFrame) -> go.Figure:
    """Per-sequence tok/s relative to the baseline method's row of the same run and variant."""
    title = f"Speedup vs {BASELINE} (tokens/s per sequence, paired; 95% CI; n.s. = CI contains 1)"
    d = prepare(df)
    d = d[d["speedup_vs_standard"].notna()] if not d.empty else d
    if d.empty:
        return empty(title, f"needs the {BASELINE} method in the run")
    fig = go.Figure(bars(d, "speedup_vs_standard", fmt=".2f", unit="×", ci="speedup_vs_standard"))
    if d["run"].nunique() == 1:  # each bar says its value as its interval allows, or that it is no difference
        from views.table import speedup as speedup_text

        fig.update_traces(text=[speedup_text(r, "speedup_vs_standard").replace("x", "×")
                                for r in d.to_dict("records")], textfont_size=10)
    fig.add_hline(y=1.0, line_dash="dot", line_color="#475569")
    high = pd.to_numeric(d.get("speedup_vs_standard_ci_high", d["speedup_vs_standard"]), errors="coerce")
    top = max(d["speedup_vs_standard"].max(), high.max() if high.notna().any() else 0, 1.0)
    fig.update_yaxes(range=[0, top * 1.18])  # room for the labels
    return style(fig, title, f"× {BASELINE}")


def acceptance(df: pd.DataFrame) -> go.Figure:
    """How much of the drafted text the target accepts (rows of methods that draft)."""
    title = "Draft acceptance (speculative methods)"
    drafting = methods_that("drafts")
    d = prepare(df)
    d = d[d["method"].isin(drafting)] if not d.empty else d
    if d.empty:
        return empty(title, f"no {' or '.join(drafting)} rows")
    d = d.assign(acceptance_pct=d["acceptance_rate"] * 100)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=("accepted / drafted tokens", "tokens per target forward"))
    fig.update_annotations(font=dict(size=12, color="#475569"))
    for col, key, fmt, unit in ((1, "acceptance_pct", ".1f", " %"), (2, "mean_accepted_tokens", ".2f", " tok")):
        for trace in bars(d, key, fmt=fmt, unit=unit, labels=d["run"].nunique() == 1):
            trace.showlegend = trace.showlegend and col == 1
            fig.add_trace(trace, row=1, col=col)
    fig.update_yaxes(title_text="% of drafted tokens", range=[0, 100], row=1, col=1)
    top = d["mean_accepted_tokens"].max()
    fig.update_yaxes(title_text="tokens / forward", range=[0, (top if pd.notna(top) else 1) * 1.25], row=1, col=2)
    fig.update_traces(textfont_size=10)
    if d["notes"].astype(str).str.contains(RANDOM_WEIGHTS_NOTE, regex=False).any():
        fig.add_annotation(text="random weights: acceptance is meaningless", showarrow=False, xref="paper",
                           yref="paper", x=0.5, y=-0.32, font=dict(color="#b45309", size=12))
    fig = style(fig, title)
    fig.update_layout(margin_t=95, legend_y=1.12)  # clear of the subplot titles
    return fig


def batch_throughput(df: pd.DataFrame) -> go.Figure:
    """Aggregate tok/s of the batch-sweeping methods against batch size: what batching buys in throughput."""
    sweeping = methods_that("sweeps_batch")
    title = f"Aggregate throughput vs batch size ({' and '.join(sweeping)} method{'s' if len(sweeping) > 1 else ''})"
    d = prepare(df)
    d = d[d["method"].isin(sweeping) & d["batch_size"].notna()] if not d.empty else d
    if d.empty:
        return empty(title, f"no {' or '.join(sweeping)} rows with a batch size")
    fig = go.Figure()
    # One line per run, method and variant: the x axis is the only thing that changes along a line.
    several_runs = d["run"].nunique() > 1
    d["line"] = d["run"] if several_runs else d["method"].astype(str)
    if several_runs and d["method"].nunique() > 1:
        d["line"] += " · " + d["method"].astype(str)
    variants = [k for k in VARIANT_KEYS if d[k].astype(str).nunique() > 1]
    for k in variants:
        d["line"] += " · " + d[k].astype(str)
    for i, (name, part) in enumerate(d.groupby("line", sort=False)):
        part = part.sort_values("batch_size")
        fig.add_scatter(
            x=part["batch_size"], y=part["aggregate_tokens_per_s_median"], name=name, mode="lines+markers",
            line=dict(color=RUN_COLORS[i % len(RUN_COLORS)] if d["line"].nunique() > 1
                      else method_color(part["method"].iloc[0]), width=2.5), marker=dict(size=9),
            error_y=whiskers(part, "aggregate_tokens_per_s_median", "aggregate_tokens_per_s",
                             "aggregate_tokens_per_s_std")[0],
            showlegend=d["line"].nunique() > 1,
            hovertext=[f"<b>{v:.1f} aggregate tok/s{s}</b><br>{h}" for v, s, h in
                       zip(part["aggregate_tokens_per_s_median"],
                           whiskers(part, "aggregate_tokens_per_s_median", "aggregate_tokens_per_s",
                                    "aggregate_tokens_per_s_std")[1], part["hover"])],
            hovertemplate="%{hovertext}<extra></extra>")
    sizes = sorted(d["batch_size"].dropna().unique())
    fig = style(fig, title, "aggregate tokens/s (all sequences)", "batch size (sequences per call)")
    fig.update_xaxes(type="log", tickvals=sizes, ticktext=[str(int(s)) for s in sizes], tickangle=0)
    return fig


# name -> figure function, in the order the dashboard lays them out (two per row); the names become
# elem_ids (chart-tokens, history-chart-tokens, ...), which the browser test and users' scripts select.
def acceptance_by_position(df: pd.DataFrame) -> go.Figure:
    """For draft positions 1..k, the share of rounds whose draft there was accepted: where a draft stops
    being useful, which is what picks k."""
    title = "Acceptance by draft position (drafting methods)"
    d = prepare(df)
    if d.empty or "acceptance_by_position" not in d:
        return empty(title, "no speculative or prompt-lookup rows")
    d = d[d["method"].isin(methods_that("drafts")) & d["acceptance_by_position"].notna()]
    d = d[d["acceptance_by_position"].astype(str).str.len() > 0]
    if d.empty:
        return empty(title, "no per-position acceptance in these rows")
    fig = go.Figure()
    several = d["run"].nunique() > 1
    for i, row in enumerate(d.to_dict("records")):
        rates = [float(x) * 100 for x in str(row["acceptance_by_position"]).split("|")]
        fig.add_scatter(
            x=list(range(1, len(rates) + 1)), y=rates, mode="lines+markers",
            name=row["label"] + (f" · {row['run']}" if several else ""),
            line=dict(color=RUN_COLORS[i % len(RUN_COLORS)] if len(d) > 1 else method_color(row["method"]), width=2),
            hovertext=[f"<b>position {p}: {r:.1f} % accepted</b><br>{row['hover']}" for p, r in
                       enumerate(rates, 1)], hovertemplate="%{hovertext}<extra></extra>")
    fig = style(fig, title, "% of rounds offering it", "draft position")
    fig.update_yaxes(range=[0, 105])
    fig.update_xaxes(dtick=1, tickangle=0)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, x=0, xanchor="left"), margin=dict(b=60))
    return fig


def predicted_vs_measured(df: pd.DataFrame) -> go.Figure:
    """Measured paired speedup beside Leviathan et al.'s prediction from the same row's acceptance and
    draft/target step-time ratio: a large gap says the time goes somewhere the model leaves out."""
    title = "Speculative speedup: measured (bar, 95% CI) vs predicted (diamond)"
    d = prepare(df)
    if d.empty or "predicted_speedup" not in d:
        return empty(title, "no speculative or prompt-lookup rows")
    d["predicted_speedup"] = pd.to_numeric(d["predicted_speedup"], errors="coerce")
    d = d[d["method"].isin(methods_that("drafts")) & d["speedup_vs_standard"].notna()]
    if d.empty:
        return empty(title, f"needs drafting rows and the {BASELINE} method in the run")
    fig = go.Figure()
    for trace in bars(d, "speedup_vs_standard", fmt=".2f", unit="×", ci="speedup_vs_standard"):
        trace.offsetgroup = trace.name
        fig.add_trace(trace)
    for i, run in enumerate(dict.fromkeys(d["run"])):
        part = d[d["run"] == run]
        fig.add_scatter(x=part["label"], y=part["predicted_speedup"], mode="markers", name="predicted",
                        legendgroup="predicted", showlegend=i == 0, offsetgroup=run,
                        marker=dict(symbol="diamond", size=11, color="#0f172a"),
                        hovertext=[f"<b>predicted {v:.2f}×</b> (c = {c:.2f})<br>{h}" if pd.notna(v) else h
                                   for v, c, h in zip(part["predicted_speedup"],
                                                      pd.to_numeric(part.get("draft_step_ratio"), errors="coerce"),
                                                      part["hover"])],
                        hovertemplate="%{hovertext}<extra></extra>")
    fig.add_hline(y=1.0, line_dash="dot", line_color="#475569")
    fig.update_layout(barmode="group")
    fig = style(fig, title, f"× {BASELINE}")
    fig.update_yaxes(rangemode="tozero")
    return fig


def quality_vs_speed(df: pd.DataFrame) -> go.Figure:
    """What each row writes against how fast: the reference model's NLL of the text (lower = more likely
    text) over per-sequence speed. Greedy, its lossless speedups and batching share one NLL; sampling,
    beams and quantization move along the y axis, so the trade is visible at a glance."""
    title = "Quality vs speed (target NLL per token: lower = likelier)"
    d = prepare(df)
    if d.empty or "target_nll" not in d:
        return empty(title, "no finished rows yet")
    d["target_nll"] = pd.to_numeric(d["target_nll"], errors="coerce")
    d = d[d["target_nll"].notna() & d["tokens_per_s_per_sequence_median"].notna()]
    if d.empty:
        return empty(title, "no quality figures in these rows")
    fig = go.Figure()
    several = d["run"].nunique() > 1
    for method, part in d.groupby("method", sort=False):
        fig.add_scatter(
            x=part["tokens_per_s_per_sequence_median"], y=part["target_nll"], mode="markers", name=str(method),
            marker=dict(size=11, color=method_color(method), line=dict(width=1, color="#0f172a"),
                        symbol=[["circle", "square", "diamond", "cross"][list(dict.fromkeys(d["run"])).index(r) % 4]
                                for r in part["run"]] if several else "circle"),
            hovertext=[f"<b>{lab}</b><br>NLL {y:.3f} · {x:.1f} tok/s<br>{h}" for lab, x, y, h in
                       zip(part["label"], part["tokens_per_s_per_sequence_median"], part["target_nll"], part["hover"])],
            hovertemplate="%{hovertext}<extra></extra>")
    fig = style(fig, title, "target NLL per token", "tokens/s per sequence")
    fig.update_xaxes(rangemode="tozero", tickangle=0)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, x=0, xanchor="left"), margin=dict(b=60))
    return fig


def traced_rows(d: pd.DataFrame) -> list[dict]:
    """Rows with a token trace (metrics/trace.py), each with its `times` (ms) parsed."""
    if d.empty or "token_times_ms" not in d:
        return []
    out = []
    for row in d.to_dict("records"):
        times = parse_times(row.get("token_times_ms"))
        if times:
            out.append(row | {"times": times})
    return out


def series_name(row: dict, several: bool) -> str:
    return row["label"] + (f" · {row['run']}" if several else "")


def token_timeline(df: pd.DataFrame) -> go.Figure:
    """Token index against time since the call started, for one traced call per row (run after the measured
    calls, every step timed). TTFT is the first point; a speculative round shows as a step of several tokens
    at one time, a stall as a flat stretch."""
    title = "Token timeline of one traced call per row (TTFT marked)"
    rows = traced_rows(prepare(df))
    if not rows:
        return empty(title, "no token traces in these rows")
    fig = go.Figure()
    several = len({r["run"] for r in rows}) > 1
    seen: dict[str, int] = {}
    for row in rows:
        # Colour by method (by run when runs are compared); a method's further rows get their own dash.
        nth = seen[row["method"]] = seen.get(row["method"], -1) + 1
        color = RUN_COLORS[sorted({r["run"] for r in rows}).index(row["run"]) % len(RUN_COLORS)] if several \
            else method_color(row["method"])
        name, times = series_name(row, several), row["times"]
        fig.add_scatter(x=times, y=list(range(1, len(times) + 1)), mode="lines", name=name, legendgroup=name,
                        line=dict(color=color, width=2, shape="hv", dash=DASHES[nth % len(DASHES)]),
                        hovertext=[f"<b>{html.escape(name)}</b><br>token {j}: {t:.1f} ms<br>{row['hover']}"
                                   for j, t in enumerate(times, 1)], hovertemplate="%{hovertext}<extra></extra>")
        fig.add_scatter(x=[times[0]], y=[1], mode="markers", legendgroup=name, showlegend=False,
                        marker=dict(color=color, size=10, symbol="diamond", line=dict(width=1, color="#0f172a")),
                        hovertext=[f"<b>{html.escape(name)}</b><br>TTFT {times[0]:.1f} ms"],
                        hovertemplate="%{hovertext}<extra></extra>")
    fig = style(fig, title, "new tokens (per sequence)", "ms since the call started")
    fig.update_xaxes(rangemode="tozero", tickangle=0)
    # One legend entry per row is many: below the plot, where the numeric x axis leaves room.
    fig.update_layout(height=HEIGHT + 20 * ((len(rows) + 1) // 2), margin=dict(b=60),
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0, xanchor="left", font_size=10))
    return fig


def inter_token_latency(df: pd.DataFrame) -> go.Figure:
    """Histogram of the gaps between consecutive tokens of each row's traced call; the menu picks the row.
    A round that lands k tokens at once counts as k gaps of a k-th of its time each (as under load)."""
    title = "Inter-token latency of one traced call"
    rows = traced_rows(prepare(df))
    rows = [r | {"gaps": inter_token_ms(r["times"])} for r in rows]
    rows = [r for r in rows if r["gaps"]]
    if not rows:
        return empty(title, "no token traces with two tokens or more")
    fig = go.Figure()
    several = len({r["run"] for r in rows}) > 1
    names = [series_name(r, several) for r in rows]
    for i, (row, name) in enumerate(zip(rows, names)):
        fig.add_histogram(x=row["gaps"], name=name, visible=i == 0, nbinsx=40,
                          marker=dict(color=method_color(row["method"]), line=dict(width=0.5, color="#0f172a")),
                          hovertemplate="%{x} ms: %{y} gaps<extra></extra>")
    buttons = [dict(label=name, method="update",
                    args=[{"visible": [j == i for j in range(len(rows))]},
                          {"title.text": f"{title}: {html.escape(name)}"}]) for i, name in enumerate(names)]
    fig = style(fig, f"{title}: {html.escape(names[0])}", "gaps", "ms between consecutive tokens")
    fig.update_layout(showlegend=False, updatemenus=[dict(buttons=buttons, direction="down", x=1, xanchor="right",
                                                          y=1.0, yanchor="bottom", showactive=True)])
    fig.update_xaxes(rangemode="tozero", tickangle=0)
    return fig


# --- load rows (scenarios/load.py) ----------------------------------------------------------------------

LOAD_NUMERIC = ["output_tokens_per_s", "request_throughput", "goodput", "ttft_ms_median", "ttft_ms_p90",
                "tpot_ms_median", "tpot_ms_p90", "slo_ttft_ms", "slo_tpot_ms", "requests", "concurrency", "request_rate"]
LOAD_LABEL = re.compile(r"(?:^|, )(?:concurrency|rate)=[^,]+")


def load_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Finished load rows with their figures as numbers, a `series` (one line per run x engine x method setting,
    across load points) and the `load` point's label."""
    d = prepare(df)
    if d.empty or "output_tokens_per_s" not in d:
        return d.iloc[0:0]
    for c in LOAD_NUMERIC:
        if c in d:
            d[c] = pd.to_numeric(d[c], errors="coerce")
    d = d[d["output_tokens_per_s"].notna()].copy()
    if d.empty:
        return d
    settings = d["setting"].astype(str)
    d["load"] = [", ".join(m.group(0).lstrip(", ") for m in LOAD_LABEL.finditer(s)) for s in settings]
    rest = [LOAD_LABEL.sub("", s).strip(", ") for s in settings]
    several = d["run"].nunique() > 1
    d["series"] = [f"{e} · {m}" + (f" [{r}]" if r else "") + (f" · {run}" if several else "")
                   for e, m, r, run in zip(d["engine"].astype(str), d["method"].astype(str), rest, d["run"])]
    return d.sort_values(["series", "output_tokens_per_s"], kind="stable")


def slo_of(d: pd.DataFrame, column: str) -> float:
    values = d[column].dropna().unique() if column in d else []
    return float(values[0]) if len(values) == 1 and values[0] > 0 else 0.0


def throughput_latency(df: pd.DataFrame) -> go.Figure:
    """Output tokens/s against p90 TPOT (buttons: p90 TTFT), one line per engine and method across its load
    points, with the SLO drawn: where each line bends up is where that engine stops keeping up."""
    title = "Throughput vs latency under load"
    d = load_frame(df)
    if d.empty:
        return empty(title, "no load rows yet (set concurrency or request_rate, or engine continuous or server)")
    fig = go.Figure()
    views = (("tpot", "TPOT", "slo_tpot_ms"), ("ttft", "TTFT", "slo_ttft_ms"))
    for v, (stem, name, _) in enumerate(views):
        for i, (series, part) in enumerate(d.groupby("series", sort=False)):
            # p90 needs 10 requests; a point with fewer shows its median, and says so.
            p90 = part[f"{stem}_ms_p90"]
            y = p90.where(p90.notna(), part[f"{stem}_ms_median"])
            which = ["p90" if ok else "median (under 10 requests)" for ok in p90.notna()]
            fig.add_scatter(
                x=part["output_tokens_per_s"], y=y, mode="lines+markers", name=series, visible=v == 0,
                legendgroup=series, showlegend=True, line=dict(color=RUN_COLORS[i % len(RUN_COLORS)], width=2),
                marker=dict(size=8), text=part["load"],
                hovertext=[f"<b>{series}</b> · {load}<br>{name} {w} {val:.2f} ms · {x:.1f} out tok/s<br>{h}"
                           for load, w, val, x, h in zip(part["load"], which, y, part["output_tokens_per_s"],
                                                         part["hover"])],
                hovertemplate="%{hovertext}<extra></extra>")
    traces = len(fig.data) // 2

    def slo_line(column: str, name: str) -> list[dict]:
        target = slo_of(d, column)
        return [dict(type="line", xref="paper", x0=0, x1=1, y0=target, y1=target,
                     line=dict(color="#dc2626", dash="dash", width=1.5))] if target else []

    buttons = [dict(label=f"{name} p90", method="update",
                    args=[{"visible": [k // traces == v for k in range(len(fig.data))]},
                          {"shapes": slo_line(column, name), "yaxis.title.text": f"{name} p90 (ms)"}])
               for v, (_, name, column) in enumerate(views)]
    fig = style(fig, title, "TPOT p90 (ms)", "output tokens/s (all requests)")
    fig.update_layout(shapes=slo_line("slo_tpot_ms", "TPOT"),
                      updatemenus=[dict(type="buttons", direction="right", x=0.0, xanchor="left", y=1.16,
                                        yanchor="bottom", buttons=buttons, showactive=True, pad=dict(r=4, t=2))])
    fig.update_xaxes(rangemode="tozero", tickangle=0)
    fig.update_yaxes(rangemode="tozero")
    return fig


def goodput(df: pd.DataFrame) -> go.Figure:
    """Goodput (requests/s within both SLOs) against the request throughput reached at each load point; on the
    diagonal every request met its targets."""
    title = "Goodput: requests/s within the SLOs"
    d = load_frame(df)
    if d.empty:
        return empty(title, "no load rows yet")
    ttft, tpot = slo_of(d, "slo_ttft_ms"), slo_of(d, "slo_tpot_ms")
    targets = " and ".join(t for t in (f"TTFT <= {ttft:g} ms" if ttft else "", f"TPOT <= {tpot:g} ms" if tpot else "")
                           if t) or "no SLO set: goodput = throughput"
    fig = go.Figure()
    top = float(d["request_throughput"].max())
    fig.add_scatter(x=[0, top], y=[0, top], mode="lines", name="every request within SLO",
                    line=dict(color="#94a3b8", dash="dot", width=1), hoverinfo="skip")
    for i, (series, part) in enumerate(d.groupby("series", sort=False)):
        part = part.sort_values("request_throughput")
        fig.add_scatter(
            x=part["request_throughput"], y=part["goodput"], mode="lines+markers", name=series,
            line=dict(color=RUN_COLORS[i % len(RUN_COLORS)], width=2), marker=dict(size=8),
            hovertext=[f"<b>{series}</b> · {load}<br>goodput {g:.2f} of {t:.2f} req/s<br>{h}"
                       for load, g, t, h in zip(part["load"], part["goodput"], part["request_throughput"], part["hover"])],
            hovertemplate="%{hovertext}<extra></extra>")
    fig = style(fig, f"{title} ({targets})", "goodput (req/s)", "request throughput (req/s)")
    fig.update_xaxes(rangemode="tozero", tickangle=0)
    fig.update_yaxes(rangemode="tozero")
    return fig


def request_timeline(records: list[dict], title: str = "Requests of one load point") -> go.Figure:
    """Each request a bar from its arrival to its last token, waiting (arrival to first token) apart from
    decoding, its first token marked: queueing shows as bars that start late in their light part.
    Takes the records of one row from requests.jsonl (store.requests.load_requests)."""
    if not records:
        return empty(title, "pick a load point")
    rows = sorted(records, key=lambda r: r.get("request_id", 0))
    num = lambda v: float(v) if v is not None else float("nan")  # noqa: E731
    ids = [f"#{r.get('request_id')}" for r in rows]
    arrival = [num(r.get("scheduled")) for r in rows]
    first = [num(r.get("first_token")) for r in rows]
    end = [num(r.get("end")) for r in rows]
    failed = [r.get("status") != "ok" for r in rows]
    fig = go.Figure()
    fig.add_bar(y=ids, base=arrival, x=[(f if f == f else e) - a for a, f, e in zip(arrival, first, end)],
                orientation="h", name="waiting for the first token",
                marker=dict(color=["#fecaca" if bad else "#bfdbfe" for bad in failed]),
                hovertext=[f"{i}: arrived {a:.3f} s, first token {f:.3f} s" + (f" · {r.get('error')}" if bad else "")
                           for i, a, f, bad, r in zip(ids, arrival, first, failed, rows)],
                hovertemplate="%{hovertext}<extra></extra>")
    fig.add_bar(y=ids, base=first, x=[e - f for f, e in zip(first, end)], orientation="h", name="decoding",
                marker=dict(color="#2563eb"),
                hovertext=[f"{i}: {r.get('output_tokens')} tokens, ends {e:.3f} s" for i, e, r in zip(ids, end, rows)],
                hovertemplate="%{hovertext}<extra></extra>")
    fig.add_scatter(y=ids, x=first, mode="markers", name="first token",
                    marker=dict(symbol="line-ns-open", size=12, color="#0f172a", line=dict(width=2)),
                    hoverinfo="skip")
    fig = style(fig, title, "request", "seconds from the load start")
    fig.update_layout(barmode="overlay", height=max(HEIGHT, 40 + 16 * len(rows)))
    fig.update_yaxes(autorange="reversed", tickangle=0)
    fig.update_xaxes(rangemode="tozero", tickangle=0)
    return fig


# --- trade-offs: the Pareto front (views/pareto.py) and cost (metrics/cost.py) -------------------------

PARETO_PLOT_PX, TABLE_ROW_PX = 300, 40  # a table row holds three lines: labels wrap in a narrow card


def pareto_chart(df: pd.DataFrame) -> go.Figure:
    """Tokens/s for one user against tokens/s of the whole machine, every row with both 95% intervals (load rows
    as diamonds), the Pareto front drawn through the rows no other row beats on both axes beyond noise, and
    listed, numbered, under the plot."""
    title = "Pareto front: tok/s per user vs machine (95% CI)"
    pts = pareto.points(prepare(df))
    if pts.empty:
        return empty(title, "no rows with tokens/s per user and of the machine yet")
    front = pareto.front_of(pts)
    number = {idx: n for n, idx in enumerate(front, 1)}
    runs = list(dict.fromkeys(pts["run"]))
    several = len(runs) > 1
    table_px = TABLE_ROW_PX * len(front) + 44
    fig = make_subplots(rows=2, cols=1, specs=[[{"type": "xy"}], [{"type": "table"}]], vertical_spacing=0.1,
                        row_heights=[PARETO_PLOT_PX, table_px])
    fig.add_scatter(x=pts.loc[front, "x"], y=pts.loc[front, "y"], mode="lines", name="Pareto front",
                    line=dict(color="#0f172a", width=1.5, dash="dash"), hoverinfo="skip", row=1, col=1)
    sides = pareto.label_sides(pts, front, pts["x"].max() * 1.3, pts["y"].max() * 1.3)  # the axes' spans below
    for (run, method, load), part in pts.groupby(["run", "method", "load"], sort=False):
        on = [i in number for i in part.index]
        color = RUN_COLORS[runs.index(run) % len(RUN_COLORS)] if several else method_color(method)
        error = {axis: dict(type="data", symmetric=False, thickness=1, width=0, color=color,
                            array=(part[f"{axis}_high"] - part[axis]).clip(lower=0).fillna(0),
                            arrayminus=(part[axis] - part[f"{axis}_low"]).clip(lower=0).fillna(0)) for axis in "xy"}
        interval = {axis: [f" [{lo:.3g}–{hi:.3g}]" if pd.notna(lo) and pd.notna(hi) else ""
                           for lo, hi in zip(part[f"{axis}_low"], part[f"{axis}_high"])] for axis in "xy"}
        fig.add_scatter(
            x=part["x"], y=part["y"], mode="markers+text", name=(f"{run} · " if several else "") + str(method)
            + (" (load)" if load else ""), error_x=error["x"], error_y=error["y"],
            text=[str(number[i]) if i in number and sides.get(i) else "" for i in part.index], cliponaxis=True,
            textposition=[sides.get(i) or "top right" for i in part.index],
            textfont=dict(size=11, color="#0f172a"),
            marker=dict(color=color, symbol="diamond" if load else "circle", size=[12 if o else 8 for o in on],
                        opacity=[1.0 if o else 0.55 for o in on],
                        line=dict(width=[1.5 if o else 0.5 for o in on], color="#0f172a")),
            hovertext=[f"<b>{html.escape(lab)}</b>{f' · on the front (#{number[i]})' if o else ''}<br>{x:.3g} tok/s "
                       f"per user{ix}<br>{y:.3g} tok/s machine{iy}<br>{h}" for i, lab, o, x, ix, y, iy, h in
                       zip(part.index, part["point"], on, part["x"], interval["x"], part["y"], interval["y"],
                           part["hover"])],
            hovertemplate="%{hovertext}<extra></extra>", row=1, col=1)
    rows = pts.loc[front]
    names = [p + (f" · {r}" if several else "") for p, r in zip(rows["point"], rows["run"])]
    fig.add_trace(go.Table(
        columnwidth=[0.5, 4.2, 1.1, 1.3],
        header=dict(values=["#", "on the front (none beaten beyond noise)", "tok/s user", "machine"], align="left",
                    font=dict(size=11, color="#0f172a"), fill_color="#e2e8f0", height=36),
        cells=dict(values=[list(range(1, len(front) + 1)), [html.escape(n) for n in names],
                           [f"{v:.3g}" for v in rows["x"]], [f"{v:.3g}" for v in rows["y"]]],
                   align="left", font=dict(size=11), height=TABLE_ROW_PX, fill_color="#f8fafc")), row=2, col=1)
    fig = style(fig, title, "tokens/s of the machine", "tokens/s per user")
    entries = pts.groupby(["run", "method", "load"]).ngroups + 1
    legend_px = 22 * ((entries + 3) // 4)
    fig.update_layout(height=70 + PARETO_PLOT_PX + 40 + table_px + 30 + legend_px,
                      margin=dict(t=60, b=20 + legend_px),
                      legend=dict(orientation="h", yanchor="top", y=-0.01, x=0, xanchor="left", font_size=11))
    # Axes span the medians: a whisker wider than that (a noisy row) runs off the plot, its bounds in the hover.
    fig.update_xaxes(range=[0, pts["x"].max() * 1.3], tickangle=0)
    fig.update_yaxes(range=[0, pts["y"].max() * 1.3])
    return fig


COST_COLUMNS = ["cost_per_million_tokens", "cost_per_million_tokens_ci_low", "cost_per_million_tokens_ci_high",
                "cost_per_million_good_tokens", "energy_cost_per_million_tokens", "aggregate_tokens_per_s_median",
                "output_tokens_per_s"]


def cost(df: pd.DataFrame) -> go.Figure:
    """What a million tokens cost at each row's machine rate (bars, 95% CI from the rate's interval), with good
    tokens under load and the electricity alone as markers; a card that says how to set a price otherwise."""
    title = "Cost per 1M tokens (95% CI)"
    d = prepare(df)
    for c in COST_COLUMNS:
        d[c] = pd.to_numeric(d[c], errors="coerce") if c in d else float("nan")
    d = d[d[["cost_per_million_tokens", "cost_per_million_good_tokens", "energy_cost_per_million_tokens"]]
          .notna().any(axis=1)] if not d.empty else d
    if d.empty:
        return empty(title, "no price set: run with cost_per_hour (and energy_price_per_kwh) to see cost per million "
                            "tokens")
    currencies = sorted({str(c) for c in d.get("currency", pd.Series(dtype=str)).dropna() if str(c) not in ("", "nan")})
    currency = currencies[0] if len(currencies) == 1 else "mixed currencies" if currencies else ""
    bar = "cost_per_million_tokens" if d["cost_per_million_tokens"].notna().any() else "energy_cost_per_million_tokens"
    shown = d[d[bar].notna()]
    fig = go.Figure()
    for trace in bars(shown, bar, fmt=".3g", unit=f" {currency}", ci=bar if bar == "cost_per_million_tokens" else None):
        trace.offsetgroup = trace.name
        fig.add_trace(trace)
    markers = [(c, name, symbol) for c, name, symbol in (
        ("cost_per_million_good_tokens", "good tokens (within the SLOs)", "diamond"),
        ("energy_cost_per_million_tokens", "electricity alone", "triangle-up")) if c != bar and d[c].notna().any()]
    for c, name, symbol in markers:
        for i, run in enumerate(dict.fromkeys(shown["run"])):
            part = shown[shown["run"] == run]
            fig.add_scatter(x=part["label"], y=part[c], mode="markers", name=name, legendgroup=c, showlegend=i == 0,
                            offsetgroup=run, marker=dict(symbol=symbol, size=11, color="#0f172a"),
                            hovertext=[f"<b>{name}: {v:.3g} {html.escape(currency)} per 1M tokens</b><br>{h}"
                                       for v, h in zip(part[c], part["hover"])],
                            hovertemplate="%{hovertext}<extra></extra>")
    rate = shown["output_tokens_per_s"].fillna(shown["aggregate_tokens_per_s_median"])
    hourly = {float(f"{v:.4g}") for v in shown["cost_per_million_tokens"] * rate * 3600 / 1e6 if pd.notna(v)}
    price = f" at {next(iter(hourly)):g} {currency}/h" if bar == "cost_per_million_tokens" and len(hourly) == 1 else ""
    fig.update_layout(barmode="group", scattermode="group")
    fig = style(fig, f"{title}{price}",
                f"{currency} per 1M tokens".strip() + ("" if bar == "cost_per_million_tokens" else " (electricity)"))
    fig.update_yaxes(rangemode="tozero")
    return fig


# --- what load rows decide: capacity (scenarios/capacity.py) and drafting under load (views/load_decisions.py) ---


def capacity(df: pd.DataFrame) -> go.Figure:
    """SLO attainment against request rate (or concurrency, for a closed-loop search) for each capacity search, its
    one-sided 95% band, the target share dashed, and the capacity (solid) and its lower bound (dotted) marked."""
    found = load_decisions.searches(prepare(df))
    axes = {s["axis"] for s in found} or {"request_rate"}
    along = "request rate" if axes == {"request_rate"} else "concurrency" if axes == {"concurrency"} else "load"
    title = f"Capacity: SLO attainment vs {along} (95% band)"
    if not found:
        return empty(title, "no capacity search yet (set capacity with slo_ttft_ms or slo_tpot_ms)")
    fig = go.Figure()
    for i, s in enumerate(found):
        color, p = RUN_COLORS[i % len(RUN_COLORS)], s["probes"]
        if p.empty:
            continue
        x, unit = list(p[s["axis"]]), "req/s" if s["axis"] == "request_rate" else "in flight"
        fig.add_scatter(x=x + x[::-1], y=list(p["slo_attainment_ci_high"]) + list(p["slo_attainment_ci_low"])[::-1],
                        fill="toself", fillcolor=color, opacity=0.15, line=dict(width=0), hoverinfo="skip",
                        showlegend=False, legendgroup=s["name"])
        fig.add_scatter(x=x, y=p["slo_attainment"], mode="lines+markers", name=s["name"], legendgroup=s["name"],
                        line=dict(color=color, width=2), marker=dict(size=8),
                        hovertext=[f"<b>{s['name']}</b> · probe {k:.0f}: {r:g} {unit}<br>attainment {a:.1%} "
                                   f"[{lo:.1%}, {hi:.1%}]" for k, r, a, lo, hi in
                                   zip(p["capacity_probe"], x, p["slo_attainment"], p["slo_attainment_ci_low"],
                                       p["slo_attainment_ci_high"])],
                        hovertemplate="%{hovertext}<extra></extra>")
        for value, dash, what in ((s["capacity"], "solid", "capacity"), (s["capacity_low"], "dot", "95% bound")):
            if value == value and value > 0:
                fig.add_vline(x=value, line=dict(color=color, dash=dash, width=1.5),
                              annotation_text=f"{what} {value:g}", annotation_font_size=10)
    target = next((s["target"] for s in found if s["target"] == s["target"]), None)
    if target is not None:
        fig.add_hline(y=target, line=dict(color="#dc2626", dash="dash", width=1.5),
                      annotation_text=f"target {target:.0%}", annotation_font_size=10)
    x_title = {"request rate": "request rate (req/s)", "concurrency": "requests in flight"}.get(
        along, "request rate (req/s) or requests in flight")
    fig = style(fig, title, "share of requests within the SLOs", x_title)
    fig.update_xaxes(rangemode="tozero", tickangle=0)
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%")
    return fig


def drafting_under_load(df: pd.DataFrame) -> go.Figure:
    """Paired speedup of drafting over plain greedy at each load point (TPOT; a button for output tok/s per
    request), with 95% intervals; the first load point whose interval lies below 1 is marked: from there on,
    drafting costs more than it saves."""
    title = "Where drafting stops paying under load (paired speedup, 95% CI)"
    found = load_decisions.crossover(prepare(df))
    if not found:
        return empty(title, "no drafting load rows paired with plain greedy ones at the same load points yet")
    fig = go.Figure()
    names = list(load_decisions.SPEEDUPS)
    marks = {m: [] for m in names}
    for v, m in enumerate(names):
        for i, s in enumerate(found):
            color, e = RUN_COLORS[i % len(RUN_COLORS)], s[m]
            fig.add_scatter(
                x=s["loads"], y=e["value"], mode="lines+markers", name=s["name"], visible=v == 0, legendgroup=s["name"],
                line=dict(color=color, width=2), marker=dict(size=8),
                error_y=dict(type="data", symmetric=False, thickness=1, width=4, color=color,
                             array=[h - y if h == h else 0 for h, y in zip(e["high"], e["value"])],
                             arrayminus=[y - lo if lo == lo else 0 for lo, y in zip(e["low"], e["value"])]))
            if e["first_below"] is not None:
                at = s["loads"][e["first_below"]]
                marks[m].append(dict(type="line", x0=at, x1=at, xref="x", yref="paper", y0=0, y1=1,
                                     line=dict(color=color, dash="dot", width=1.5)))
    traces = len(found)
    one = [dict(type="line", xref="paper", x0=0, x1=1, y0=1, y1=1, line=dict(color="#64748b", dash="dash", width=1))]
    buttons = [dict(label=load_decisions.SPEEDUPS[m], method="update",
                    args=[{"visible": [k // traces == v for k in range(len(fig.data))]}, {"shapes": one + marks[m]}])
               for v, m in enumerate(names)]
    fig = style(fig, title, "speedup over plain (x)", found[0]["axis"])
    fig.update_layout(shapes=one + marks[names[0]],
                      updatemenus=[dict(type="buttons", direction="right", x=0.0, xanchor="left", y=1.16,
                                        yanchor="bottom", buttons=buttons, showactive=True, pad=dict(r=4, t=2))])
    fig.update_xaxes(type="category", tickangle=0)
    return fig


INPUT_LABEL = re.compile(r",? ?input=\d+")


def ttft_by_turn(df: pd.DataFrame) -> go.Figure:
    """Median TTFT of each turn of multi-turn sessions: a prefix cache (a server's, or the continuous engine's
    cb_prefix_sharing) makes later turns, whose prompt is the whole history, answer sooner than re-reading it."""
    title = "TTFT by turn of a session"
    d = load_frame(df)
    if not d.empty and "ttft_ms_by_turn" in d:
        d = d[d["ttft_ms_by_turn"].astype(str).str.strip().str.len() > 0]
        d = d[d["ttft_ms_by_turn"].notna()]
    if d.empty or "ttft_ms_by_turn" not in d:
        return empty(title, "no multi-turn rows yet (set workload to sessions)")
    fig = go.Figure()
    for i, (_, row) in enumerate(d.iterrows()):
        values = [float(v) for v in str(row["ttft_ms_by_turn"]).split()]
        turns = list(range(1, len(values) + 1))
        name = row["series"] + (f" · {row['load']}" if d["load"].nunique() > 1 else "")
        fig.add_scatter(x=turns, y=values, mode="lines+markers", name=name,
                        line=dict(color=RUN_COLORS[i % len(RUN_COLORS)], width=2), marker=dict(size=8),
                        hovertext=[f"<b>{name}</b><br>turn {t}: TTFT median {v:.1f} ms<br>{row['hover']}"
                                   for t, v in zip(turns, values)],
                        hovertemplate="%{hovertext}<extra></extra>")
    fig = style(fig, title, "TTFT median (ms)", "turn (its prompt is the whole history so far)")
    fig.update_xaxes(tickangle=0, dtick=1, rangemode="tozero")
    return fig


def ttft_by_prompt_length(df: pd.DataFrame) -> go.Figure:
    """Median TTFT (with its interval) against the synthetic prompt length of the random and shared_prefix
    workloads, one line per engine and method at each load point: prefill cost as the prompt grows."""
    title = "TTFT by prompt length"
    d = load_frame(df)
    if not d.empty and "input_tokens" in d:
        d = d.assign(input_tokens=pd.to_numeric(d["input_tokens"], errors="coerce"))
        d = d[d["input_tokens"].notna()]
    if d.empty or "input_tokens" not in d or d["input_tokens"].nunique() < 2:
        return empty(title, "no prompt-length sweep yet (workload random or shared_prefix, input_tokens a list)")
    d = d.assign(line=[INPUT_LABEL.sub("", s).strip(", ") + f" · {load}" for s, load in zip(d["series"], d["load"])])
    fig = go.Figure()
    for i, (line, part) in enumerate(d.groupby("line", sort=False)):
        part = part.sort_values("input_tokens")
        y = pd.to_numeric(part["ttft_ms_median"], errors="coerce")
        low = pd.to_numeric(part.get("ttft_ms_ci_low", y), errors="coerce")
        high = pd.to_numeric(part.get("ttft_ms_ci_high", y), errors="coerce")
        fig.add_scatter(x=part["input_tokens"], y=y, mode="lines+markers", name=line,
                        error_y=dict(type="data", symmetric=False, array=(high - y).clip(lower=0),
                                     arrayminus=(y - low).clip(lower=0), thickness=1.2, width=4),
                        line=dict(color=RUN_COLORS[i % len(RUN_COLORS)], width=2), marker=dict(size=8),
                        hovertext=[f"<b>{line}</b><br>{int(n)} prompt tokens: TTFT median {v:.1f} ms "
                                   f"(95% CI {lo:.1f}–{hi:.1f})<br>{h}"
                                   for n, v, lo, hi, h in zip(part["input_tokens"], y, low, high, part["hover"])],
                        hovertemplate="%{hovertext}<extra></extra>")
    fig = style(fig, title, "TTFT median (ms)", "prompt tokens (exact, the run's tokenizer)")
    fig.update_xaxes(tickangle=0, rangemode="tozero")
    return fig


FIGURES = {
    "tokens": tokens_per_s, "speedup": speedup, "latency": latency, "tpot": time_per_output_token,
    "memory": memory, "batch": batch_throughput,
    "acceptance": acceptance, "positions": acceptance_by_position, "predicted": predicted_vs_measured,
    "quality": quality_vs_speed,
    "pareto": pareto_chart, "cost": cost,
    "timeline": token_timeline, "itl": inter_token_latency,
    "load": throughput_latency, "goodput": goodput, "turns": ttft_by_turn, "prompt_length": ttft_by_prompt_length,
    "capacity": capacity, "draft_load": drafting_under_load,
}
FIGURES = {name: laid_out_by(draw) for name, draw in FIGURES.items()}  # every figure follows views/layout.py
# Headings of the pages' chart sections: a section starts at each of these figures and runs to the next one, so a
# new figure joins the section it is placed in.
SECTION_STARTS = {"tokens": "Speed", "memory": "Memory and throughput", "acceptance": "Drafting",
                  "quality": "Quality", "pareto": "Trade-offs and cost", "timeline": "Latency detail of one call", "load": "Under load"}


def sections(names: list[str]) -> list[tuple[str, list[str]]]:
    """Figure names in order, grouped under their section headings ('' before the first heading)."""
    out: list[tuple[str, list[str]]] = []
    for name in names:
        if name in SECTION_STARTS or not out:
            out.append((SECTION_STARTS.get(name, ""), []))
        out[-1][1].append(name)
    return out

"""Runs compared with each other, shared by History and the HTML report: the settings of a run, the keys two
runs differ in, and each row's percent change against a baseline run with its 95% interval.

Pure functions of rows (pandas, no gradio, no torch); the labels and cell texts come from the run notebook.
"""
from __future__ import annotations

import math

import pandas as pd

from store.notebook import run_labels, text

# Keys that describe a run as a whole (the same in all its rows) and are worth comparing between runs.
RUN_KEYS = [
    "run_name", "run_tags", "run_notes", "model", "draft_model", "dtype", "quantization", "attention", "engine",
    "device", "random_weights", "max_new_tokens", "stop_at_eos", "num_prompts", "sequences", "warmup",
    "repetitions", "temperature", "top_p", "top_k", "num_beams", "num_draft_tokens",
]
ENVIRONMENT_KEYS = [
    "device_name", "device_memory_gib", "gpu_count", "gpu_driver", "cpu_model", "cpu_count", "ram_gib",
    "torch_version", "transformers_version", "bitsandbytes_version", "cuda_version", "python_version", "hostname",
]


def run_settings(df: pd.DataFrame, run_id: str) -> dict[str, str]:
    """key -> value for one run: a key the same in every row gives its value, one that varies (a sweep) all
    its values joined with ' | '. Keys the rows do not have are left out."""
    part = df[df["run_id"].astype(str) == str(run_id)]
    out = {}
    for key in RUN_KEYS + ENVIRONMENT_KEYS:
        if key not in part:
            continue
        values = list(dict.fromkeys(v for v in map(text, part[key]) if v != ""))
        out[key] = " | ".join(values)
    return out


def settings_diff(df: pd.DataFrame, run_ids: list[str], all_keys: bool = False) -> pd.DataFrame:
    """The keys the runs differ in (settings and environment), one column per run, labelled."""
    labels = run_labels(df)
    settings = {rid: run_settings(df, rid) for rid in run_ids}
    keys = [k for k in RUN_KEYS + ENVIRONMENT_KEYS if any(k in s for s in settings.values())]
    lines = []
    for key in keys:
        values = [settings[rid].get(key, "") for rid in run_ids]
        if any(values) and (all_keys or len(set(values)) > 1):
            lines.append([key, *values])
    return pd.DataFrame(lines, columns=["key", *[labels.get(rid, rid) for rid in run_ids]])


# Figures compared against a baseline: (column, header, the stem of its 95% interval columns or None).
CHANGE_FIGURES = [
    ("tokens_per_s_per_sequence_median", "tok/s/seq", "tokens_per_s_per_sequence"),
    ("aggregate_tokens_per_s_median", "agg tok/s", "aggregate_tokens_per_s"),
    ("ttft_ms_median", "TTFT", "ttft_ms"),
    ("tpot_ms_median", "TPOT", "tpot_ms"),
    ("peak_allocated_mib", "peak MiB", None),
]
ROW_MATCH = ["method", "setting", "engine", "quantization", "attention"]
Z95 = 1.959964


def number(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v


def change_interval(base: dict, row: dict, column: str, stem: str | None) -> tuple[float, float, float]:
    """(change, low, high) in percent of the baseline's median. The two runs are measured independently,
    so the log-scale half-widths of their 95% intervals add in quadrature; NaN bounds without intervals."""
    a, b = number(base.get(column)), number(row.get(column))
    if not (a > 0 and b > 0):
        return math.nan, math.nan, math.nan
    change = (b / a - 1) * 100
    if not stem:
        return change, math.nan, math.nan
    spreads = []
    for r in (base, row):
        lo, hi = number(r.get(f"{stem}_ci_low")), number(r.get(f"{stem}_ci_high"))
        if not (lo > 0 and hi > 0):
            return change, math.nan, math.nan
        spreads.append((math.log(hi) - math.log(lo)) / 2)
    half = math.hypot(*spreads)
    centre = math.log(b / a)
    return change, (math.exp(centre - half) - 1) * 100, (math.exp(centre + half) - 1) * 100


def change_text(change: float, low: float, high: float) -> str:
    """'+12.3% [+5.1, +19.8]', '+1.2% n.s. [-3.0, +5.6]' when the interval holds 0, '-' when unknown."""
    if math.isnan(change):
        return "-"
    if math.isnan(low) or math.isnan(high):
        return f"{change:+.1f}%"
    mark = " n.s." if low <= 0 <= high else ""
    return f"{change:+.1f}%{mark} [{low:+.1f}, {high:+.1f}]"


def percent_change(df: pd.DataFrame, baseline: str, run_ids: list[str]) -> pd.DataFrame:
    """Each finished row of the other runs against the baseline run's row of the same method, setting, engine,
    quantization and attention (or of the same method and setting, when the baseline has one such row): percent change of each figure with its interval, 'n.s.' (no significant
    difference) where the interval contains 0. Rows the baseline lacks say so."""
    labels = run_labels(df)
    ok = df[df["status"].astype(str) == "ok"]
    key = lambda r: tuple(text(r.get(k)) for k in ROW_MATCH)  # noqa: E731
    pair = lambda r: (text(r.get("method")), text(r.get("setting")))  # noqa: E731
    baseline_rows = ok[ok["run_id"].astype(str) == str(baseline)].to_dict("records")
    base_rows = {key(r): r for r in baseline_rows}
    # A run that changed the variant (sdpa -> eager, hf -> fast) is compared by method and setting, where the
    # baseline has a single row of that pair.
    pairs: dict[tuple, list] = {}
    for r in baseline_rows:
        pairs.setdefault(pair(r), []).append(r)
    lines = []
    for rid in run_ids:
        if str(rid) == str(baseline):
            continue
        for row in ok[ok["run_id"].astype(str) == str(rid)].to_dict("records"):
            same = pairs.get(pair(row), [])
            base = base_rows.get(key(row)) or (same[0] if len(same) == 1 else None)
            line = {"run": labels.get(str(rid), rid), "row": f"{row['method']} [{row['setting']}]"}
            for column, header, stem in CHANGE_FIGURES:
                line[header] = change_text(*change_interval(base, row, column, stem)) if base else "not in baseline"
            lines.append(line)
    return pd.DataFrame(lines, columns=["run", "row", *[h for _, h, _ in CHANGE_FIGURES]])

"""History's data: every CSV in the results folder (other machines' files dropped there too) plus uploads,
filtered, with the runs to compare picked out. pandas only: no gradio, so it is tested and reused without it.
"""
from __future__ import annotations

from html import escape
from pathlib import Path

import pandas as pd

from bench import store

HISTORY_COLUMNS = [
    "run_id", "timestamp", "status", "method", "setting", "engine", "model", "device", "device_name",
    "quantization", "attention", "batch_size", "tokens_per_s_per_sequence_median",
    "aggregate_tokens_per_s_median", "latency_ms_median", "ttft_ms_median", "peak_allocated_mib",
    "speedup_vs_standard", "acceptance_rate", "error",
]
FILTERS = ("model", "method", "device", "run_id")
HISTORY_TABLE_ROWS = 500  # the browser gets the newest rows; Export CSV has all filtered rows


def history_files(results_path: Path, uploaded: list[str] | None) -> list[Path]:
    return sorted(results_path.parent.glob("*.csv")) + [Path(p) for p in uploaded or []]


def load_history(files: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """All rows of all files; a file that cannot be read is reported, not fatal."""
    frames, problems = [], []
    for path in files:
        try:
            frames.append(store.load_rows([path]))
        except Exception as e:  # a stray or broken CSV in the folder must not take History down
            problems.append(f"{path.name}: {' '.join(str(e).split())[:200]}")
    frames = [f for f in frames if not f.empty]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=store.COLUMNS)
    return df, problems


def filter_rows(df: pd.DataFrame, selected: dict[str, list]) -> pd.DataFrame:
    mask = pd.Series(True, index=df.index)
    for key, values in selected.items():
        if values:
            mask &= df[key].astype(str).isin([str(v) for v in values])
    return df[mask]


def run_choices(df: pd.DataFrame) -> list[tuple[str, str]]:
    """Runs newest first, labelled with what tells them apart."""
    if df.empty:
        return []
    g = df.groupby("run_id", sort=False).agg(
        timestamp=("timestamp", "min"), model=("model", "first"), device=("device_name", "first"),
        rows=("run_id", "size"))
    g = g.sort_values("timestamp", ascending=False)
    return [(f"{rid} · {r.model} · {r.device} · {r.rows} rows", str(rid)) for rid, r in g.iterrows()]


def filter_choices(df: pd.DataFrame, key: str) -> list:
    """What a filter offers: runs as (label, run_id), newest first; other keys as sorted values."""
    return run_choices(df) if key == "run_id" else sorted(df[key].dropna().astype(str).unique())


def still_valid(values: list | None, choices: list) -> list:
    """Picked values that are still offered."""
    valid = {c[1] if isinstance(c, tuple) else c for c in choices}
    return [v for v in values or [] if v in valid]


def with_picked(choices: list, picked: list | None) -> list:
    """Choices plus any picked value they no longer hold (its file was dropped), marked as gone: the
    filter keeps what the user ticked, and the user can untick it."""
    valid = {c[1] if isinstance(c, tuple) else c for c in choices}
    gone = [v for v in picked or [] if v not in valid]
    if not gone:
        return choices
    if choices and isinstance(choices[0], tuple) or not choices:
        return list(choices) + [(f"{v} (not in the loaded files)", v) for v in gone]
    return list(choices) + gone


def history_view(df: pd.DataFrame, selected: dict[str, list]):
    """(filtered rows, table for the browser, rows the charts compare)."""
    rows = filter_rows(df, selected)
    # Reversed first: rows written in the same second keep their file order, newest first.
    newest = rows.iloc[::-1].sort_values("timestamp", ascending=False, kind="stable")
    table = newest.head(HISTORY_TABLE_ROWS)[HISTORY_COLUMNS]
    table = table.astype(object).where(table.notna(), None)
    # Charts compare the runs picked in the run filter; with none picked, the newest run.
    runs = selected.get("run_id") or newest["run_id"].head(1).tolist()
    compared = rows[rows["run_id"].astype(str).isin([str(r) for r in runs])]
    return rows, table, compared


def info_md(df: pd.DataFrame, rows: pd.DataFrame, compared: pd.DataFrame, files: list[Path], folder: Path,
            uploads: bool, problems: list[str]) -> str:
    """The line above the table: how much is shown of how much, and from where."""
    info = (f"**{len(rows):,}** of {len(df):,} rows · {rows['run_id'].nunique():,} runs · {len(files)} CSV file(s) "
            f"from `{folder}`{' and uploads' if uploads else ''}. Table: newest "
            f"{min(len(rows), HISTORY_TABLE_ROWS):,} rows (Export has all). Charts compare "
            f"{compared['run_id'].nunique()} run(s): pick runs in the Runs filter (default: the newest).")
    if problems:
        info += "\n\n**could not read:** " + "; ".join(escape(p) for p in problems)
    return info

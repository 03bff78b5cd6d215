"""History's data: every CSV in the results folder (other machines' files dropped there too) plus uploads,
with the sidecar's names, tags, notes and hidden marks laid over them (store/notebook.py), filtered, with
the runs to compare picked out, a baseline's percent changes and the settings the runs differ in.
pandas only: no gradio, so it is tested and reused without it.
"""
from __future__ import annotations

from html import escape
from pathlib import Path

import pandas as pd

from store import archive, csv_records, notebook
from views import compare, table

# The table: (column shown, header). Figures are rounded and intervals shown as the CLI shows them.
HISTORY_COLUMNS = [
    "run_id", "run_name", "run_tags", "timestamp", "status", "method", "setting", "engine", "model", "device",
    "device_name", "quantization", "attention", "batch_size", "tokens_per_s_per_sequence_median",
    "tok/s/seq 95% CI", "unstable", "aggregate_tokens_per_s_median", "latency_ms_median", "ttft_ms_median",
    "peak_allocated_mib", "peak_rss_mib", "speedup_vs_standard", "acceptance_rate", "target_nll", "greedy_match",
    "heldout_ppl", "error",
]
ROUNDED = {"tokens_per_s_per_sequence_median": 1, "aggregate_tokens_per_s_median": 1, "latency_ms_median": 1,
           "ttft_ms_median": 1, "peak_allocated_mib": 0, "peak_rss_mib": 0, "acceptance_rate": 2, "target_nll": 2,
           "greedy_match": 2, "heldout_ppl": 1}
FILTERS = ("model", "method", "device", "device_name", "run_id")
HISTORY_TABLE_ROWS = 500  # the browser gets the newest rows; Export CSV has all filtered rows
_CACHE: dict[tuple, pd.DataFrame] = {}  # (path, size, mtime) -> rows: a tick in a filter re-reads nothing


def history_files(results_path: Path, uploaded: list[str] | None) -> list[Path]:
    return sorted(results_path.parent.glob("*.csv")) + [Path(p) for p in uploaded or []]


def read_rows(path: Path) -> pd.DataFrame:
    """One CSV's rows; a file that is not a results file of this tool raises ValueError saying why."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        with open(path, "rb") as f:
            why = csv_records.foreign_reason(f.read(csv_records.CHECK_BYTES))
        if why:
            raise ValueError(f"not a decoding-bench results file: {why}")
        if len(_CACHE) > 16:
            _CACHE.clear()
        _CACHE[key] = archive.load_rows([path])
    return _CACHE[key]


def load_history(files: list[Path], results_path: Path | None = None) -> tuple[pd.DataFrame, list[str]]:
    """All rows of all files with the sidecar beside results_path laid over them; a file that cannot be read
    is reported, not fatal."""
    frames, problems = [], []
    for path in files:
        try:
            frames.append(read_rows(path))
        except Exception as e:  # a stray or broken CSV in the folder must not take History down
            problems.append(f"{path.name}: {' '.join(str(e).split())[:200]}")
    frames = [f for f in frames if not f.empty]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=archive.COLUMNS)
    meta = notebook.load_meta(results_path) if results_path is not None else {}
    return notebook.apply_meta(df, meta), problems


def visible(df: pd.DataFrame, show_hidden: bool) -> pd.DataFrame:
    return df if show_hidden or "hidden" not in df else df[~df["hidden"].astype(bool)]


def filter_rows(df: pd.DataFrame, selected: dict[str, list]) -> pd.DataFrame:
    mask = pd.Series(True, index=df.index)
    for key, values in selected.items():
        if values and key in df:
            mask &= df[key].astype(str).isin([str(v) for v in values])
    return df[mask]


def run_choices(df: pd.DataFrame) -> list[tuple[str, str]]:
    """Runs newest first, labelled with what tells them apart: name or id, device, model, date, rows."""
    return [(notebook.choice_label(line), str(line["run_id"])) for line in notebook.run_overview(df).to_dict("records")]


def filter_choices(df: pd.DataFrame, key: str, runs: list | None = None) -> list:
    """What a filter offers: runs as (label, run_id), newest first (runs: run_choices(df) when known);
    other keys as sorted values."""
    if key == "run_id":
        return run_choices(df) if runs is None else runs
    return sorted(v for v in df[key].dropna().astype(str).unique() if v)


def with_picked(choices: list, picked: list | None, hidden: set[str] = frozenset()) -> list:
    """Choices plus any picked value they no longer hold, marked: "hidden" for a run hidden in the notebook,
    else gone (its file was dropped). The filter keeps what the user ticked, and the user can untick it."""
    valid = {c[1] if isinstance(c, tuple) else c for c in choices}
    gone = [v for v in picked or [] if v not in valid]
    if not gone:
        return choices
    if choices and isinstance(choices[0], tuple) or not choices:
        return list(choices) + [(f"{v} (hidden)" if v in hidden else f"{v} (not in the loaded files)", v)
                                for v in gone]
    return list(choices) + gone


# Settings that change what a figure measures: percent changes across runs that differ in them compare
# different workloads or machines, and the page says so above the change table.
WORKLOAD_KEYS = ["model", "dtype", "quantization", "max_new_tokens", "stop_at_eos", "num_prompts", "sequences",
                 "device", "device_name", "cpu_model", "gpu_count"]


def workload_note(compared: pd.DataFrame, baseline: str | None) -> str:
    """One line when the compared runs' workloads or machines differ ('' when they agree or no baseline)."""
    runs = compared_runs(compared)
    if not baseline or len(runs) < 2:
        return ""
    diff = compare.settings_diff(compared, runs)
    differing = diff[diff["key"].isin(WORKLOAD_KEYS)]
    if differing.empty:
        return ""
    parts = [f"{line['key']}: {' vs '.join(dict.fromkeys(str(v) for v in line.iloc[1:] if str(v)))}"
             for _, line in differing.iterrows()]
    return "⚠ The compared runs differ in workload or machine (" + "; ".join(parts) + \
        "): a percent change compares those too."


def table_view(rows: pd.DataFrame) -> pd.DataFrame:
    """The browser's table: figures rounded, the tok/s interval and speedups as the CLI writes them."""
    needed = [c for c in rows.columns if c in HISTORY_COLUMNS or c.startswith(("tokens_per_s_per_sequence_ci",
                                                                                 "speedup_vs_standard"))]
    records = rows[needed].to_dict("records")
    out = pd.DataFrame(index=range(len(rows)))
    for column in HISTORY_COLUMNS:
        if column == "tok/s/seq 95% CI":
            out[column] = [table.CELLS["interval"](r, "tokens_per_s_per_sequence") for r in records]
        elif column == "unstable":
            out[column] = [table.CELLS["unstable"](r, "unstable") for r in records]
        elif column == "speedup_vs_standard":
            out[column] = [table.CELLS["speedup"](r, column) for r in records]
        elif column in ROUNDED:
            values = rows[column] if column in rows else pd.Series([None] * len(rows))
            out[column] = pd.to_numeric(values, errors="coerce").round(ROUNDED[column]).to_numpy()
        else:
            out[column] = rows[column].to_numpy() if column in rows else None
    return out.astype(object).where(out.notna(), None)


def history_view(df: pd.DataFrame, selected: dict[str, list], baseline: str | None = None):
    """(filtered rows, table for the browser, rows the charts compare). The charts compare the runs picked in
    the run filter (with none picked, the newest), and the baseline run when one is set."""
    rows = filter_rows(df, selected)
    # Reversed first: rows written in the same second keep their file order, newest first.
    newest = rows.iloc[::-1].sort_values("timestamp", ascending=False, kind="stable")
    table = table_view(newest.head(HISTORY_TABLE_ROWS))
    runs = [str(r) for r in selected.get("run_id") or newest["run_id"].head(1).tolist()]
    if baseline and baseline not in runs:
        runs = [baseline, *runs]
    unpicked = {k: v for k, v in selected.items() if k != "run_id"}
    compared = filter_rows(df, unpicked)
    compared = compared[compared["run_id"].astype(str).isin(runs)]
    if baseline:  # the baseline's rows count whatever the other filters say: they are what is compared against
        compared = pd.concat([compared[compared["run_id"].astype(str) != baseline],
                              df[df["run_id"].astype(str) == baseline]], ignore_index=True)
    return rows, table, compared


def compared_runs(compared: pd.DataFrame) -> list[str]:
    """Run ids of the compared rows, newest first."""
    return [str(r) for r in notebook.run_overview(compared)["run_id"]]


def change_table(compared: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    """Percent change of each compared row against the baseline run (empty without a baseline)."""
    if not baseline or compared.empty:
        return pd.DataFrame(columns=["run", "row", *[h for _, h, _ in compare.CHANGE_FIGURES]])
    return compare.percent_change(compared, baseline, compared_runs(compared))


def diff_table(compared: pd.DataFrame) -> pd.DataFrame:
    """The settings and environment keys the compared runs differ in, side by side."""
    runs = compared_runs(compared)
    if len(runs) < 2:
        return pd.DataFrame(columns=["key"])
    return compare.settings_diff(compared, runs)


def info_md(df: pd.DataFrame, rows: pd.DataFrame, compared: pd.DataFrame, files: list[Path], folder: Path,
            uploads: bool, problems: list[str], hidden: int = 0) -> str:
    """The line above the table: how much is shown of how much, and from where."""
    info = (f"**{len(rows):,}** of {len(df):,} rows · {rows['run_id'].nunique():,} runs · {len(files)} CSV file(s) "
            f"from `{folder}`{' and uploads' if uploads else ''}. Table: newest "
            f"{min(len(rows), HISTORY_TABLE_ROWS):,} rows (Export has all). Charts compare "
            f"{compared['run_id'].nunique()} run(s): pick runs in the Runs filter (default: the newest).")
    if hidden:
        info += f" {hidden} hidden run(s) not shown (tick *Show hidden runs*)."
    if problems:
        info += "\n\n**could not read:** " + "; ".join(escape(p) for p in problems)
    return info

"""Runs as a lab notebook: names, tags, notes and hiding, and runs as a whole (labels, one line per run).

runs.csv stays append-only. A run is named, tagged and annotated when it starts (config keys `name`,
`tags`, `run_notes`, stored in the CSV's run_name, run_tags and run_notes columns); renaming, re-tagging,
annotating or hiding it afterwards goes to a sidecar beside the CSV, never into the CSV:

    runs_meta.json   {"runs": {"<run_id>": {"name": "...", "tags": ["a", "b"], "notes": "...", "hidden": true}}}

Readers lay the sidecar over the CSV's columns (`apply_meta`). Hiding a run only marks it: no row is
deleted, and History shows hidden runs again on request. The sidecar is replaced whole under a lock
(write to a temporary file, fsync, rename), so two writers never lose each other's change and a reader
never sees half a file.

The rest are pure functions of rows (pandas, no gradio, no torch), shared by History, the charts and the HTML
report: run labels (`name or run id · device name`) and one line per run. Comparing runs with each other (the
settings they differ in, percent change against a baseline) is views/compare.py's.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

META_FILE = "runs_meta.json"
FIELDS = ("name", "tags", "notes", "hidden")
COLUMN_OF = {"name": "run_name", "tags": "run_tags", "notes": "run_notes"}  # sidecar field -> CSV column


class MetaError(Exception):
    """The sidecar cannot be written; one line."""


def meta_path(results_path: str | Path) -> Path:
    return Path(results_path).parent / META_FILE


def tag_list(value) -> list[str]:
    """Tags from a list, or a comma-separated string ("a, b"), without blanks or repeats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return list(dict.fromkeys(t.strip() for t in map(str, items) if t.strip()))


def tags_text(value) -> str:
    return ", ".join(tag_list(value))


def load_meta(results_path: str | Path) -> dict[str, dict]:
    """run_id -> its sidecar entry; {} when there is no sidecar, or one that is not ours (never fatal)."""
    try:
        data = json.loads(meta_path(results_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    runs = data.get("runs") if isinstance(data, dict) else None
    return {str(k): v for k, v in runs.items() if isinstance(v, dict)} if isinstance(runs, dict) else {}


def update_meta(results_path: str | Path, run_id: str, **changes) -> dict:
    """Set fields of one run's entry (name, tags, notes, hidden); returns the entry. A field set to None is
    removed, so the CSV's own value shows again."""
    from store.files import StoreError, locked

    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown run fields: {', '.join(sorted(unknown))} (allowed: {', '.join(FIELDS)})")
    path = meta_path(results_path)
    try:
        with locked(path):
            runs = load_meta(results_path)
            entry = dict(runs.get(str(run_id), {}))
            for key, value in changes.items():
                if value is None:
                    entry.pop(key, None)
                else:
                    entry[key] = tag_list(value) if key == "tags" else bool(value) if key == "hidden" else str(value)
            if entry:
                runs[str(run_id)] = entry
            else:
                runs.pop(str(run_id), None)
            write_whole(path, json.dumps({"runs": runs}, indent=2, ensure_ascii=False) + "\n")
    except (OSError, StoreError) as e:
        raise MetaError(f"cannot write {path}: {getattr(e, 'strerror', None) or e}") from None
    return entry


def write_whole(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def apply_meta(df: pd.DataFrame, meta: dict[str, dict]) -> pd.DataFrame:
    """A copy of df with the sidecar laid over run_name, run_tags and run_notes, and a `hidden` column."""
    out = df.copy()
    for column in COLUMN_OF.values():
        if column not in out:
            out[column] = ""
        out[column] = out[column].astype(object).where(out[column].notna(), "").astype(str)
    out["hidden"] = False
    if out.empty or not meta:
        return out
    ids = out["run_id"].astype(str)
    for run_id, entry in meta.items():
        mask = ids == run_id
        if not mask.any():
            continue
        for field, column in COLUMN_OF.items():
            if field in entry:
                out.loc[mask, column] = tags_text(entry[field]) if field == "tags" else str(entry[field])
        out.loc[mask, "hidden"] = bool(entry.get("hidden", False))
    return out


# --- runs as a whole -----------------------------------------------------------------------------------


def text(value) -> str:
    """A cell as text: empty for missing values, whole floats without their '.0' (CSV columns with gaps are
    read as floats: top_k 0.0, num_draft_tokens 5.0)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) in ("nan", "<NA>"):
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def per_run(df: pd.DataFrame) -> pd.DataFrame:
    """One line per run (index: run_id as text, in first-seen order): the first value of each run-level column,
    the earliest timestamp, row and ok counts, hidden. Vectorized: History lists thousands of runs."""
    ids = df["run_id"].astype(str)
    columns = [c for c in ("run_name", "run_tags", "run_notes", "model", "device_name") if c in df]
    frame = df[columns].astype(object).where(df[columns].notna(), "").astype(str).replace({"nan": "", "<NA>": ""})
    grouped = frame.groupby(ids, sort=False)
    out = grouped.first()
    for c in ("run_name", "run_tags", "run_notes", "model", "device_name"):
        if c not in out:
            out[c] = ""
    out["started"] = df["timestamp"].astype(str).groupby(ids, sort=False).min()
    out["rows"] = ids.groupby(ids, sort=False).size()
    out["ok"] = (df["status"].astype(str) == "ok").groupby(ids, sort=False).sum().astype(int)
    out["hidden"] = (df["hidden"].astype(bool).groupby(ids, sort=False).any() if "hidden" in df
                     else pd.Series(False, index=out.index))
    return out


def labels_of(runs: pd.DataFrame) -> pd.Series:
    """`name or run id · device name` per run of per_run(); a label two runs would share gets the run id."""
    ids = pd.Series(runs.index, index=runs.index)
    base = runs["run_name"].where(runs["run_name"] != "", ids)
    label = base.where(runs["device_name"] == "", base + " · " + runs["device_name"])
    shared = label.duplicated(keep=False) & (base != ids)
    return label.where(~shared, label + " (" + ids + ")")


def run_labels(df: pd.DataFrame) -> dict[str, str]:
    """run_id -> `name or run id · device name`, the label legends and pickers use; a label two runs would
    share gets the run id added, so no two runs ever merge in a chart."""
    if df is None or df.empty:
        return {}
    return labels_of(per_run(df)).to_dict()


def run_overview(df: pd.DataFrame) -> pd.DataFrame:
    """One line per run, newest first: id, label, name, tags, notes, hidden, start, model, device, rows."""
    columns = ["run_id", "label", "name", "tags", "notes", "hidden", "started", "model", "device_name", "rows", "ok"]
    if df is None or df.empty:
        return pd.DataFrame(columns=columns)
    runs = per_run(df)
    out = pd.DataFrame({
        "run_id": runs.index, "label": labels_of(runs).to_numpy(), "name": runs["run_name"].to_numpy(),
        "tags": [tags_text(t) for t in runs["run_tags"]], "notes": runs["run_notes"].to_numpy(),
        "hidden": runs["hidden"].to_numpy(), "started": runs["started"].to_numpy(), "model": runs["model"].to_numpy(),
        "device_name": runs["device_name"].to_numpy(), "rows": runs["rows"].to_numpy(), "ok": runs["ok"].to_numpy(),
    }, columns=columns)
    return out.sort_values("started", ascending=False, kind="stable").reset_index(drop=True)


def choice_label(line) -> str:
    """What a run picker shows: label, model, date and row count."""
    date = str(line["started"])[:16].replace("T", " ")
    hidden = " · hidden" if line["hidden"] else ""
    tags = f" · [{line['tags']}]" if line["tags"] else ""
    return f"{line['label']} · {line['model']} · {date} · {line['rows']} rows{tags}{hidden}"

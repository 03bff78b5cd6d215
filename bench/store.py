"""Results on disk: runs.csv (one row per method x setting, append-only) and outputs.jsonl (every text).

A row is written with one os.write of one complete line followed by fsync, so a crash, Ctrl-C or
kill leaves either the whole row or none of it, and never touches rows already there.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

COLUMNS = [
    # identity
    "run_id", "timestamp", "status", "error", "method", "setting", "engine",
    # settings
    "model", "draft_model", "dtype", "quantization", "attention", "device", "random_weights",
    "batch_size", "do_sample", "temperature", "top_p", "top_k", "num_beams", "num_return_sequences",
    "num_draft_tokens", "max_new_tokens", "stop_at_eos", "num_prompts", "sequences", "warmup", "repetitions", "calls",
    # figures
    "prompt_tokens", "new_tokens", "latency_ms_median", "latency_ms_p90", "latency_ms_std",
    "ttft_ms_median", "ttft_ms_p90", "tpot_ms_median", "tpot_ms_p90",
    "tokens_per_s_per_sequence_median", "tokens_per_s_per_sequence_std",
    "aggregate_tokens_per_s_median", "aggregate_tokens_per_s_std",
    "peak_allocated_mib", "peak_reserved_mib", "start_allocated_mib",
    "drafted_tokens", "accepted_tokens", "acceptance_rate", "mean_accepted_tokens",
    "speedup_vs_standard", "throughput_vs_standard", "warmup_s", "compile_s", "notes",
    # environment
    "device_name", "device_memory_gib", "gpu_count", "torch_version", "transformers_version",
    "bitsandbytes_version", "cuda_version", "python_version", "hostname",
]


def outputs_path(csv_path: str | Path) -> Path:
    return Path(csv_path).with_name("outputs.jsonl")


def format_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def encode_line(columns: list[str], row: dict) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([format_value(row.get(c)) for c in columns])
    return buffer.getvalue()


def append_whole(path: Path, text: str) -> None:
    """Append text with a single write and fsync: a killed process cannot leave half of it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = text.encode()
        written = os.write(fd, data)
        while written < len(data):  # only on exotic filesystems; the line is still completed
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def header_of(path: Path) -> list[str] | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, newline="") as f:
        return next(csv.reader(f), None)


def append_row(path: str | Path, row: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = header_of(path)
    if header is None:
        append_whole(path, encode_line(COLUMNS, {c: c for c in COLUMNS}) + encode_line(COLUMNS, row))
        return
    if header != COLUMNS and set(COLUMNS) - set(header):
        header = upgrade_header(path, header)
    append_whole(path, encode_line(header, row))


def upgrade_header(path: Path, header: list[str]) -> list[str]:
    """An older file gains the newer columns (empty in its old rows), rewritten atomically."""
    columns = header + [c for c in COLUMNS if c not in header]
    with open(path, newline="") as f:
        # A ragged old row puts its extra fields under None: dropped, never a crash mid-run.
        old_rows = [{k: v for k, v in r.items() if k is not None} for r in csv.DictReader(f)]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(old_rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return columns


def append_outputs(csv_path: str | Path, records: list[dict]) -> None:
    if records:
        path = outputs_path(csv_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        append_whole(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def load_rows(paths) -> "pd.DataFrame":
    """Rows from one or more CSVs (other machines' included), merged by column name."""
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = [pd.read_csv(p) for p in paths if Path(p).exists() and Path(p).stat().st_size > 0]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = pd.NA
    return df


def load_outputs(csv_path: str | Path) -> list[dict]:
    path = outputs_path(csv_path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash on an exotic filesystem is skipped, not fatal
    return records

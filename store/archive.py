"""Results on disk: runs.csv (one row per method x setting, append-only) and outputs.jsonl (every text).

What the store promises (README, "What the store promises"):

- A row is one os.write of one complete line followed by fsync. If the write or the fsync fails (a
  full disk), the file is cut back to its size before the row and StoreError says so in one line.
- Writers hold an advisory lock (flock on `<csv>.lock`, beside the CSV's real file) for the whole
  of an append, the repair of a torn tail and a header upgrade, so parallel processes never write
  the header twice or lose rows.
- A torn last line (a crash or full disk mid-write, a copy cut short) is moved to a
  `<file>.corrupt-<timestamp>` sidecar before the next append, with a one-line warning: never glued.
- A file that is not ours (foreign header, not UTF-8) is refused, never rewritten.
- append_result writes a row's texts first and its CSV row second, so a kill between the two leaves
  texts without a row (ignored by load_outputs), never a row without its texts.

This module is the append and load API; files.py keeps the promises for any file (lock, whole writes, torn
tails), csv_records.py those of the CSV's records (foreign files, header upgrades), export.py the downloads.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where frames are made: the CLI's store writes need none
    import pandas as pd

from metrics.rows import COLUMNS, TEXT_COLUMNS
from store import csv_records, files

ROW_KEY_FIELDS = ("run_id", "method", "setting", "engine", "quantization", "attention")


def outputs_path(csv_path: str | Path) -> Path:
    return Path(csv_path).with_name("outputs.jsonl")


def row_key(row: dict) -> str:
    """What ties a text in outputs.jsonl to its CSV row; built from the same strings the CSV holds."""
    return "|".join(csv_records.format_value(row.get(k)) for k in ROW_KEY_FIELDS)


def check_results_file(path: str | Path) -> str | None:
    """A one-line message when `path` exists and is not a results file of this tool, else None.

    Call it with the config check, before any model loads. Missing and empty files are fine.
    """
    p = Path(path)
    if p.is_dir():
        return f"config key 'results': '{path}' is a folder; pick a .csv file path"
    for file in (p, outputs_path(p), p.with_name("requests.jsonl")):
        # Opening a FIFO waits for a writer, and a device never ends: only regular files (or none yet) will do.
        if file.exists() and not file.is_file():
            return (f"config key 'results': '{file}' is not a regular file (a pipe, a device or a socket); "
                    "pick a .csv path of a regular file or one that does not exist yet")
    try:
        with open(p, "rb") as f:
            data = f.read(csv_records.CHECK_BYTES)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"config key 'results': cannot read '{path}' ({files.reason(e)}); pick a readable .csv path"
    why = csv_records.foreign_reason(data)
    if why is None:
        return None
    return f"config key 'results': '{path}' exists and is not a decoding-bench results file ({why}); pick another .csv path"


# --- writing -----------------------------------------------------------------------------------------


def append_row(path: str | Path, row: dict) -> None:
    """Append one row (a header first into a new file); raises StoreError, one line, on failure."""
    with files.locked(path) as real:
        header = csv_records.prepare_csv(real, path)
        files.append_whole(real, csv_records.row_text(header, row), path)


def keyed(records: list[dict], key: str | None = None) -> list[dict]:
    """Records with their row_key: the row's, or built from each record's own copy of the row's fields
    (a record without them gets none, and readers always keep it)."""
    if key is not None:
        return [{**r, "row_key": key} for r in records]
    return [{**r, "row_key": row_key(r)} if all(k in r for k in ROW_KEY_FIELDS) else r for r in records]


def encode_records(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def append_outputs(csv_path: str | Path, records: list[dict]) -> None:
    """Texts alone, for a row already written; append_result writes both together."""
    if records:
        with files.locked(csv_path):
            path = outputs_path(csv_path)
            files.prepare_jsonl(path)
            files.append_whole(path, encode_records(keyed(records)))


def append_result(csv_path: str | Path, row: dict, outputs: list[dict]) -> None:
    """A row and its texts, under one lock: texts first, then the row.

    A kill between the two leaves texts without a row, which load_outputs ignores; never a row
    without its texts. If the row cannot be written, the texts just written are cut off again.
    Raises StoreError (one line) when either file cannot be written or the CSV is foreign.
    """
    with files.locked(csv_path) as real:
        header = csv_records.prepare_csv(real, csv_path)  # first: a foreign CSV gets no texts beside it either
        out = outputs_path(csv_path)
        before = None
        if outputs:
            files.prepare_jsonl(out)
            before = files.append_whole(out, encode_records(keyed(outputs, row_key(row))))
        try:
            files.append_whole(real, csv_records.row_text(header, row), csv_path)
        except files.StoreError:
            if before is not None:
                files.truncate_path(out, before)
            raise


# --- reading -----------------------------------------------------------------------------------------


def complete_csv(path: str | Path) -> bytes:
    """The file without a torn last record, so a reader never sees half a row."""
    data = files.read_bytes(Path(path))
    return data[:csv_records.csv_good_size(data)]


def load_rows(paths) -> "pd.DataFrame":
    """Rows from one or more CSVs (other machines' included), merged by column name."""
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for p in paths:
        data = complete_csv(p)
        if data.strip():
            frames.append(read_frame(pd, data))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    missing = [c for c in COLUMNS if c not in df.columns]  # an older CSV: its newer columns are empty
    if missing:
        df = pd.concat([df, pd.DataFrame(pd.NA, index=df.index, columns=missing)], axis=1)
    return df


# pandas' own missing-value words, for the columns of numbers only: in a text column they are text.
MISSING_WORDS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
                 "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]


def read_frame(pd, data: bytes) -> "pd.DataFrame":
    """One CSV's rows; a text column keeps every word as written (only an empty cell is missing)."""
    header = csv_records.parse_record(data[:csv_records.first_record_end(data) or len(data)])
    text = set(TEXT_COLUMNS) & set(header)
    return pd.read_csv(io.BytesIO(data), keep_default_na=False, dtype={c: str for c in text},
                       na_values={c: ([""] if c in text else MISSING_WORDS) for c in header})


def row_keys(csv_path: str | Path) -> set[str]:
    data = complete_csv(csv_path)
    if not data:
        return set()
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    return {"|".join(r.get(k) or "" for k in ROW_KEY_FIELDS) for r in csv.DictReader(io.StringIO(text, newline=""))}


def load_outputs(csv_path: str | Path, orphans: bool = False) -> list[dict]:
    """Every text in outputs.jsonl whose CSV row exists.

    Texts are written before their row, so a run killed between the two leaves texts whose row_key
    matches no row: they are dropped here (orphans=True keeps them). Records from before row_key
    existed are always kept.
    """
    path = outputs_path(csv_path)
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line not yet moved aside by the next append
        if isinstance(record, dict):
            records.append(record)
    if orphans or not any("row_key" in r for r in records):
        return records
    keys = row_keys(csv_path)
    return [r for r in records if "row_key" not in r or r["row_key"] in keys]

"""requests.jsonl beside the CSV: one line per request of every load row, so figures can be recomputed later
(the SLO explorer recomputes goodput for new targets without rerunning anything).

Written with the store's lock and whole-write helpers, before the row's texts and the row itself: a kill in
between leaves records whose row_key matches no row, which load_requests ignores, as load_outputs does.
"""
from __future__ import annotations

import json
from pathlib import Path

from store import archive, files


def requests_path(csv_path: str | Path) -> Path:
    return Path(csv_path).with_name("requests.jsonl")


def append_requests(csv_path: str | Path, row: dict, records: list[dict]) -> None:
    """The records of one row, keyed like its texts; raises StoreError (one line) when they cannot be written."""
    if not records:
        return
    key = archive.row_key(row)
    text = "".join(json.dumps({"run_id": row["run_id"], "row_key": key, **r}, ensure_ascii=False) + "\n"
                   for r in records)
    with files.locked(csv_path):
        path = requests_path(csv_path)
        files.prepare_jsonl(path)
        files.append_whole(path, text, path)


def load_requests(csv_path: str | Path, row_keys: set[str] | None = None) -> list[dict]:
    """Every record whose CSV row exists (or, given row_keys, of those rows only)."""
    path = requests_path(csv_path)
    if not path.exists():
        return []
    keys = archive.row_keys(csv_path) if row_keys is None else set(row_keys)
    records = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line not yet moved aside by the next append
        if isinstance(record, dict) and record.get("row_key") in keys:
            records.append(record)
    return records

"""The files on disk, locked and append-only; only this package writes them.

    archive.py      runs.csv and outputs.jsonl: append a row with its texts, load rows and texts
    requests.py     requests.jsonl: one record per request of every load row
    notebook.py     runs_meta.json: names, tags, notes and hiding of runs, never in the CSV
    files.py        the lock, whole writes, fsync, torn tails moved aside (StoreError)
    csv_records.py  CSV records: encoding, parsing, foreign files refused, older headers upgraded
    export.py       spreadsheet-safe exports
"""

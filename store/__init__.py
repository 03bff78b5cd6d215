"""The files on disk: runs.csv and outputs.jsonl (results), requests.jsonl (requests), the run notebook sidecar
(notebook). Locked and append-only; only this package writes them."""

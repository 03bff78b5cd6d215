"""What the app hands every page: where rows go, where downloads may be served from, the one-run lock and the
board of the runs the app owns."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

# For events that only move the UI (fill the form, switch a filter): they must never wait in the queue
# behind a benchmark, and API clients have no business calling them.
UI_ONLY = dict(concurrency_limit=None, api_visibility="private")


@dataclass
class AppContext:
    results_path: Path  # absolute; pinned for the app's lifetime, since History and downloads read its folder
    run_lock: threading.Lock
    allowed_models: frozenset[str] | None = None  # a shared dashboard's allow-list (access.py); None: any model
    board: "RunBoard" = field(init=False)  # the runs this app owns (jobs.py): they outlive any browser tab

    def __post_init__(self):
        from bench.dashboard.jobs import RunBoard

        self.board = RunBoard(self.run_lock)

    @property
    def exports(self) -> Path:
        """The only folder the server may hand files out of (see app.launch_options)."""
        return self.results_path.parent / "exports"

    def export_file(self, prefix: str, suffix: str) -> Path:
        self.exports.mkdir(parents=True, exist_ok=True)
        return self.exports / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}{suffix}"

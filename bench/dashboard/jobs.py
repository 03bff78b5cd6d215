"""Runs owned by the server process, not by a browser tab.

A run started from the dashboard (the form or the `run` API) is handed to the app's RunBoard, which measures
it on a worker thread of its own, one run at a time, in the order they came. Pages only watch a RunJob: a
tab that closes or reloads leaves the run going, a reloaded page finds its runs again by its owner (an id kept
in the browser's localStorage), and Stop sets the run's stop event directly, without waiting in any queue
behind the run itself. A stopped run ends at the next generation step and keeps its whole repetitions
(bench.runner.finish), as Ctrl-C does in the CLI.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

from bench.config import Config
from bench.runner import CallProgress, Progress, RowDone, Stopped, new_run_id, points, run, total_rows
from metrics.rows import one_line

ACTIVE = ("queued", "running")
KEEP_FINISHED = 50  # finished jobs kept in memory for pages that reattach; their rows are on disk anyway


@dataclass
class RunJob:
    config: Config
    owner: str  # the browser's id (localStorage) or, for API clients, "session:<hash>"
    data: dict = field(default_factory=dict)  # the config keys as submitted: a reloaded page's form shows them
    run_id: str = field(default_factory=new_run_id)
    state: str = "queued"  # queued, running, done, stopped, failed, cancelled
    rows: list = field(default_factory=list)
    progress: Progress | None = None
    error: str = ""
    created: float = field(default_factory=time.time)
    started: float | None = None  # perf_counter of the start, and of the end
    ended: float | None = None
    measuring: float | None = None  # perf_counter when this variant's first measured call began
    stop: threading.Event = field(default_factory=threading.Event)
    version: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def name(self) -> str:
        return self.config.name or self.run_id

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def per_variant(self) -> int:
        """Rows of one model variant: they are measured together, interleaved."""
        return len(self.config.engine) * len(points(self.config))

    @property
    def total(self) -> int:
        return total_rows(self.config)

    def update(self, **values) -> None:
        with self.changed:
            for key, value in values.items():
                setattr(self, key, value)
            self.version += 1
            self.changed.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Blocks until the job changed after version `seen` (or timeout); returns the current version."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != seen, timeout=timeout)
            return self.version

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.perf_counter()) - self.started

    def eta(self) -> float | None:
        """Seconds left, from the calls measured so far in this variant at their own pace (later variants are
        taken to cost as much); None before the first measured call."""
        event = self.progress
        if not isinstance(event, CallProgress) or not event.calls_planned or not event.calls_done or not self.measuring:
            return None
        pace = (time.perf_counter() - self.measuring) / event.calls_done
        later = max(0, (event.total_rows - event.done_rows) // max(self.per_variant, 1) - 1)
        return pace * (event.calls_planned - event.calls_done + later * event.calls_planned)


class RunBoard:
    """The runs of one app: a FIFO of jobs measured one at a time on a worker thread, under the process's
    one-run lock (two apps in one process still never measure at once)."""

    def __init__(self, lock: threading.Lock):
        self.lock = lock
        self.jobs: list[RunJob] = []
        self.mutex = threading.Lock()
        self.todo: queue.Queue[RunJob] = queue.Queue()
        self.worker: threading.Thread | None = None

    def submit(self, config: Config, owner: str, data: dict | None = None) -> RunJob:
        job = RunJob(config, owner, dict(data or {}))
        with self.mutex:
            finished = [j for j in self.jobs if not j.active]
            for old in finished[:max(0, len(finished) - KEEP_FINISHED)]:
                self.jobs.remove(old)
            self.jobs.append(job)
            if self.worker is None or not self.worker.is_alive():
                self.worker = threading.Thread(target=self.work, name="bench-runs", daemon=True)
                self.worker.start()
        self.todo.put(job)
        return job

    def get(self, run_id: str | None) -> RunJob | None:
        with self.mutex:
            return next((j for j in self.jobs if j.run_id == run_id), None)

    def of(self, owner: str) -> list[RunJob]:
        with self.mutex:
            return [j for j in self.jobs if j.owner == owner]

    def ahead_of(self, job: RunJob) -> int:
        """How many runs measure before this queued one."""
        with self.mutex:
            return sum(j.active and j.created <= job.created for j in self.jobs if j is not job)

    def stop(self, owners: set[str]) -> list[RunJob]:
        """Stops every active run of these owners: a running one at its next step, a queued one never starts."""
        hit = [j for j in list(self.jobs) if j.owner in owners and j.active]
        for job in hit:
            job.stop.set()
            job.update()  # watchers redraw at once ("Stopping…")
        return hit

    def work(self) -> None:
        while True:
            job = self.todo.get()
            if job.stop.is_set():
                job.update(state="cancelled")
                continue
            with self.lock:
                if job.stop.is_set():  # stopped while another app's run held the lock
                    job.update(state="cancelled")
                    continue
                self.measure(job)

    def measure(self, job: RunJob) -> None:
        job.update(state="running", started=time.perf_counter())
        try:
            for event in run(job.config, job.stop, job.run_id):
                if isinstance(event, RowDone):
                    job.update(rows=job.rows + [event.row])
                elif isinstance(event, CallProgress) and event.calls_planned and not event.calls_done:
                    job.update(progress=event, measuring=time.perf_counter())  # until the first call is counted
                elif isinstance(event, Progress):
                    job.update(progress=event)
            job.update(state="done", ended=time.perf_counter())
        except Stopped:
            job.update(state="stopped", ended=time.perf_counter())
        except Exception as e:  # the app must stay usable whatever a run throws; its finished rows are kept
            job.update(state="failed", error=one_line(e), ended=time.perf_counter())

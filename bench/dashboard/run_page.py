"""Run: the config form, Run and Stop, and the live view of a run (progress, failed rows, table, chart).

The run itself is the `run` API endpoint: the Run button only turns the form into config JSON and hands it
to that endpoint, so the browser and API clients go through the same queue and the same checks.
"""
from __future__ import annotations

import json
import threading
import time
from html import escape
from pathlib import Path

import gradio as gr
import pandas as pd

from bench.config import Config, ConfigError, preset_names, preset_path, read_json
from bench.dashboard.access import check_model_access
from bench.dashboard.form import build_form, check, config_fields, form_dict, form_values
from bench.dashboard.html import IDLE, error_md, errors_md, event_progress, form_error_md, progress_html, run_failed_md
from bench.dashboard.results_page import ResultsPage
from bench.dashboard.shared import UI_ONLY, AppContext
from bench.runner import Progress, RowDone, Stopped, points, run, total_rows
from metrics.rows import one_line
from models.devices import cuda_problem
from store import archive
from views import charts, table

# session hash -> stop event of that session's running benchmark; Stop only stops your own run.
STOP_EVENTS: dict[str, threading.Event] = {}
# session hash -> one cancel event per run the session asked for that has not started (waiting in the queue),
# oldest first. Stop sets them all: a cancelled run leaves the queue without loading or writing anything.
QUEUED: dict[str, list[threading.Event]] = {}
# session hash -> how far its running benchmark is (0..1), so "Stopping…" keeps the bar where it was.
PROGRESS: dict[str, float] = {}

# The CLI's summary columns (views.table), speed first so it is visible without scrolling.
TABLE_FIRST = ["method", "setting", "status", "tokens_per_s_per_sequence_median", "tokens_per_s_per_sequence",
               "unstable", "speedup_vs_standard", "aggregate_tokens_per_s_median"]
TABLE_COLUMNS = sorted(table.COLUMNS, key=lambda c: TABLE_FIRST.index(c[0]) if c[0] in TABLE_FIRST else len(TABLE_FIRST))


def results_table(rows: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """One line per row as numbers (so the browser sorts them right), errors in the last column; the columns
    of the CLI's table for the same rows."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=archive.COLUMNS)
    out = pd.DataFrame()
    records = df.to_dict("records")
    # A run under load has per-request latencies and delivered rates, not per-call figures: the CLI's load table.
    columns = table.LOAD_COLUMNS if records and all(map(table.is_load_row, records)) else TABLE_COLUMNS
    for key, header, fmt in columns:
        if fmt in table.CELLS:  # intervals, marks and speedups rounded to their CI: text, as the CLI shows them
            col = pd.Series([table.CELLS[fmt](r, key) for r in records], dtype=object)
        else:
            col = df[key] if key in df else pd.Series([None] * len(df))
        if "f}" in fmt:  # "{:.1f}" -> round to 1 digit
            digits = int(fmt.split(".")[1][0])
            col = pd.to_numeric(col, errors="coerce").round(digits)
        out[{"95% CI": "tok/s/seq 95% CI", "!": "unstable"}.get(header, header)] = col.reset_index(drop=True)
    out["error"] = df["error"].fillna("").astype(str).to_numpy() if "error" in df else ""
    return out.astype(object).where(out.notna(), None)


def session_of(request: gr.Request | None) -> str:
    return (request.session_hash or "") if request else ""


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


CANCELLED = ("Cancelled: this run never started", "Stop was pressed while it waited in the queue; nothing was "
             "run and nothing was written")


def ends_method(config: Config, done: int) -> bool:
    """Is the done-th row the last setting of its method? Rows come per variant and engine, in points() order."""
    order = [p.method for p in points(config)]
    i = (done - 1) % len(order)
    return i == len(order) - 1 or order[i + 1] != order[i]


class RunPage:
    def __init__(self, ctx: AppContext, initial: dict | None = None):
        self.ctx = ctx
        results_path = str(ctx.results_path)
        with gr.Tab("Run", id="run", elem_id="run-tab"):
            self.run_state = gr.State("")  # run_id of this session's latest run; Samples follows it
            with gr.Row(equal_height=False):
                with gr.Column(scale=5, min_width=420, elem_id="config-form"):
                    with gr.Row():
                        self.preset = gr.Dropdown([("choose a preset…", "")] + preset_names(), value="",
                                                  label="Preset", info="fills the form from presets/",
                                                  elem_id="preset-dropdown", scale=2)
                        with gr.Column(scale=1, min_width=170):
                            self.upload = gr.UploadButton("Load JSON config", file_types=[".json"], size="sm",
                                                          elem_id="config-upload")
                            self.download = gr.Button("Download form as JSON", size="sm",
                                                      elem_id="config-download-button")
                    self.config_file = gr.File(label="Config file", visible=False, elem_id="config-download",
                                               interactive=False)
                    self.upload_note = gr.Markdown("", elem_id="config-upload-note")
                    self.inputs = build_form(results_path, initial)
                with gr.Column(scale=7, min_width=480, elem_id="run-output"):
                    with gr.Row():
                        self.run_btn = gr.Button("Run", variant="primary", elem_id="run-button", scale=3)
                        self.stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-button", scale=1)
                    self.config_error = gr.Markdown("", elem_id="config-error")
                    self.progress = gr.HTML(IDLE, elem_id="run-progress")
                    self.row_errors = gr.Markdown("", elem_id="run-errors")
                    self.table = gr.Dataframe(results_table([]), label="Results (one row per method × setting)",
                                              interactive=False, wrap=False, max_height=420, pinned_columns=2,
                                              elem_id="results-table")
                    self.live_chart = gr.Plot(charts.tokens_per_s(None), show_label=False, elem_id="chart-live")
                    with gr.Accordion("Config JSON of the last Run (what the runner got)", open=False):
                        self.config_json = gr.Code("{}", language="json", interactive=False, elem_id="config-json")

    def wire(self, results: ResultsPage) -> None:
        """Form events, then the run endpoint, which also redraws the Results page."""
        self.results = results
        inputs = self.inputs
        self.preset.change(self.fill_from_preset, self.preset, inputs + [self.config_error], show_progress="hidden",
                           **UI_ONLY)
        self.upload.upload(self.fill_from_file, self.upload, inputs + [self.config_error, self.upload_note], **UI_ONLY)
        self.download.click(self.download_config, inputs, [self.config_file, self.config_error], **UI_ONLY)

        outputs = [self.config_error, self.progress, self.row_errors, self.table, self.live_chart, results.summary,
                   self.run_btn, self.run_state, *results.plots.values()]
        self.run_btn.click(self.prepare_run, inputs, [self.config_json, self.run_btn, self.progress],
                           show_progress="hidden", **UI_ONLY).then(
            self.run_benchmark, self.config_json, outputs, api_name="run", concurrency_id="gpu", concurrency_limit=1,
            show_progress="full", show_progress_on=[self.progress]).then(
            lambda: gr.update(interactive=True), None, self.run_btn, **UI_ONLY)  # even if the run endpoint raised
        self.stop_btn.click(self.stop_run, None, [self.progress, self.run_btn], api_name="stop", show_progress="hidden",
                            concurrency_limit=None)

    # ------------------------------------------------------------------ the form

    def fill_from_preset(self, name):
        if not name:
            return [gr.skip()] * len(self.inputs) + [""]
        try:
            data = read_json(preset_path(name))
        except ConfigError as e:
            return [gr.skip()] * len(self.inputs) + [form_error_md(str(e))]
        return form_values(data, str(self.ctx.results_path)) + [form_error_md(check(data))]

    def fill_from_file(self, file):
        """A config file fills the whole form, or, with a key Config does not know, nothing at all: half a
        file over defaults the user never chose would run settings nobody picked."""
        results_path = self.ctx.results_path
        name = Path(str(file)).name  # the name the user picked, not gradio's temporary copy's path
        keep = [gr.skip()] * len(self.inputs)
        try:
            data = read_json(file)
        except ConfigError as e:
            return keep + [form_error_md(str(e).replace(str(file), name)), ""]
        known = {f.name for f in config_fields()}
        if unknown := [k for k in data if k not in known]:
            problem = check({unknown[0]: data[unknown[0]]})  # Config's words, with its "did you mean"
            return keep + [form_error_md(f"{name}: {problem}; the form was left as it was"), ""]
        note = ""
        if "results" in data and str(data["results"]) != str(results_path):
            note = f"note: 'results' ({data['results']}) is ignored here; rows go to {results_path}"
        data = {k: v for k, v in data.items() if k != "results"}
        problem = check(data | {"results": str(results_path)})
        return form_values(data, str(results_path)) + [form_error_md(f"{name}: {problem}" if problem else ""),
                                                       note and f"*{escape(note)}*"]

    def download_config(self, *values):
        data = form_dict(list(values))
        message = check(data)
        if message:  # a file the CLI would reject is not handed out
            return gr.update(visible=False), form_error_md(message)
        data.pop("results", None)  # the server's own path means nothing on another machine
        path = self.ctx.export_file("config", ".json")
        path.write_text(json.dumps(data, indent=2) + "\n")
        return gr.update(value=str(path), visible=True), ""

    # ------------------------------------------------------------------ the run

    def prepare_run(self, request: gr.Request, *values):
        """Form -> JSON for the run endpoint (the same endpoint API clients call). Registers the request, so
        Stop can cancel it while it waits in the queue."""
        QUEUED.setdefault(session_of(request), []).append(threading.Event())
        return (json.dumps(form_dict(list(values)), indent=2), gr.update(interactive=False),
                progress_html(0, "Waiting for the benchmark queue", "one benchmark runs at a time; your place in "
                              "the queue shows here until this run starts", "idle"))

    def views(self, rows: list[dict], seconds: float | None = None, all_charts: bool = True) -> dict:
        """Table and headline chart; the Results page's charts too when all_charts (a method finished)."""
        out = {self.row_errors: errors_md(rows), self.table: results_table(rows),
               self.live_chart: charts.tokens_per_s(pd.DataFrame(rows, columns=archive.COLUMNS)),
               **self.results.show_summary(rows, seconds)}
        if all_charts:
            out.update(self.results.show_charts(rows))
        return out

    def run_benchmark(self, config_text: str, request: gr.Request):
        """Streams the runner's events: progress on every event, the table after every row, all charts
        after every method (re-drawing every chart per row would take CPU from the benchmark)."""
        results_path, lock = self.ctx.results_path, self.ctx.run_lock
        session = session_of(request)
        waiting = QUEUED.get(session) or []
        cancel = waiting.pop(0) if waiting else threading.Event()  # API clients never went through prepare_run
        if not waiting:
            QUEUED.pop(session, None)
        if cancel.is_set():  # Stop was pressed while this run waited in the queue: it leaves without a trace
            if waiting or session in STOP_EVENTS:
                yield {}  # a newer run of this session shows its own progress
            else:
                yield {self.progress: progress_html(0, *CANCELLED, "stopped"),
                       self.run_btn: gr.update(interactive=True)}
            return
        try:
            data = json.loads(config_text)
        except json.JSONDecodeError as e:
            problem = f"config is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
            yield {self.config_error: error_md(problem), self.run_btn: gr.update(interactive=True)}
            return
        if isinstance(data, dict):
            data["results"] = str(results_path)  # rows always go where History and downloads look
        try:
            if problem := check_model_access(data, self.ctx.allowed_models):  # before anything looks at the disk
                raise ConfigError(problem)
            config = Config.from_dict(data)
            if problem := cuda_problem(config.device):  # refused up front, not as one failed row per setting
                raise ConfigError(problem)
        except ConfigError as e:
            yield {self.config_error: form_error_md(str(e)), self.run_btn: gr.update(interactive=True),
                   self.progress: progress_html(0, "Not started", "fix the setting named above and press Run again",
                                                "failed")}
            return
        stop = cancel  # from here on, Stop ends the run after the current generation step
        STOP_EVENTS[session] = stop
        if not lock.acquire(blocking=False):
            yield {self.progress: progress_html(0, "Waiting", "another benchmark is running in this process")}
            while not lock.acquire(timeout=0.2):
                if stop.is_set():
                    STOP_EVENTS.pop(session, None)
                    yield {self.progress: progress_html(0, *CANCELLED, "stopped"),
                           self.run_btn: gr.update(interactive=True)}
                    return
        rows: list[dict] = []
        total, started = total_rows(config), time.perf_counter()
        PROGRESS[session] = 0.0
        try:
            yield {self.config_error: "", self.row_errors: "",
                   self.progress: progress_html(0, "Starting", f"{plural(total, 'row')} to measure"), **self.views([])}
            for event in run(config, stop):
                if isinstance(event, Progress):
                    PROGRESS[session] = event.fraction if event.fraction is not None else len(rows) / total
                    yield {self.progress: event_progress(event)}
                elif isinstance(event, RowDone):
                    rows.append(event.row)
                    PROGRESS[session] = max(PROGRESS.get(session, 0.0), len(rows) / total)
                    yield {self.progress: progress_html(PROGRESS[session], f"{len(rows)} of {total} rows done",
                                                        f"finished {event.row['method']} [{event.row['setting']}]"),
                           self.run_state: event.row["run_id"],
                           **self.views(rows, all_charts=ends_method(config, len(rows)))}
            seconds = time.perf_counter() - started
            failed = sum(r["status"] != "ok" for r in rows)
            if rows and failed == len(rows):
                title = f"Failed: all {plural(len(rows), 'row')} failed"
            else:
                title = f"Done: {plural(len(rows), 'row')} in {seconds:.0f} s" + (f", {failed} failed" if failed else "")
            yield {self.progress: progress_html(1, title, f"appended to {results_path}", "failed" if failed else "done"),
                   self.run_btn: gr.update(interactive=True), **self.views(rows, seconds)}
        except Stopped:
            yield {self.progress: progress_html(len(rows) / max(total, 1), f"Stopped after {len(rows)} of {total} rows",
                                                f"finished rows are kept in {results_path}", "stopped"),
                   self.run_btn: gr.update(interactive=True), **self.views(rows, time.perf_counter() - started)}
        except Exception as e:  # the app must stay usable whatever a run throws
            problem = one_line(e)
            yield {self.progress: progress_html(len(rows) / max(total, 1), "Run failed", problem, "failed"),
                   self.row_errors: run_failed_md(problem, len(rows)), self.run_btn: gr.update(interactive=True)}
        finally:
            STOP_EVENTS.pop(session, None)
            PROGRESS.pop(session, None)
            lock.release()

    def stop_run(self, request: gr.Request):
        """Stops this session's running benchmark after the current generation step, or cancels its runs that
        still wait in the queue, which then never start."""
        session = session_of(request)
        event = STOP_EVENTS.get(session)
        if event is not None:
            event.set()
            return progress_html(PROGRESS.get(session, 0.0), "Stopping…",
                                 "the run ends after the current generation step; finished rows are kept",
                                 "stopped"), gr.skip()
        waiting = QUEUED.get(session) or []
        if any(not e.is_set() for e in waiting):
            for e in waiting:
                e.set()
            return progress_html(0, *CANCELLED, "stopped"), gr.update(interactive=True)
        return gr.skip(), gr.skip()

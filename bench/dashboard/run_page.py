"""Run: the run bar (Run, Stop, progress), the config form, and the live view of a run (failed rows, table, chart).

A run belongs to the server (bench/dashboard/jobs.py): Run checks the form and hands the config to the app's
RunBoard, then the page only watches the job. The `run` API endpoint does the same for API clients, so both go
through the same checks and the same one-at-a-time queue. A reloaded page finds its runs again by the browser's
id (kept in localStorage); Stop sets the run's stop event at once, whatever the load.
"""
from __future__ import annotations

import json
import uuid
from html import escape
from pathlib import Path

import gradio as gr
import pandas as pd

from bench.config import Config, ConfigError, preset_names, preset_path, read_json
from bench.dashboard.access import check_model_access
from bench.dashboard.form import build_form, check, config_fields, form_dict, form_values
from bench.dashboard.html import (CANCELLED, IDLE, error_md, errors_md, form_error_md, job_progress, progress_html,
                                  run_failed_md)
from bench.dashboard.jobs import RunJob
from bench.dashboard.results_page import ResultsPage
from bench.dashboard.shared import UI_ONLY, AppContext
from bench.runner import points
from models.devices import cuda_problem
from store import archive
from views import charts, table

REDRAW_S = 1.0  # a watched run's bar is redrawn at least this often (elapsed time, ETA)

# The CLI's summary columns (views.table), speed and speedup first so both are visible without scrolling beside
# the form at 1440 px.
TABLE_FIRST = ["method", "setting", "status", "tokens_per_s_per_sequence_median", "speedup_vs_standard",
               "tokens_per_s_per_sequence", "unstable", "aggregate_tokens_per_s_median"]
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
            self.run_state = gr.State("")  # run_id of the run this page shows; Samples follows it
            self.watching = gr.State("")  # run_id of the server-side job this page watches
            self.owner = gr.BrowserState("", storage_key="bench-owner")  # this browser's id: its runs survive a reload
            # The run bar: sticky at the top of the page, so Run, Stop and the progress are in reach at any scroll.
            with gr.Row(elem_id="run-bar", equal_height=False):
                with gr.Column(scale=0, min_width=200, elem_id="run-bar-buttons"):
                    with gr.Row():
                        self.run_btn = gr.Button("Run", variant="primary", elem_id="run-button", min_width=90)
                        self.stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-button", min_width=90)
                with gr.Column(scale=1, min_width=260):
                    self.progress = gr.HTML(IDLE, elem_id="run-progress")
                    self.config_error = gr.Markdown("", elem_id="config-error")
            with gr.Row(equal_height=False):
                with gr.Column(scale=5, min_width=420, elem_id="config-form"):
                    with gr.Row():
                        self.preset = gr.Dropdown(self.preset_choices(), value="",
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
                    self.row_errors = gr.Markdown("", elem_id="run-errors")
                    self.table = gr.Dataframe(results_table([]), label="Results (one row per method × setting)",
                                              interactive=False, wrap=False, max_height=420, pinned_columns=2,
                                              elem_id="results-table")
                    self.live_chart = gr.Plot(charts.laid_out(charts.tokens_per_s(None)), show_label=False,
                                              elem_id="chart-live")
                    with gr.Accordion("Config JSON of the last Run (what the runner got)", open=False):
                        self.config_json = gr.Code("{}", language="json", interactive=False, elem_id="config-json")
                    self.api_run = gr.Button("run (API)", visible=False)  # the `run` endpoint's trigger

    def wire(self, results: ResultsPage, demo: gr.Blocks) -> None:
        """Form events, Run and Stop, the `run` and `stop` API endpoints, and reattaching on page load."""
        self.results = results
        inputs = self.inputs
        # select, not change: picking the preset already shown resets an edited form to it.
        self.preset.select(self.fill_from_preset, self.preset, [self.preset] + inputs + [self.config_error],
                           show_progress="hidden", **UI_ONLY)
        gr.on([c.input for c in inputs], self.mark_edited, [self.preset, *inputs], self.preset,
              show_progress="hidden", trigger_mode="always_last", **UI_ONLY)
        self.upload.upload(self.fill_from_file, self.upload, inputs + [self.config_error, self.upload_note], **UI_ONLY)
        self.download.click(self.download_config, inputs, [self.config_file, self.config_error], **UI_ONLY)

        self.outputs = [self.config_error, self.progress, self.row_errors, self.table, self.live_chart, self.run_btn,
                        self.run_state, *results.outputs()]
        watch = dict(show_progress="hidden", **UI_ONLY)  # a watcher only reads the job: it never waits in a queue
        self.run_btn.click(self.start, [self.owner, *inputs],
                           [self.owner, self.config_json, self.config_error, self.progress, self.watching, self.run_btn],
                           show_progress="hidden", **UI_ONLY).then(
            self.watch, self.watching, self.outputs, **watch)
        self.stop_btn.click(self.press_stop, self.owner, self.progress, show_progress="hidden", **UI_ONLY)
        demo.load(self.attach, self.owner, [self.owner, self.watching, self.progress, self.run_btn, *inputs],
                  show_progress="hidden", **UI_ONLY).then(self.watch, self.watching, self.outputs, **watch)
        # API clients: the same checks and queue as the form; Stop stops the runs of the client's session.
        self.api_run.click(self.run_api, self.config_json, self.outputs, api_name="run", concurrency_limit=None,
                           show_progress="hidden")
        gr.api(self.stop_api, api_name="stop", concurrency_limit=None)

    # ------------------------------------------------------------------ the form

    def preset_choices(self, edited: str = "") -> list:
        """The preset picker's choices; the edited preset shown as "name (edited)" (its value stays the name)."""
        return [("choose a preset…", "")] + [(f"{n} (edited)" if n == edited else n, n) for n in preset_names()]

    def fill_from_preset(self, name):
        if not name:
            return [gr.skip()] * (1 + len(self.inputs)) + [""]
        try:
            data = read_json(preset_path(name))
        except ConfigError as e:
            return [gr.skip()] * (1 + len(self.inputs)) + [form_error_md(str(e))]
        return ([gr.update(choices=self.preset_choices(), value=name)]
                + form_values(data, str(self.ctx.results_path)) + [form_error_md(check(data))])

    def mark_edited(self, name, *values):
        """"tiny (edited)" once the form differs from the picked preset; plain "tiny" again when it matches."""
        if not name:
            return gr.skip()
        try:
            preset = form_dict(form_values(read_json(preset_path(name)), str(self.ctx.results_path)))
        except ConfigError:
            return gr.skip()
        edited = form_dict(list(values)) != preset
        return gr.update(choices=self.preset_choices(name if edited else ""), value=name)

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

    def config_of(self, data) -> Config:
        """The run's Config, or ConfigError with the line to show; rows always go to the app's results file."""
        if isinstance(data, dict):
            data["results"] = str(self.ctx.results_path)  # where History and downloads look
        if problem := check_model_access(data, self.ctx.allowed_models):  # before anything looks at the disk
            raise ConfigError(problem)
        config = Config.from_dict(data)
        if problem := cuda_problem(config.device):  # refused up front, not as one failed row per setting
            raise ConfigError(problem)
        return config

    def start(self, owner, *values):
        """Run: the form checked, then handed to the server's board; the page then watches the job."""
        owner = owner or uuid.uuid4().hex  # pressed before the page's load event gave it one
        data = form_dict(list(values))
        shown = json.dumps(data, indent=2)
        try:
            config = self.config_of(data)
        except ConfigError as e:
            return (owner, shown, form_error_md(str(e)), progress_html(0, "Not started", "fix the setting named below "
                                                                       "and press Run again", "failed"), "", gr.skip())
        job = self.ctx.board.submit(config, owner, data)
        return (owner, shown, "", job_progress(job, self.ctx.board.ahead_of(job)), job.run_id,
                gr.update(interactive=False))

    def attach(self, owner):
        """On page load: this browser's id (made on its first visit), and the run to watch: its run in progress,
        else its last finished one; a reload never loses a run."""
        owner = owner or uuid.uuid4().hex
        jobs = self.ctx.board.of(owner)
        active = [j for j in jobs if j.active and not j.stop.is_set()]
        running = [j for j in active if j.state == "running"]
        job = (running or active or jobs or [None])[-1 if not (running or active) else 0]
        if job is None:
            return [owner, "", gr.skip(), gr.skip()] + [gr.skip()] * len(self.inputs)
        form = form_values(job.data, str(self.ctx.results_path)) if job.data else [gr.skip()] * len(self.inputs)
        return [owner, job.run_id, job_progress(job, self.ctx.board.ahead_of(job), str(self.ctx.results_path)),
                gr.update(interactive=not job.active)] + form  # the form as the watched run was started

    def watch(self, run_id: str):
        """Streams one job: the bar on every change (and every REDRAW_S for the clock), the table when rows
        arrive, all charts when a method's rows are in. Ends when the job does."""
        job = self.ctx.board.get(run_id)
        if job is None:  # no run started (the form was refused): leave every output as it is
            yield {self.progress: gr.skip()}  # an empty dict reads to gradio as one value for all its outputs
            return
        seen, shown = -1, -1
        while True:
            seen = job.wait(seen, REDRAW_S)
            over = not job.active or (job.state == "queued" and job.stop.is_set())
            out = {self.progress: job_progress(job, self.ctx.board.ahead_of(job), str(self.ctx.results_path))}
            rows = list(job.rows)
            if len(rows) != shown or over:
                out.update(self.views(job, rows, all_charts=over or shown < 0 or
                                      (bool(rows) and ends_method(job.config, len(rows)))))
                shown = len(rows)
            if job.state == "failed":
                out[self.row_errors] = run_failed_md(job.error, len(rows))
            if over:
                out[self.run_btn] = gr.update(interactive=True)
                yield out
                return
            yield out

    def views(self, job: RunJob, rows: list[dict], all_charts: bool = True) -> dict:
        """Table and headline chart; the Results page too once the job has rows (the run on screen there)."""
        out = {self.row_errors: errors_md(rows), self.table: results_table(rows),
               self.live_chart: charts.laid_out(charts.tokens_per_s(pd.DataFrame(rows, columns=archive.COLUMNS)))}
        if rows:
            out[self.run_state] = job.run_id
            out.update(self.results.show_run(rows, job.name, job.run_id, None if job.active else job.elapsed(),
                                             all_charts))
        return out

    def press_stop(self, owner):
        """Stop: answers at once. A running job ends at its next generation step, keeping whole repetitions; a
        queued one never starts."""
        hit = self.ctx.board.stop({owner}) if owner else []
        if not hit:
            return gr.skip()
        running = [j for j in hit if j.state == "running"]
        if running:
            return job_progress(running[0])
        return progress_html(0, *CANCELLED, "stopped")

    def run_api(self, config_text: str, request: gr.Request):
        """The `run` endpoint: config JSON in, the same streamed views out, until the run ends."""
        try:
            data = json.loads(config_text)
        except json.JSONDecodeError as e:
            yield {self.config_error: error_md(f"config is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")}
            return
        try:
            config = self.config_of(data)
        except ConfigError as e:
            yield {self.config_error: form_error_md(str(e)),
                   self.progress: progress_html(0, "Not started", "fix the setting named below and press Run again",
                                                "failed")}
            return
        job = self.ctx.board.submit(config, f"session:{session_of(request)}")
        yield from self.watch(job.run_id)

    def stop_api(self, request: gr.Request) -> str:
        """The `stop` endpoint: stops the runs this API session started (running or queued)."""
        hit = self.ctx.board.stop({f"session:{session_of(request)}"})
        return f"stopping {len(hit)} run(s)" if hit else "no run of this session to stop"

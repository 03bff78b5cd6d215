"""The browser dashboard: configure, run, watch and compare benchmark runs.

    python app.py                      # http://127.0.0.1:7860
    python app.py --share --auth me:pw # public link; a login is required because anyone could run jobs

Pages: Run (form + live table), Results (charts of the run just made), Samples (texts side by side),
History (every row in the results folder, filtered and compared). Settings flow one way:
form -> dict -> Config.from_dict -> bench.runner.run, the same loop the CLI uses.
"""
from __future__ import annotations

import html
import json
import os
import sys
import threading
import time
from dataclasses import Field, fields
from datetime import datetime
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import pandas as pd

from bench import charts, report, store
from bench.config import Config, ConfigError, default_of, preset_names, preset_path, read_json
from bench.runner import Progress, RowDone, Stopped, one_line, points, run, total_rows

# One benchmark per process: the queue (concurrency_id "gpu", limit 1) serialises the UI, this lock
# serialises the code behind it, in case two apps share the process or a queue setting changes.
RUN_LOCK = threading.Lock()
# session hash -> stop event of that session's running benchmark; Stop only stops your own run.
STOP_EVENTS: dict[str, threading.Event] = {}
HISTORY_TABLE_ROWS = 500  # the browser gets the newest rows; Export CSV has all filtered rows

# ---------------------------------------------------------------------------------------------
# The form: one component per Config field, generated from the field metadata so it never drifts.

SECTIONS = {  # section -> rows of field names; a field missing here lands in "More settings"
    "Models": [["model", "draft_model"], ["dtype", "device", "engine"], ["quantization", "attention"],
               ["quantize_draft", "random_weights"]],
    "Workload": [["prompts"], ["completions_per_prompt", "max_new_tokens", "prompt_length"],
                 ["chat_template", "stop_at_eos"]],
    "Methods": [["methods"], ["temperature", "top_p", "top_k"],
                ["num_beams", "num_return_sequences", "length_penalty"], ["early_stopping", "batched_do_sample"],
                ["batch_sizes", "speculative_modes"], ["num_draft_tokens", "prompt_lookup_num_tokens"]],
    "Measurement": [["warmup", "repetitions", "seed"], ["results"]],
}
LABELS = {
    "model": "Target model", "draft_model": "Draft model", "methods": "Methods", "engine": "Engine",
    "prompts": "Prompts (one per line)", "top_p": "top-p", "top_k": "top-k", "num_beams": "Beams",
    "num_return_sequences": "Returned sequences", "dtype": "dtype", "warmup": "Warm-up calls",
    "num_draft_tokens": "Draft tokens k", "prompt_lookup_num_tokens": "Prompt-lookup tokens",
    "results": "Results CSV",
}


def config_fields() -> list[Field]:
    return list(fields(Config))


def is_text_list(f: Field) -> bool:
    """List fields without choices are typed as text: prompts one per line, numbers comma separated."""
    return "list" in f.metadata["kind"] and not f.metadata["choices"]


def make_input(f: Field, value=None) -> gr.components.Component:
    m, kind = f.metadata, f.metadata["kind"]
    common = dict(label=LABELS.get(f.name, f.name.replace("_", " ").capitalize()), info=m["help"], min_width=120,
                  elem_id="cfg-" + f.name.replace("_", "-"),
                  value=to_form(f, default_of(f) if value is None else value))
    if f.name == "results":  # pinned to the app's results file: History and downloads read that folder
        common["info"] += " (fixed by the dashboard: start it with --results to change)"
        return gr.Textbox(interactive=False, **common)
    if kind == "bool":
        return gr.Checkbox(**common)
    if kind in ("int", "float"):
        # No min/max here: out-of-range values reach Config, which words the error like the CLI does.
        return gr.Number(precision=None, **common)
    if kind == "str" and m["choices"]:
        return gr.Dropdown(choices=list(m["choices"]), **common)
    if kind in ("str", "optstr"):
        return gr.Textbox(**common)
    if m["choices"]:
        return gr.CheckboxGroup(choices=list(m["choices"]), **common)
    if kind == "list[str]":
        return gr.Textbox(lines=4, max_lines=12, **common)
    return gr.Textbox(placeholder="e.g. 1, 4, 16", **common)


def to_form(f: Field, value):
    """Config value -> what the field's component shows."""
    kind = f.metadata["kind"]
    if f.metadata["choices"] and "list" in kind:
        return value if isinstance(value, list) else [value]
    if is_text_list(f):
        items = value if isinstance(value, list) else [value]
        return ("\n" if kind == "list[str]" else ", ").join(str(v) for v in items)
    if kind == "optstr":
        return value or ""
    return value


def from_form(f: Field, value):
    """Component value -> config value. Anything unparsable is passed on for Config to reject in its words."""
    kind = f.metadata["kind"]
    if kind == "list[str]" and not f.metadata["choices"]:
        return [line.strip() for line in (value or "").splitlines() if line.strip()]
    if is_text_list(f):
        items = [int(t) if t.strip().lstrip("-").isdigit() else t.strip()
                 for t in str(value or "").replace(";", ",").replace(" ", ",").split(",") if t.strip()]
        return items[0] if kind.startswith("int|") and len(items) == 1 else items
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)  # gr.Number hands back floats; keep the JSON tidy
    if kind == "optstr":
        return (value or "").strip() or None
    if kind == "str" and isinstance(value, str):
        return value.strip()
    if f.metadata["choices"] and "list" in kind:
        return list(value or [])
    return value


def form_dict(values: list) -> dict:
    return {f.name: from_form(f, v) for f, v in zip(config_fields(), values)}


def form_values(data: dict, results_path: str) -> list:
    """A (partial) config dict -> values for every form field; missing keys get Config's defaults."""
    out = []
    for f in config_fields():
        value = results_path if f.name == "results" else data.get(f.name, default_of(f))
        out.append(to_form(f, value))
    return out


def check(data: dict, check_models: bool = False) -> str:
    """'' when the dict makes a valid Config, else the ConfigError line the CLI would print."""
    try:
        Config.from_dict(data, check_models=check_models)
        return ""
    except ConfigError as e:
        return str(e)


def error_md(message: str) -> str:
    # quote=False: the message keeps the CLI's exact words ('max_new_tokens', not &#x27;...)
    return f"**error:** {html.escape(message, quote=False)}" if message else ""


# ---------------------------------------------------------------------------------------------
# Views of rows: progress bar, table, errors, samples.

def progress_html(fraction: float, title: str, detail: str = "", state: str = "running") -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="bench-progress {state}"><div class="bench-progress-head"><b>{html.escape(title)}</b>'
            f'<span>{pct:.0f}%</span></div><div class="bench-progress-track"><div class="bench-progress-fill" '
            f'style="width:{pct:.1f}%"></div></div><div class="bench-progress-detail">{html.escape(detail)}</div></div>')


IDLE = progress_html(0, "Idle", "Pick a preset or fill the form, then press Run.", "idle")


def event_progress(event: Progress) -> str:
    """The bar names method, setting and repetition; it moves within a row as repetitions finish."""
    reps = event.repetitions or 1
    fraction = (event.done_rows + (event.repetition - 1 if event.repetition else 0) / reps) / max(event.total_rows, 1)
    parts = [f"row {min(event.done_rows + 1, event.total_rows)} of {event.total_rows}"]
    if event.method:
        parts.append(f"method {event.method}")
        parts.append(f"setting {event.setting}")
    if event.repetition:
        parts.append(f"repetition {event.repetition}/{event.repetitions}")
    title = f"{event.method} [{event.setting}]" if event.method else event.message
    return progress_html(fraction, title, " · ".join(parts))


# The CLI's summary columns (bench.report), speed first so it is visible without scrolling.
TABLE_FIRST = ["method", "setting", "status", "tokens_per_s_per_sequence_median", "tokens_per_s_per_sequence_std",
               "speedup_vs_standard", "aggregate_tokens_per_s_median"]
TABLE_COLUMNS = sorted(report.COLUMNS, key=lambda c: TABLE_FIRST.index(c[0]) if c[0] in TABLE_FIRST else len(TABLE_FIRST))


def results_table(rows: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """One line per row as numbers (so the browser sorts them right), errors in the last column."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=store.COLUMNS)
    out = pd.DataFrame()
    for key, header, fmt in TABLE_COLUMNS:
        col = df[key] if key in df else pd.Series([None] * len(df))
        if "f}" in fmt:  # "{:.1f}" -> round to 1 digit
            digits = int(fmt.split(".")[1][0])
            col = pd.to_numeric(col, errors="coerce").round(digits)
        out[header.replace("±", "tok/s/seq ±")] = col.reset_index(drop=True)
    out["error"] = df["error"].fillna("").astype(str).to_numpy() if "error" in df else ""
    return out.astype(object).where(out.notna(), None)


def errors_md(rows: list[dict]) -> str:
    """Failed rows, shown above the table: an OOM or a failed model load must not hide in a column."""
    bad = [r for r in rows if r.get("status") != "ok"]
    if not bad:
        return ""
    lines = [f"- **{html.escape(str(r['method']))} [{html.escape(str(r['setting']))}]** "
             f"`{r['status']}`: {html.escape(str(r.get('error', '')))}" for r in bad]
    return (f'<div class="bench-errors">\n\n**{len(bad)} of {len(rows)} rows failed** '
            f"(the other rows are fine and kept):\n\n" + "\n".join(lines) + "\n\n</div>")


def summary_md(rows: list[dict], seconds: float | None = None) -> str:
    if not rows:
        return "No run yet in this session. Press **Run** on the Run page; earlier runs are in **History**."
    r = rows[0]
    ok = sum(x.get("status") == "ok" for x in rows)
    took = f" · {seconds:.0f} s" if seconds is not None else ""
    return (f"**Run `{r['run_id']}`** · model `{r['model']}` · {r['device']} ({r.get('device_name', '')}) · "
            f"{len(rows)} rows, {ok} ok{took}. *tok/s per sequence* = one sequence's new tokens / its call's "
            f"latency; *aggregate tok/s* = all new tokens of a call / its latency; they are never mixed in a chart.")


def ends_method(config: Config, done: int) -> bool:
    """Is the done-th row the last setting of its method? Rows come per variant and engine, in points() order."""
    order = [p.method for p in points(config)]
    i = (done - 1) % len(order)
    return i == len(order) - 1 or order[i + 1] != order[i]


def figures(df: pd.DataFrame) -> list:
    return [fn(df) for fn in charts.FIGURES.values()]


def samples_html(records: list[dict], run_id: str | None, methods: list[str] | None = None,
                 completion: int = 0, prompts: list[str] | None = None) -> str:
    """Texts of one run, one block per prompt, one card per method x setting side by side."""
    recs = [r for r in records if r.get("run_id") == run_id and r.get("completion_index", 0) == completion]
    if methods:
        recs = [r for r in recs if f"{r['method']} [{r['setting']}]" in methods]
    if not recs:
        return '<p class="bench-muted">No texts for this selection (failed rows store no text).</p>'
    variant = len({(r.get("engine"), r.get("quantization"), r.get("attention")) for r in recs}) > 1
    out = []
    for p in sorted({r["prompt_index"] for r in recs}):
        prompt = prompts[p] if prompts and p < len(prompts) else f"prompt {p + 1}"
        cards = {}
        for r in (r for r in recs if r["prompt_index"] == p):
            key = f"{r['method']} [{r['setting']}]" + (f" · {r['engine']}/{r['quantization']}/{r['attention']}"
                                                      if variant else "")
            cards.setdefault(key, []).append(r)
        cells = []
        for key, seqs in cards.items():
            texts = "".join(f'<div class="bench-seq">{"<i>sequence " + str(s["sequence_index"] + 1) + "</i><br>" if len(seqs) > 1 else ""}'
                            f'{html.escape(s["text"])}</div>' for s in seqs)
            cells.append(f'<div class="bench-card"><div class="bench-card-head">{html.escape(key)}'
                         f'<span>{seqs[0]["new_tokens"]} tokens</span></div>{texts}</div>')
        out.append(f'<div class="bench-prompt"><div class="bench-prompt-text">Prompt {p + 1}: '
                   f'{html.escape(prompt)}</div><div class="bench-cards">{"".join(cells)}</div></div>')
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# History: every CSV in the results folder (other machines' files dropped there too) plus uploads.

HISTORY_COLUMNS = [
    "run_id", "timestamp", "status", "method", "setting", "engine", "model", "device", "device_name",
    "quantization", "attention", "batch_size", "tokens_per_s_per_sequence_median",
    "aggregate_tokens_per_s_median", "latency_ms_median", "ttft_ms_median", "peak_allocated_mib",
    "speedup_vs_standard", "acceptance_rate", "error",
]
FILTERS = ("model", "method", "device", "run_id")


def history_files(results_path: Path, uploaded: list[str] | None) -> list[Path]:
    return sorted(results_path.parent.glob("*.csv")) + [Path(p) for p in uploaded or []]


def load_history(files: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """All rows of all files; a file that cannot be read is reported, not fatal."""
    frames, problems = [], []
    for path in files:
        try:
            frames.append(store.load_rows([path]))
        except Exception as e:  # a stray or broken CSV in the folder must not take History down
            problems.append(f"{path.name}: {' '.join(str(e).split())[:200]}")
    frames = [f for f in frames if not f.empty]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=store.COLUMNS)
    return df, problems


def filter_rows(df: pd.DataFrame, selected: dict[str, list]) -> pd.DataFrame:
    mask = pd.Series(True, index=df.index)
    for key, values in selected.items():
        if values:
            mask &= df[key].astype(str).isin([str(v) for v in values])
    return df[mask]


def run_choices(df: pd.DataFrame) -> list[tuple[str, str]]:
    """Runs newest first, labelled with what tells them apart."""
    if df.empty:
        return []
    g = df.groupby("run_id", sort=False).agg(
        timestamp=("timestamp", "min"), model=("model", "first"), device=("device_name", "first"),
        rows=("run_id", "size"))
    g = g.sort_values("timestamp", ascending=False)
    return [(f"{rid} · {r.model} · {r.device} · {r.rows} rows", str(rid)) for rid, r in g.iterrows()]


def history_view(df: pd.DataFrame, selected: dict[str, list]):
    """(filtered rows, table for the browser, rows the charts compare)."""
    rows = filter_rows(df, selected)
    # Reversed first: rows written in the same second keep their file order, newest first.
    newest = rows.iloc[::-1].sort_values("timestamp", ascending=False, kind="stable")
    table = newest.head(HISTORY_TABLE_ROWS)[HISTORY_COLUMNS]
    table = table.astype(object).where(table.notna(), None)
    # Charts compare the runs picked in the run filter; with none picked, the newest run.
    runs = selected.get("run_id") or newest["run_id"].head(1).tolist()
    compared = rows[rows["run_id"].astype(str).isin([str(r) for r in runs])]
    return rows, table, compared


def history_page(results_path: Path, uploaded: list[str] | None, selected: dict[str, list]) -> list:
    """Everything the History page shows: filter choices, info line, table, charts (in that order)."""
    files = history_files(results_path, uploaded)
    df, problems = load_history(files)
    rows, shown, compared = history_view(df, selected)
    updates = []
    for key in FILTERS:
        values = selected.get(key) or []
        choices = run_choices(df) if key == "run_id" else sorted(df[key].dropna().astype(str).unique())
        valid = {c[1] if isinstance(c, tuple) else c for c in choices}
        updates.append(gr.update(choices=choices, value=[v for v in values if v in valid]))
    info = (f"**{len(rows):,}** of {len(df):,} rows · {rows['run_id'].nunique():,} runs · {len(files)} CSV file(s) "
            f"from `{results_path.parent}`{' and uploads' if uploaded else ''}. Table: newest "
            f"{min(len(rows), HISTORY_TABLE_ROWS):,} rows (Export has all). Charts compare "
            f"{compared['run_id'].nunique()} run(s): pick runs in the Runs filter (default: the newest).")
    if problems:
        info += "\n\n**could not read:** " + "; ".join(html.escape(p) for p in problems)
    return [*updates, info, shown, *[fn(compared) for fn in charts.FIGURES.values()]]


# ---------------------------------------------------------------------------------------------
# The app.

CSS = """
.gradio-container {max-width: 1480px !important}
#bench-title h1 {margin-bottom: 0} #bench-title p {margin-top: 4px; color: var(--body-text-color-subdued)}
#run-button, #stop-button {min-height: 44px}
#run-output {position: sticky; top: 8px; align-self: flex-start}
#config-form .form {background: transparent !important; border: none !important; gap: 10px !important;
  box-shadow: none !important}
#config-form .form > * {border-radius: var(--block-radius) !important}
#config-error, #config-error * {color: #b91c1c !important}
#config-error:empty {display: none}
.bench-progress {padding: 10px 12px; border: 1px solid var(--border-color-primary); border-radius: 8px;
  background: var(--background-fill-secondary)}
.bench-progress-head {display: flex; justify-content: space-between; margin-bottom: 6px}
.bench-progress-track {height: 10px; border-radius: 5px; background: var(--border-color-primary); overflow: hidden}
.bench-progress-fill {height: 100%; background: linear-gradient(90deg, #3b82f6, #2563eb); transition: width .4s}
.bench-progress.done .bench-progress-fill {background: #16a34a}
.bench-progress.stopped .bench-progress-fill, .bench-progress.failed .bench-progress-fill {background: #dc2626}
.bench-progress-detail {margin-top: 6px; font-size: 13px; color: var(--body-text-color-subdued)}
.bench-errors {border: 1px solid #fca5a5; background: #fef2f2; color: #7f1d1d; border-radius: 8px; padding: 4px 14px}
.bench-muted {color: var(--body-text-color-subdued)}
.bench-prompt {margin-bottom: 18px}
.bench-prompt-text {font-weight: 600; margin-bottom: 8px}
.bench-cards {display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 10px}
.bench-card {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 10px;
  background: var(--background-fill-secondary); font-size: 13px; white-space: pre-wrap; word-break: break-word}
.bench-card-head {font-weight: 600; display: flex; justify-content: space-between; gap: 8px; margin-bottom: 4px;
  white-space: normal}
.bench-card-head span {font-weight: 400; color: var(--body-text-color-subdued)}
.bench-seq + .bench-seq {border-top: 1px dashed var(--border-color-primary); margin-top: 6px; padding-top: 6px}
"""
THEME = gr.themes.Soft(primary_hue="blue", neutral_hue="slate")


def build_app(results_path: str | Path = "results/runs.csv", initial: dict | None = None) -> gr.Blocks:
    """The dashboard as a Blocks app (queued, API closed) writing rows to results_path.

    initial: config keys to prefill the form with (e.g. from CLI flags). Launch it with `serve()`,
    or with `.launch(**launch_options(app))` to keep its look and download folder.
    """
    results_path = Path(results_path).resolve()
    results_dir = results_path.parent
    exports = results_dir / "exports"
    initial = dict(initial or {})
    run_prompts: dict[str, list[str]] = {}  # run_id -> prompt texts, for the Samples page

    def export_file(prefix: str, suffix: str) -> Path:
        exports.mkdir(parents=True, exist_ok=True)
        return exports / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}{suffix}"

    with gr.Blocks(title="Decoding benchmark", analytics_enabled=False) as demo:
        gr.Markdown("# Decoding benchmark\nCompare greedy, nucleus, beam search, batched, speculative and "
                    "prompt-lookup decoding on speed, latency and memory.", elem_id="bench-title")
        run_state = gr.State("")  # run_id of this session's latest run
        with gr.Tabs(elem_id="tabs"):
            # -------------------------------------------------------------- Run
            with gr.Tab("Run", id="run", elem_id="run-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5, min_width=420, elem_id="config-form"):
                        with gr.Row():
                            preset = gr.Dropdown([("choose a preset…", "")] + preset_names(), value="",
                                                 label="Preset", info="fills the form from presets/",
                                                 elem_id="preset-dropdown", scale=2)
                            with gr.Column(scale=1, min_width=170):
                                upload = gr.UploadButton("Load JSON config", file_types=[".json"], size="sm",
                                                         elem_id="config-upload")
                                download = gr.Button("Download form as JSON", size="sm",
                                                     elem_id="config-download-button")
                        config_file = gr.File(label="Config file", visible=False, elem_id="config-download",
                                              interactive=False)
                        upload_note = gr.Markdown("", elem_id="config-upload-note")
                        inputs = build_form(str(results_path), initial)
                    with gr.Column(scale=7, min_width=480, elem_id="run-output"):
                        with gr.Row():
                            run_btn = gr.Button("Run", variant="primary", elem_id="run-button", scale=3)
                            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-button", scale=1)
                        config_error = gr.Markdown("", elem_id="config-error")
                        progress = gr.HTML(IDLE, elem_id="run-progress")
                        row_errors = gr.Markdown("", elem_id="run-errors")
                        table = gr.Dataframe(results_table([]), label="Results (one row per method × setting)",
                                             interactive=False, wrap=False, max_height=420, pinned_columns=2,
                                             elem_id="results-table")
                        live_chart = gr.Plot(charts.tokens_per_s(None), show_label=False, elem_id="chart-live")
                        with gr.Accordion("Config JSON of the last Run (what the runner got)", open=False):
                            config_json = gr.Code("{}", language="json", interactive=False, elem_id="config-json")
            # -------------------------------------------------------------- Results
            with gr.Tab("Results", id="results", elem_id="results-tab"):
                summary = gr.Markdown(summary_md([]), elem_id="results-summary")
                plots = {}
                names = list(charts.FIGURES)
                for left, right in zip(names[::2], names[1::2]):
                    with gr.Row(equal_height=True):
                        for name in (left, right):
                            plots[name] = gr.Plot(charts.FIGURES[name](None), show_label=False,
                                                  elem_id=f"chart-{name}")
            # -------------------------------------------------------------- Samples
            with gr.Tab("Samples", id="samples", elem_id="samples-tab") as samples_tab:
                with gr.Row():
                    samples_run = gr.Dropdown([], label="Run", elem_id="samples-run", scale=3)
                    samples_completion = gr.Number(1, label="Completion of each prompt", precision=0, minimum=1,
                                                   elem_id="samples-completion", scale=1)
                samples_methods = gr.CheckboxGroup([], label="Methods side by side (none = all)",
                                                   elem_id="samples-methods")
                samples_view = gr.HTML("", elem_id="samples-view")
            # -------------------------------------------------------------- History
            with gr.Tab("History", id="history", elem_id="history-tab") as history_tab:
                with gr.Row():
                    history_upload = gr.File(label="Add CSVs from other machines (this session only)",
                                             file_count="multiple", file_types=[".csv"],
                                             elem_id="history-upload", height=110, scale=3)
                    with gr.Column(scale=1, min_width=200):
                        reload_btn = gr.Button("Reload", elem_id="history-reload")
                        export_btn = gr.Button("Export filtered rows as CSV", elem_id="history-export")
                        history_file = gr.File(label="Filtered rows", visible=False, interactive=False,
                                               elem_id="history-download")
                with gr.Row():
                    filters = {key: gr.Dropdown([], multiselect=True, label=label, elem_id=f"history-filter-{name}",
                                                scale=3 if key == "run_id" else 1)
                               for key, label, name in (("model", "Model", "model"), ("method", "Method", "method"),
                                                        ("device", "Device", "device"),
                                                        ("run_id", "Runs (picked runs are compared in the charts)",
                                                         "run"))}
                history_info = gr.Markdown("", elem_id="history-info")
                history_table = gr.Dataframe(pd.DataFrame(columns=HISTORY_COLUMNS), interactive=False, wrap=False,
                                             max_height=380, label="Rows (newest first)", elem_id="history-table")
                history_plots = {}
                for left, right in zip(names[::2], names[1::2]):
                    with gr.Row(equal_height=True):
                        for name in (left, right):
                            history_plots[name] = gr.Plot(charts.FIGURES[name](None), show_label=False,
                                                          elem_id=f"history-chart-{name}")
                uploaded = gr.State([])

        # ------------------------------------------------------------------ form events
        def fill_from_preset(name):
            if not name:
                return [gr.skip()] * len(inputs) + [""]
            try:
                data = read_json(preset_path(name))
            except ConfigError as e:
                return [gr.skip()] * len(inputs) + [error_md(str(e))]
            return form_values(data, str(results_path)) + [error_md(check(data))]

        def fill_from_file(file):
            try:
                data = read_json(file)
            except ConfigError as e:
                return [gr.skip()] * len(inputs) + [error_md(str(e)), ""]
            note = ""
            if "results" in data and str(data["results"]) != str(results_path):
                note = f"note: 'results' ({data['results']}) is ignored here; rows go to {results_path}"
            known = {k: v for k, v in data.items() if k != "results"}
            return form_values(known, str(results_path)) + [error_md(check(data | {"results": str(results_path)})),
                                                            note and f"*{html.escape(note)}*"]

        def download_config(*values):
            data = form_dict(list(values))
            message = check(data)
            if message:  # a file the CLI would reject is not handed out
                return gr.update(visible=False), error_md(message)
            path = export_file("config", ".json")
            path.write_text(json.dumps(data, indent=2) + "\n")
            return gr.update(value=str(path), visible=True), ""

        def prepare_run(*values):
            """Form -> JSON for the run endpoint (the same endpoint API clients call)."""
            return (json.dumps(form_dict(list(values)), indent=2), gr.update(interactive=False),
                    progress_html(0, "Waiting for the benchmark queue", "one benchmark runs at a time; your place in "
                                  "the queue shows here until this run starts", "idle"))

        light = dict(concurrency_limit=None, api_visibility="private")  # UI-only: never waits behind a run
        preset.change(fill_from_preset, preset, inputs + [config_error], show_progress="hidden", **light)
        upload.upload(fill_from_file, upload, inputs + [config_error, upload_note], **light)
        download.click(download_config, inputs, [config_file, config_error], **light)

        # ------------------------------------------------------------------ run events
        run_outputs = [config_error, progress, row_errors, table, live_chart, summary, run_btn, run_state,
                       *plots.values()]

        def views(rows: list[dict], seconds: float | None = None, all_charts: bool = True) -> dict:
            """Table and headline chart; the Results page's charts too when all_charts (a method finished)."""
            df = pd.DataFrame(rows, columns=store.COLUMNS)
            out = {row_errors: errors_md(rows), table: results_table(rows), live_chart: charts.tokens_per_s(df),
                   summary: summary_md(rows, seconds)}
            if all_charts:
                out.update(zip(plots.values(), figures(df)))
            return out

        def run_benchmark(config_text: str, request: gr.Request):
            """Streams the runner's events: progress on every event, the table after every row, all charts
            after every method (re-drawing six charts per row would take CPU from the benchmark)."""
            try:
                data = json.loads(config_text)
            except json.JSONDecodeError as e:
                yield {config_error: error_md(f"config is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"),
                       run_btn: gr.update(interactive=True)}
                return
            if isinstance(data, dict):
                data["results"] = str(results_path)  # rows always go where History and downloads look
            try:
                config = Config.from_dict(data)
            except ConfigError as e:
                yield {config_error: error_md(str(e)), run_btn: gr.update(interactive=True),
                       progress: progress_html(0, "Not started", "fix the setting named above and press Run again",
                                               "failed")}
                return
            session = (request.session_hash or "") if request else ""
            stop = threading.Event()
            if not RUN_LOCK.acquire(blocking=False):
                yield {progress: progress_html(0, "Waiting", "another benchmark is running in this process")}
                RUN_LOCK.acquire()
            STOP_EVENTS[session] = stop
            rows: list[dict] = []
            total, started = total_rows(config), time.perf_counter()
            try:
                yield {config_error: "", row_errors: "", progress: progress_html(0, "Starting", f"{total} rows to measure"),
                       **views([])}
                events = run(config, stop)
                for event in events:
                    if isinstance(event, Progress):
                        yield {progress: event_progress(event)}
                    elif isinstance(event, RowDone):
                        rows.append(event.row)
                        run_prompts[event.row["run_id"]] = list(config.prompts)
                        yield {progress: progress_html(len(rows) / total, f"{len(rows)} of {total} rows done",
                                                       f"finished {event.row['method']} [{event.row['setting']}]"),
                               run_state: event.row["run_id"],
                               **views(rows, all_charts=ends_method(config, len(rows)))}
                seconds = time.perf_counter() - started
                failed = sum(r["status"] != "ok" for r in rows)
                yield {progress: progress_html(1, f"Done: {len(rows)} rows in {seconds:.0f} s" +
                                               (f", {failed} failed" if failed else ""),
                                               f"appended to {results_path}", "failed" if failed else "done"),
                       run_btn: gr.update(interactive=True), **views(rows, seconds)}
            except Stopped:
                yield {progress: progress_html(len(rows) / max(total, 1), f"Stopped after {len(rows)} of {total} rows",
                                               f"finished rows are kept in {results_path}", "stopped"),
                       run_btn: gr.update(interactive=True), **views(rows, time.perf_counter() - started)}
            except Exception as e:  # the app must stay usable whatever a run throws
                problem = one_line(e)
                yield {progress: progress_html(len(rows) / max(total, 1), "Run failed", problem, "failed"),
                       row_errors: f'<div class="bench-errors">\n\n**Run failed:** {html.escape(problem)}\n\n'
                                   f"{len(rows)} finished rows are kept.\n\n</div>",
                       run_btn: gr.update(interactive=True)}
            finally:
                STOP_EVENTS.pop(session, None)
                RUN_LOCK.release()

        def stop_run(request: gr.Request):
            event = STOP_EVENTS.get(request.session_hash or "")
            if event is None:
                return gr.skip()
            event.set()
            return progress_html(0.0, "Stopping…", "the run ends after the current generation step; finished rows are kept",
                                 "stopped")

        run_btn.click(prepare_run, inputs, [config_json, run_btn, progress], show_progress="hidden", **light).then(
            run_benchmark, config_json, run_outputs, api_name="run", concurrency_id="gpu", concurrency_limit=1,
            show_progress="full", show_progress_on=[progress]).then(
            lambda: gr.update(interactive=True), None, run_btn, **light)  # even if the run endpoint raised
        stop_btn.click(stop_run, None, progress, api_name="stop", show_progress="hidden", concurrency_limit=None)

        # ------------------------------------------------------------------ samples events
        def samples(run_id, methods, completion, current):
            records = store.load_outputs(results_path)
            runs = list(dict.fromkeys(r.get("run_id") for r in reversed(records)))
            run_id = run_id if run_id in runs else (current if current in runs else (runs[0] if runs else None))
            in_run = [r for r in records if r.get("run_id") == run_id]
            keys = list(dict.fromkeys(f"{r['method']} [{r['setting']}]" for r in in_run))
            methods = [m for m in methods or [] if m in keys]
            if run_id is None:
                return gr.update(choices=[], value=None), gr.update(choices=[], value=[]), \
                    f'<p class="bench-muted">No generated texts yet in {html.escape(str(store.outputs_path(results_path)))}.</p>'
            body = samples_html(records, run_id, methods, max(int(completion or 1), 1) - 1, run_prompts.get(run_id))
            return gr.update(choices=runs, value=run_id), gr.update(choices=keys, value=methods), body

        samples_args = dict(fn=samples, inputs=[samples_run, samples_methods, samples_completion, run_state],
                            outputs=[samples_run, samples_methods, samples_view], **light)
        for trigger in (samples_run.input, samples_methods.input, samples_completion.input):
            trigger(**samples_args)
        samples_tab.select(**samples_args)
        # A new run of this session becomes the run shown on the Samples page.
        run_state.change(lambda current, methods, completion: samples(current, methods, completion, current),
                         [run_state, samples_methods, samples_completion], [samples_run, samples_methods, samples_view],
                         **light)

        # ------------------------------------------------------------------ history events
        def history(files, *selected_values):
            return history_page(results_path, files, dict(zip(FILTERS, selected_values)))

        history_outputs = [*filters.values(), history_info, history_table, *history_plots.values()]
        history_args = dict(fn=history, inputs=[uploaded, *filters.values()], outputs=history_outputs,
                            show_progress="minimal", **light)
        history_tab.select(**history_args)
        reload_btn.click(**history_args)
        for dropdown in filters.values():
            dropdown.input(**history_args)

        def add_uploads(files, current):
            return list(dict.fromkeys((current or []) + [str(f) for f in files or []]))

        history_upload.upload(add_uploads, [history_upload, uploaded], uploaded, **light).then(**history_args)

        def export_history(files, *selected_values):
            df, _ = load_history(history_files(results_path, files))
            rows = filter_rows(df, dict(zip(FILTERS, selected_values)))
            path = export_file("history", ".csv")
            rows.to_csv(path, index=False)
            return gr.update(value=str(path), visible=True, label=f"Filtered rows ({len(rows):,})")

        export_btn.click(export_history, [uploaded, *filters.values()], history_file, **light)

    demo.bench_results_path = results_path
    demo.queue(api_open=False)  # API clients go through the queue too, so nothing skips the one-run rule
    return demo


def build_form(results_path: str, initial: dict | None = None) -> list:
    """Sections of components in Config field order; returns them in that order for form_dict."""
    by_name = {f.name: f for f in config_fields()}
    placed = {name for rows in SECTIONS.values() for row in rows for name in row}
    sections = dict(SECTIONS)
    rest = [name for name in by_name if name not in placed]
    if rest:
        sections["More settings"] = [rest[i:i + 3] for i in range(0, len(rest), 3)]
    made = {}
    for title, rows in sections.items():
        with gr.Accordion(title, open=True, elem_id=f"section-{title.lower().replace(' ', '-')}"):
            for row in rows:
                with gr.Row():
                    for name in row:
                        made[name] = make_input(by_name[name], (initial or {}).get(name))
    made["results"].value = results_path
    return [made[f.name] for f in config_fields()]


def launch_options(demo: gr.Blocks) -> dict:
    """launch() arguments every launch of the dashboard needs: look, and the one folder it may serve."""
    exports = Path(demo.bench_results_path).parent / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    return dict(theme=THEME, css=CSS, allowed_paths=[str(exports)])


def serve(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          auth: tuple[str, str] | None = None, **kwargs):
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth, **launch_options(demo), **kwargs)


def parse_auth(args) -> tuple[str, str] | None:
    """--auth USER:PASSWORD, else env BENCH_AUTH; raises ConfigError with one line when malformed."""
    text = getattr(args, "auth", None) or os.environ.get("BENCH_AUTH")
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        source = "--auth" if getattr(args, "auth", None) else "BENCH_AUTH"
        raise ConfigError(f"{source} must be USER:PASSWORD with both parts non-empty")
    return user, password


def launch_from_args(args) -> int:
    """`python app.py` without --preset/--config. Errors print one line on stderr and return 2."""
    try:
        auth = parse_auth(args)
        if args.share and auth is None:
            raise ConfigError("--share makes the dashboard public and anyone with the link could run jobs: "
                              "add --auth USER:PASSWORD (or set BENCH_AUTH=USER:PASSWORD)")
        from bench.cli import config_dict

        initial = config_dict(args)
        results = initial.pop("results", None) or default_of(Config.__dataclass_fields__["results"])
        if initial and (message := check(initial | {"results": results})):
            raise ConfigError(message)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo = build_app(results, initial=initial)
    try:
        # quiet: gradio's own hints name launch() arguments, not our flags; it still prints the share link.
        serve(demo, host=args.host, port=args.port, share=bool(args.share), auth=auth, prevent_thread_lock=True,
              quiet=True)
    except OSError as e:  # port taken, address not available: one line, like every other startup error
        print(f"error: cannot serve on {args.host}:{args.port}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"dashboard on {demo.local_url} (rows go to {results}; Ctrl-C stops it)")
    if args.share and not demo.share_url:
        print("warning: no public link could be made (see above); serving on the local address only", file=sys.stderr)
    demo.block_thread()  # until Ctrl-C
    return 0

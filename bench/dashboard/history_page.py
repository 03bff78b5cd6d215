"""History: every row of every CSV in the results folder plus uploads, filtered; picked runs compared on the
same charts as Results, against a baseline run in percent, with the settings they differ in; runs named,
tagged, annotated and hidden through the sidecar (store/notebook.py); the filtered rows exported as CSV and
the compared runs as one HTML report. The data work is in history.py."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from bench.dashboard.chart_grid import chart_grid
from bench.dashboard.history import (
    FILTERS,
    HISTORY_COLUMNS,
    change_table,
    compared_runs,
    diff_table,
    filter_choices,
    history_files,
    history_view,
    info_md,
    load_history,
    run_choices,
    visible,
    with_picked,
    workload_note,
)
from bench.dashboard.html import error_md
from bench.dashboard.shared import UI_ONLY, AppContext
from store import archive, export, notebook
from views import charts
from views.verdict import verdict

FILTER_LABELS = {"model": ("Model", "model"), "method": ("Method", "method"), "device": ("Device", "device"),
                 "device_name": ("Device name", "device-name"),
                 "run_id": ("Runs (picked runs are compared in the charts)", "run")}  # key -> (label, elem_id part)


def view_names() -> list[str]:
    """What a tick in a filter redraws; read at build time, so a figure added to the registry shows up."""
    return ["info", "verdict", "change", "diff", "table", *[f"chart:{name}" for name in charts.FIGURES]]


class FigureCache:
    """The charts of some compared rows, kept by the rows' content: a tick that leaves the compared rows as they
    were (a filter of the table only, the same runs picked again) redraws no chart. Drawing every figure of the
    catalogue is most of a History answer (about 2 s of CPU for 20 figures)."""

    def __init__(self, size: int = 8):
        self.size, self.kept = size, {}

    def figures(self, compared: pd.DataFrame) -> dict:
        key = (tuple(compared.columns), int(pd.util.hash_pandas_object(compared.astype(str), index=False).sum()))
        if key not in self.kept:
            while self.kept and len(self.kept) >= self.size:
                self.kept.pop(next(iter(self.kept)))
            self.kept[key] = {name: draw(compared) for name, draw in charts.FIGURES.items()}
        return self.kept[key]


def view_updates(df: pd.DataFrame, problems: list[str], files: list[Path], results_path: Path,
                 uploaded: list[str] | None, selected: dict[str, list], baseline: str | None = None,
                 show_hidden: bool = False, cache: FigureCache | None = None) -> dict:
    """Info line, baseline changes, settings diff, table and charts of the picked rows: name -> value."""
    shown = visible(df, show_hidden)
    baseline = baseline if baseline and baseline in set(shown["run_id"].astype(str)) else None
    rows, table, compared = history_view(shown, selected, baseline)
    hidden = 0 if show_hidden else df.loc[df["hidden"].astype(bool), "run_id"].nunique()
    out = {"info": info_md(shown, rows, compared, files, results_path.parent, bool(uploaded), problems, hidden),
           # The compared runs' verdict (views/verdict.py, as on Results), each run held against the baseline.
           "verdict": verdict(compared.to_dict("records"), baseline).markdown() if len(compared) else "",
           "change": gr.update(value=change_table(compared, baseline),
                               label=" · ".join(filter(None, ["Change vs baseline", workload_note(compared, baseline)]))),
           "diff": diff_table(compared), "table": table}
    drawn = (cache or FigureCache(0)).figures(compared)
    for name in charts.FIGURES:
        out[f"chart:{name}"] = drawn[name]
    return out


def history_updates(results_path: Path, uploaded: list[str] | None, selected: dict[str, list],
                    baseline: str | None = None, show_hidden: bool = False, cache: FigureCache | None = None) -> dict:
    """Everything the History page shows, name -> value: filter choices, the baseline and edit pickers,
    then the view (info, change, diff, table, charts).

    The filters get new choices only, never a value: the user may tick more while this is computed, and
    an answer to an earlier state must not undo a later tick. A picked value that is gone (its file
    dropped) stays offered, marked, so it can be unticked."""
    files = history_files(results_path, uploaded)
    df, problems = load_history(files, results_path)
    shown = visible(df, show_hidden)
    runs = run_choices(shown)
    hidden = set() if show_hidden else set(df.loc[df["hidden"].astype(bool), "run_id"].astype(str))
    out = {f"filter:{key}": gr.update(choices=with_picked(filter_choices(shown, key, runs), selected.get(key), hidden))
           for key in FILTERS}
    out["baseline"] = gr.update(choices=[("none", "")] + with_picked(runs, [baseline] if baseline else [], hidden))
    # Hidden runs too: this is where they are shown again.
    out["edit"] = gr.update(choices=runs if show_hidden or not df["hidden"].any() else run_choices(df))
    out.update(view_updates(df, problems, files, results_path, uploaded, selected, baseline, show_hidden, cache))
    return out


class HistoryPage:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.cache = FigureCache()  # this app's History charts, by the rows they draw
        with gr.Tab("History", id="history", elem_id="history-tab") as self.tab:
            with gr.Row():
                self.upload = gr.File(label="Add CSVs from other machines (this session only)", file_count="multiple",
                                      file_types=[".csv"], elem_id="history-upload", height=110, scale=3)
                with gr.Column(scale=1, min_width=200):
                    self.reload_btn = gr.Button("Reload", elem_id="history-reload", size="sm")
                    self.export_btn = gr.Button("Export filtered rows as CSV", elem_id="history-export", size="sm")
                    self.report_btn = gr.Button("Download report of the compared runs (HTML)", size="sm",
                                                elem_id="history-report")
                    self.download = gr.File(label="Download", visible=False, interactive=False,
                                            elem_id="history-download")
            with gr.Row():
                self.filters = {key: gr.Dropdown([], multiselect=True, label=FILTER_LABELS[key][0],
                                                 elem_id=f"history-filter-{FILTER_LABELS[key][1]}",
                                                 scale=3 if key == "run_id" else 1)
                                for key in FILTERS}
            with gr.Row():
                self.baseline = gr.Dropdown([("none", "")], value="", label="Baseline run",
                                            info="the compared runs' rows in percent of this run's", scale=3,
                                            elem_id="history-baseline")
                self.show_hidden = gr.Checkbox(False, label="Show hidden runs", elem_id="history-show-hidden",
                                               scale=1)
            self.info = gr.Markdown("", elem_id="history-info")
            self.verdict = gr.Markdown("", elem_id="history-verdict")
            with gr.Accordion("Against the baseline: percent change with 95% intervals", open=True,
                              elem_id="history-change-section"):
                gr.Markdown("Each row of the compared runs against the baseline's row of the same method, setting, "
                            "engine, quantization and attention. *n.s.* = no significant difference (the interval "
                            "holds 0). For TTFT, TPOT and memory lower is better.", elem_classes="bench-muted")
                self.change = gr.Dataframe(pd.DataFrame(columns=["run", "row"]), interactive=False, wrap=False,
                                           max_height=320, label="Change vs baseline", elem_id="history-change")
            with gr.Accordion("Settings the compared runs differ in", open=True, elem_id="history-diff-section"):
                self.diff = gr.Dataframe(pd.DataFrame(columns=["key"]), interactive=False, wrap=True,
                                         max_height=320, label="Differences (settings and environment)",
                                         elem_id="history-diff")
            with gr.Accordion("Name, tag, annotate or hide a run", open=False, elem_id="history-edit-section"):
                with gr.Row():
                    self.edit_run = gr.Dropdown([], label="Run", scale=3, elem_id="history-edit-run")
                    self.edit_name = gr.Textbox(label="Name", scale=2, elem_id="history-edit-name")
                    self.edit_tags = gr.Textbox(label="Tags (comma separated)", scale=2, elem_id="history-edit-tags")
                with gr.Row():
                    self.edit_notes = gr.Textbox(label="Notes", lines=2, scale=5, elem_id="history-edit-notes")
                    with gr.Column(scale=1, min_width=160):
                        self.edit_hidden = gr.Checkbox(False, label="Hidden", elem_id="history-edit-hidden")
                        self.save_btn = gr.Button("Save", variant="primary", size="sm", elem_id="history-edit-save")
                self.edit_note = gr.Markdown("Kept in notebook.json beside the CSV; the CSV is never rewritten and "
                                             "no row is deleted.", elem_id="history-edit-note")
            self.table = gr.Dataframe(pd.DataFrame(columns=HISTORY_COLUMNS), interactive=False, wrap=False,
                                      max_height=380, label="Rows (newest first)", elem_id="history-table")
            self.plots = chart_grid("history-chart-")
            self.uploaded = gr.State([])  # paths of this session's uploads; other sessions never see them

    # ------------------------------------------------------------------ events

    def components(self) -> dict:
        return {**{f"filter:{k}": d for k, d in self.filters.items()}, "baseline": self.baseline,
                "edit": self.edit_run, "info": self.info, "verdict": self.verdict, "change": self.change,
                "diff": self.diff, "table": self.table, **{f"chart:{name}": plot for name, plot in self.plots.items()}}

    def wire(self) -> None:
        every = self.components()
        full_out = list(every.values())
        view_out = [every[name] for name in view_names()]
        state = [self.uploaded, self.baseline, self.show_hidden, *self.filters.values()]
        full = dict(fn=self.show, inputs=state, outputs=full_out, show_progress="minimal", **UI_ONLY)
        self.tab.select(**full)
        self.reload_btn.click(**full)
        self.show_hidden.input(**full)
        view = dict(fn=self.show_view, inputs=state, outputs=view_out, show_progress="minimal",
                    trigger_mode="always_last", **UI_ONLY)
        # A tick redraws the rows and charts only, never the filters; the last tick always gets its answer.
        for dropdown in self.filters.values():
            dropdown.input(**view)
        self.baseline.input(**view)
        self.upload.upload(self.add_uploads, [self.upload, self.uploaded], self.uploaded, **UI_ONLY).then(**full)
        self.export_btn.click(self.export, state, self.download, **UI_ONLY)
        self.report_btn.click(self.report, state, self.download, **UI_ONLY)
        edit_fields = [self.edit_name, self.edit_tags, self.edit_notes, self.edit_hidden]
        # The fields are locked until the picked run's values are in: a fill that answered after the user had
        # started typing would overwrite what was typed.
        self.edit_run.input(lambda: [gr.update(interactive=False)] * len(edit_fields), None, edit_fields,
                            queue=False, show_progress="hidden", **UI_ONLY) \
            .then(self.fill_edit, [self.uploaded, self.edit_run], edit_fields + [self.edit_note], **UI_ONLY)
        self.save_btn.click(self.save, [self.edit_run, *edit_fields], self.edit_note, **UI_ONLY).then(**full)

    def selection(self, values) -> dict[str, list]:
        return dict(zip(FILTERS, values))

    def show(self, files, baseline, show_hidden, *selected_values):
        out = history_updates(self.ctx.results_path, files, self.selection(selected_values), baseline or None,
                              bool(show_hidden), self.cache)
        return [out[name] for name in self.components()]

    def show_view(self, files, baseline, show_hidden, *selected_values):
        paths = history_files(self.ctx.results_path, files)
        df, problems = load_history(paths, self.ctx.results_path)
        out = view_updates(df, problems, paths, self.ctx.results_path, files, self.selection(selected_values),
                           baseline or None, bool(show_hidden), self.cache)
        return [out[name] for name in view_names()]

    @staticmethod
    def add_uploads(files, current):
        return list(dict.fromkeys((current or []) + [str(f) for f in files or []]))

    def picked_rows(self, files, baseline, show_hidden, selected_values):
        df, _ = load_history(history_files(self.ctx.results_path, files), self.ctx.results_path)
        shown = visible(df, bool(show_hidden))
        rows, _, compared = history_view(shown, self.selection(selected_values), baseline or None)
        return rows, compared

    def export(self, files, baseline, show_hidden, *selected_values):
        rows, _ = self.picked_rows(files, baseline, show_hidden, selected_values)
        path = self.ctx.export_file("history", ".csv")
        export.export_csv(rows.drop(columns=["hidden"], errors="ignore"), path)  # formula cells are escaped
        return gr.update(value=str(path), visible=True, label=f"Filtered rows ({len(rows):,})")

    def report(self, files, baseline, show_hidden, *selected_values):
        from views.report import write_report

        _, compared = self.picked_rows(files, baseline, show_hidden, selected_values)
        if compared.empty:
            return gr.update(visible=True, value=None, label="No run to report")
        runs = set(compared_runs(compared))
        records = [r for r in archive.load_outputs(self.ctx.results_path) if str(r.get("run_id")) in runs]
        path = write_report(self.ctx.export_file("report", ".html"), compared, records)
        return gr.update(value=str(path), visible=True, label=f"Report of {len(runs)} run(s)")

    def fill_edit(self, files, run_id):
        """The picked run's current name, tags, notes and hidden flag, and the fields unlocked again."""
        df, _ = load_history(history_files(self.ctx.results_path, files), self.ctx.results_path)
        part = df[df["run_id"].astype(str) == str(run_id)]
        if part.empty:
            values = ["", "", "", False]
        else:
            first = part.iloc[0]
            values = [notebook.text(first["run_name"]), notebook.tags_text(notebook.text(first["run_tags"])),
                      notebook.text(first["run_notes"]), bool(part["hidden"].any())]
        note = f"Editing `{run_id}`: Save keeps it in notebook.json beside the CSV; the CSV is never rewritten." \
            if run_id else "Kept in notebook.json beside the CSV; the CSV is never rewritten and no row is deleted."
        return [gr.update(value=v, interactive=True) for v in values] + [note]

    def save(self, run_id, name, tags, notes, hidden):
        if not run_id:
            return error_md("pick a run first")
        try:
            notebook.update_meta(self.ctx.results_path, run_id, name=(name or "").strip(), tags=tags or "",
                                  notes=(notes or "").strip(), hidden=bool(hidden))
        except notebook.MetaError as e:
            return error_md(str(e))
        return (f"Saved for `{run_id}`{' (hidden)' if hidden else ''} in "
                f"`{notebook.meta_path(self.ctx.results_path).name}`; the CSV is unchanged.")

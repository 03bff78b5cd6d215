"""History: every row of every CSV in the results folder plus uploads, filtered, picked runs compared on
the same charts as Results, the filtered rows exported as CSV. The data work is in history.py."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from bench import charts, store
from bench.dashboard.chart_grid import chart_grid
from bench.dashboard.context import UI_ONLY, Context
from bench.dashboard.history import (FILTERS, HISTORY_COLUMNS, filter_choices, filter_rows, history_files,
                                     history_view, info_md, load_history, with_picked)

FILTER_LABELS = {"model": ("Model", "model"), "method": ("Method", "method"), "device": ("Device", "device"),
                 "run_id": ("Runs (picked runs are compared in the charts)", "run")}  # key -> (label, elem_id part)


def history_updates(results_path: Path, uploaded: list[str] | None, selected: dict[str, list]) -> list:
    """Everything the History page shows: filter choices, info line, table, charts (in that order).

    The filters get new choices only, never a value: the user may tick more while this is computed, and
    an answer to an earlier state must not undo a later tick. A picked value that is gone (its file
    dropped) stays offered, marked, so it can be unticked."""
    files = history_files(results_path, uploaded)
    df, problems = load_history(files)
    updates = [gr.update(choices=with_picked(filter_choices(df, key), selected.get(key))) for key in FILTERS]
    return [*updates, *view_updates(df, problems, files, results_path, uploaded, selected)]


def view_updates(df: pd.DataFrame, problems: list[str], files: list[Path], results_path: Path,
                 uploaded: list[str] | None, selected: dict[str, list]) -> list:
    """Info line, table and charts of the picked rows."""
    rows, shown, compared = history_view(df, selected)
    info = info_md(df, rows, compared, files, results_path.parent, bool(uploaded), problems)
    return [info, shown, *[draw(compared) for draw in charts.FIGURES.values()]]


class HistoryPage:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        with gr.Tab("History", id="history", elem_id="history-tab") as self.tab:
            with gr.Row():
                self.upload = gr.File(label="Add CSVs from other machines (this session only)", file_count="multiple",
                                      file_types=[".csv"], elem_id="history-upload", height=110, scale=3)
                with gr.Column(scale=1, min_width=200):
                    self.reload_btn = gr.Button("Reload", elem_id="history-reload")
                    self.export_btn = gr.Button("Export filtered rows as CSV", elem_id="history-export")
                    self.download = gr.File(label="Filtered rows", visible=False, interactive=False,
                                            elem_id="history-download")
            with gr.Row():
                self.filters = {key: gr.Dropdown([], multiselect=True, label=FILTER_LABELS[key][0],
                                                 elem_id=f"history-filter-{FILTER_LABELS[key][1]}",
                                                 scale=3 if key == "run_id" else 1)
                                for key in FILTERS}
            self.info = gr.Markdown("", elem_id="history-info")
            self.table = gr.Dataframe(pd.DataFrame(columns=HISTORY_COLUMNS), interactive=False, wrap=False,
                                      max_height=380, label="Rows (newest first)", elem_id="history-table")
            self.plots = chart_grid("history-chart-")
            self.uploaded = gr.State([])  # paths of this session's uploads; other sessions never see them

    def wire(self) -> None:
        view = [self.info, self.table, *self.plots.values()]
        args = dict(fn=self.show, inputs=[self.uploaded, *self.filters.values()],
                    outputs=[*self.filters.values(), *view], show_progress="minimal", **UI_ONLY)
        self.tab.select(**args)
        self.reload_btn.click(**args)
        for dropdown in self.filters.values():
            # A tick redraws the rows and charts only, never the filters; the last tick always gets its answer.
            dropdown.input(self.show_view, [self.uploaded, *self.filters.values()], view, show_progress="minimal",
                           trigger_mode="always_last", **UI_ONLY)
        self.upload.upload(self.add_uploads, [self.upload, self.uploaded], self.uploaded, **UI_ONLY).then(**args)
        self.export_btn.click(self.export, [self.uploaded, *self.filters.values()], self.download, **UI_ONLY)

    def selection(self, values) -> dict[str, list]:
        return dict(zip(FILTERS, values))

    def show(self, files, *selected_values):
        return history_updates(self.ctx.results_path, files, self.selection(selected_values))

    def show_view(self, files, *selected_values):
        paths = history_files(self.ctx.results_path, files)
        df, problems = load_history(paths)
        return view_updates(df, problems, paths, self.ctx.results_path, files, self.selection(selected_values))

    @staticmethod
    def add_uploads(files, current):
        return list(dict.fromkeys((current or []) + [str(f) for f in files or []]))

    def export(self, files, *selected_values):
        df, _ = load_history(history_files(self.ctx.results_path, files))
        rows = filter_rows(df, self.selection(selected_values))
        path = self.ctx.export_file("history", ".csv")
        store.export_csv(rows, path)  # cells a spreadsheet would run as formulas are escaped
        return gr.update(value=str(path), visible=True, label=f"Filtered rows ({len(rows):,})")

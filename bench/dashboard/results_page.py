"""Results: the charts of the run just made; the Run page streams into them. Opened without a run of this
session (a reload, a new visitor), it shows the newest run in the results file instead. Download report
writes the shown run as one self-contained HTML file (views/report.py)."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from bench.dashboard.chart_grid import chart_grid, draw
from bench.dashboard.html import error_md, summary_md
from bench.dashboard.shared import UI_ONLY, AppContext
from store import archive, notebook
from views.verdict import verdict


def summary_with_verdict(rows: list[dict], seconds: float | None = None, note: str = "") -> str:
    """The verdict card on top (views/verdict.py: the CLI and the report say the same), then the run line."""
    card = verdict(rows).html() + "\n\n" if rows else ""
    return card + summary_md(rows, seconds, note)


class ResultsPage:
    def __init__(self, ctx: AppContext | None = None):
        self.ctx = ctx
        with gr.Tab("Results", id="results", elem_id="results-tab") as self.tab:
            with gr.Row(equal_height=False, elem_id="results-head"):
                self.summary = gr.Markdown(summary_md([]), elem_id="results-summary")
                with gr.Column(scale=0, min_width=230):
                    self.report_btn = gr.Button("Download report (HTML)", size="sm", elem_id="results-report")
                    self.report_file = gr.File(label="Report", visible=False, interactive=False,
                                               elem_id="results-report-file")
            self.plots = chart_grid("chart-")

    def wire(self, run_state: gr.State) -> None:
        """run_state: the Run page's latest run_id of this session ('' when none)."""
        self.tab.select(self.show_latest, run_state, [self.summary, *self.plots.values()], **UI_ONLY)
        self.report_btn.click(self.report, run_state, self.report_file, **UI_ONLY)

    def show_summary(self, rows: list[dict], seconds: float | None = None) -> dict:
        return {self.summary: summary_with_verdict(rows, seconds)}

    def show_charts(self, rows: list[dict]) -> dict:
        return draw(self.plots, pd.DataFrame(rows, columns=archive.COLUMNS))

    def rows(self) -> pd.DataFrame:
        path = self.ctx.results_path
        try:
            df = archive.load_rows(path) if path.exists() else pd.DataFrame(columns=archive.COLUMNS)
        except Exception:  # a broken file: History says why; here there is simply nothing to show
            df = pd.DataFrame(columns=archive.COLUMNS)
        return notebook.apply_meta(df, notebook.load_meta(path))

    def newest_run(self, df: pd.DataFrame) -> str | None:
        overview = notebook.run_overview(df)
        return str(overview["run_id"].iloc[0]) if len(overview) else None

    def show_latest(self, current):
        """Nothing to do while this session's own run is shown; else the newest run on disk."""
        if current:
            return [gr.skip()] * (1 + len(self.plots))
        df = self.rows()
        run_id = self.newest_run(df)
        if run_id is None:
            return [gr.skip()] * (1 + len(self.plots))
        rows = df[df["run_id"].astype(str) == run_id]
        note = (f"The newest run in `{self.ctx.results_path.name}` (no run yet in this browser session; "
                "every run is in **History**).")
        return [summary_with_verdict(rows.to_dict("records"), note=note), *draw(self.plots, rows).values()]

    def report(self, current):
        """The shown run (this session's, else the newest on disk) as one HTML file."""
        from views.report import run_report

        df = self.rows()
        run_id = current or self.newest_run(df)
        if not run_id:
            return gr.update(visible=True, value=None, label="No run to report yet")
        path = self.ctx.export_file("report", ".html")
        try:
            run_report(self.ctx.results_path, [run_id], path)
        except OSError as e:
            gr.Warning(error_md(f"cannot write the report: {e.strerror or e}"))
            return gr.skip()
        return gr.update(value=str(path), visible=True, label=f"Report of {run_id}")

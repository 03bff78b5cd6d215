"""Results: the charts of the run just made; the Run page streams into them. Opened without a run of this
page (a new visitor), it shows the newest run in the results file instead. The report button is of the run
on screen and says which ("Download report of <name>"): it writes that run as one self-contained HTML file
(views/report.py), whatever run started since."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from bench.dashboard.chart_grid import chart_grid, draw
from bench.dashboard.html import error_md, summary_md
from bench.dashboard.shared import UI_ONLY, AppContext
from store import archive, notebook
from views.table import is_load_row, regime_notes
from views.verdict import verdict


def summary_with_verdict(rows: list[dict], seconds: float | None = None, note: str = "") -> str:
    """The verdict card on top (views/verdict.py: the CLI and the report say the same), then the run line."""
    card = verdict(rows).html() + "\n\n" if rows else ""
    # Which regime each engine ran in (as the CLI table's footer says): on a host-bound engine a method
    # comparison mostly measures Python.
    regime = " ".join(regime_notes([r for r in rows if not is_load_row(r)]))
    return card + summary_md(rows, seconds, note) + (f"\n\n<small>{regime}</small>" if regime else "")


class ResultsPage:
    def __init__(self, ctx: AppContext | None = None):
        self.ctx = ctx
        with gr.Tab("Results", id="results", elem_id="results-tab") as self.tab:
            with gr.Row(equal_height=False, elem_id="results-head"):
                self.summary = gr.Markdown(summary_md([]), elem_id="results-summary")
                with gr.Column(scale=0, min_width=230):
                    self.shown = gr.State("")  # run_id of the run on screen: the report is of this run
                    self.report_btn = gr.Button("Download report (HTML)", size="sm", elem_id="results-report",
                                                interactive=False)
                    self.report_file = gr.File(label="Report", visible=False, interactive=False,
                                               elem_id="results-report-file")
            self.plots = chart_grid("chart-")

    def wire(self) -> None:
        self.tab.select(self.show_latest, self.shown, self.outputs(), **UI_ONLY)
        self.report_btn.click(self.report, self.shown, self.report_file, **UI_ONLY)

    def outputs(self) -> list:
        """What show_run updates, in one list: summary, the run on screen, its report button, the charts."""
        return [self.summary, self.shown, self.report_btn, *self.plots.values()]

    def show_run(self, rows: list[dict], name: str, run_id: str, seconds: float | None = None,
                 all_charts: bool = True, note: str = "") -> dict:
        """Puts one run on screen: the summary, the button naming it, and its charts when all_charts; the
        report button and the charts always change together with the run on screen."""
        out = {self.summary: summary_with_verdict(rows, seconds, note), self.shown: run_id,
               self.report_btn: gr.update(value=f"Download report of {name}", interactive=True)}
        if all_charts:
            out.update(draw(self.plots, pd.DataFrame(rows, columns=archive.COLUMNS)))
        return out

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

    def show_latest(self, shown):
        """Nothing to do while a run is on screen; else the newest run on disk."""
        skip = {c: gr.skip() for c in self.outputs()}
        if shown:
            return skip
        df = self.rows()
        run_id = self.newest_run(df)
        if run_id is None:
            return skip
        rows = df[df["run_id"].astype(str) == run_id].to_dict("records")
        name = str(rows[0].get("run_name") or "")
        note = (f"The newest run in `{self.ctx.results_path.name}` (no run yet on this page; "
                "every run is in **History**).")
        return skip | self.show_run(rows, run_id if name in ("", "nan", "<NA>") else name, run_id, note=note)

    def report(self, shown):
        """The run on screen as one HTML file."""
        from views.report import run_report

        run_id = shown
        if not run_id:
            return gr.update(visible=True, value=None, label="No run to report yet")
        path = self.ctx.export_file("report", ".html")
        try:
            run_report(self.ctx.results_path, [run_id], path)
        except OSError as e:
            gr.Warning(error_md(f"cannot write the report: {e.strerror or e}"))
            return gr.skip()
        return gr.update(value=str(path), visible=True, label=f"Report of {run_id}")

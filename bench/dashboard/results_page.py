"""Results: the charts of the run just made. It has no events of its own; the Run page streams into it."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from bench import store
from bench.dashboard.chart_grid import chart_grid, draw
from bench.dashboard.html import summary_md


class ResultsPage:
    def __init__(self):
        with gr.Tab("Results", id="results", elem_id="results-tab"):
            self.summary = gr.Markdown(summary_md([]), elem_id="results-summary")
            self.plots = chart_grid("chart-")

    def show_summary(self, rows: list[dict], seconds: float | None = None) -> dict:
        return {self.summary: summary_md(rows, seconds)}

    def show_charts(self, rows: list[dict]) -> dict:
        return draw(self.plots, pd.DataFrame(rows, columns=store.COLUMNS))

"""The figures registry laid out as a grid, the same on Results and History: every chart in
views.charts.FIGURES appears in registry order, under its section heading (charts.SECTION_STARTS), two per
row, an odd one out of a section alone on its last row."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from views import charts

PER_ROW = 2


def grid_rows(names: list[str], per_row: int = PER_ROW) -> list[list[str]]:
    """Names in rows of per_row; the last row holds what is left, so no chart is ever dropped."""
    return [names[i:i + per_row] for i in range(0, len(names), per_row)]


def chart_grid(elem_prefix: str) -> dict[str, gr.Plot]:
    """A gr.Plot per registered figure, each drawn empty until rows arrive, under its section's heading;
    name -> plot."""
    plots = {}
    # Read at build time, not import time: a figure added to the registry shows up without touching pages.
    for heading, names in charts.sections(list(charts.FIGURES)):
        if heading:
            gr.Markdown(f"#### {heading}", elem_classes="bench-section")
        for row in grid_rows(names):
            with gr.Row(equal_height=True):
                for name in row:
                    plots[name] = gr.Plot(charts.FIGURES[name](None), show_label=False,
                                          elem_id=f"{elem_prefix}{name}")
    return plots


def draw(plots: dict[str, gr.Plot], rows: pd.DataFrame) -> dict:
    """plot -> its figure of these rows, as an update gradio applies to each plot."""
    return {plot: charts.FIGURES[name](rows) for name, plot in plots.items()}

"""The browser dashboard: configure, run, watch and compare benchmark runs.

    python app.py                      # http://127.0.0.1:7860
    python app.py --share --auth me:pw # public link; a login is required because anyone could run jobs

Pages: Run (form + live table), Results (charts of the run just made, else the newest on disk), Samples
(texts side by side), History (every row in the results folder, filtered, compared against a baseline run,
runs named, tagged and hidden through bench/runs_meta.py's sidecar). Settings flow one way:
form -> dict -> Config.from_dict -> bench.runner.run, the same loop the CLI uses. Results and History hand
out the standalone HTML report (bench/report_html.py).

    app.py        the Blocks app: tabs, queue, the one-run lock, launch and serve
    form.py       the config form, generated from Config's field metadata
    run_page.py, results_page.py, samples_page.py, history_page.py   one page each: components + events
    chart_grid.py the figures registry (bench.charts.FIGURES) laid out as rows of charts
    history.py    History's data: loading CSVs, filtering, picking runs to compare (pandas, no gradio)
    html.py       HTML and Markdown views: progress bar, errors, summary, samples
    context.py    what the app hands every page: the results file, exports, UI-only event options
    style.css     the dashboard's CSS
    resize.js     lays a Plotly figure out again when its container's width changes (a hidden tab shown)
"""
from __future__ import annotations

import importlib
import os

# Before anything imports gradio: the dashboard never reports usage.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# name -> module that defines it. Resolved on first use, so `import bench.dashboard.history` (pandas
# only) and the CLI's import of this package load no gradio until a page is actually built.
_EXPORTS = {
    "launch": "app", "build_app": "app", "serve": "app", "launch_options": "app", "parse_auth": "app",
    "RUN_LOCK": "app",
    "config_fields": "form", "to_form": "form", "from_form": "form", "form_dict": "form", "form_values": "form",
    "check": "form", "form_words": "form",
    "error_md": "html", "errors_md": "html", "progress_html": "html", "summary_md": "html", "samples_html": "html",
    "results_table": "run_page",
    "history_updates": "history_page",
    "HISTORY_COLUMNS": "history", "HISTORY_TABLE_ROWS": "history", "FILTERS": "history", "load_history": "history",
    "history_files": "history", "filter_rows": "history", "history_view": "history", "run_choices": "history",
    "grid_rows": "chart_grid",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

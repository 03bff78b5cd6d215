"""The browser dashboard: configure, run, watch and compare benchmark runs.

    python app.py                      # http://127.0.0.1:7860
    python app.py --share --auth me:pw # public link; a login is required because anyone could run jobs

Pages: Run (form + live table), Results (charts of the run just made, else the newest on disk), Samples
(texts side by side), History (every row in the results folder, filtered, compared against a baseline run,
runs named, tagged and hidden through store/notebook.py's sidecar). Settings flow one way:
form -> dict -> Config.from_dict -> bench.runner.run, the same loop the CLI uses. Results and History hand
out the standalone HTML report (views/report.py).

    app.py        the Blocks app: tabs, queue, the one-run lock, launch and serve
    form.py       the config form, generated from Config's field metadata
    run_page.py, results_page.py, samples_page.py, history_page.py   one page each: components + events
    chart_grid.py the figures registry (views.charts.FIGURES) laid out as rows of charts
    history.py    History's data: loading CSVs, filtering, picking runs to compare (pandas, no gradio)
    html.py       HTML and Markdown views: progress bar, errors, summary, samples
    shared.py     what the app hands every page (AppContext): the results file, exports, UI-only event options
    style.css     the dashboard's CSS
    resize.js     lays a Plotly figure out again when its container's width changes (a hidden tab shown)
    keys.js       keyboard use: arrow keys and Enter on the tabs, Enter applies a typed SLO target
    jobs.py       runs owned by the server (RunBoard): they outlive the tab, a reload reattaches, Stop is direct
"""
from __future__ import annotations

import os

# Before anything imports gradio: the dashboard never reports usage.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

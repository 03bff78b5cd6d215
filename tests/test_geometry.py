"""No figure covers its own text: every figure of the catalogue (views.charts.FIGURES), drawn from one run and
from three, in Chromium at 1440 and 800 px, on the Results page, on History with three runs picked, and in
the offline report. Read from the rendered SVG's bounding boxes (tests/geometry.py): no box of a title,
legend, button (update menus, modebar) or label intersects another, no text leaves its figure, and no
figure is wider than its card.

The rows are measured once (the tiny pair on the CPU): a per-call run and a load run, filed under one run id
so that one page draws every figure, then copied under three run ids and names, which is what History and the
report compare. Only the layout is under test here, so the copies carry the same figures, their speeds
scaled a little apart.
"""
from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright

from geometry import collisions, figures_drawn
from test_browser import CHROMIUM, free_port, open_tab

from bench.config import Config, preset_path, read_json
from bench.dashboard.app import build_app, launch_options
from bench.runner import run_all
from store import archive
from views import charts
from views.report import run_report

WIDTHS = (1440, 800)
NAMES = ["first run", "second run on another machine", "third"]
SPEEDS = ("tokens_per_s", "aggregate_tokens_per_s", "output_tokens_per_s", "request_throughput", "goodput")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    measured = tmp_path_factory.mktemp("measured") / "runs.csv"
    tiny = read_json(preset_path("tiny")) | dict(repetitions=1, max_new_tokens=8, results=str(measured))
    load = tiny | dict(methods=["standard", "speculative"], engine=["continuous"], concurrency=[1, 2],
                       num_requests=6, slo_ttft_ms=500, slo_tpot_ms=50, warmup_requests=1, max_batch_size=4)
    rows = run_all(Config.from_dict(tiny)) + run_all(Config.from_dict(load))
    torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("geometry") / "results" / "runs.csv"
    for k, name in enumerate(NAMES):
        for row in rows:
            # Each copy a little faster, so three runs' points and labels do not fall on one another.
            faster = {c: v * (1 + 0.3 * k) for c, v in row.items()
                      if c.startswith(SPEEDS) and isinstance(v, (int, float)) and v == v}
            archive.append_row(path, row | faster | dict(run_id=f"geo-{k + 1}", run_name=name,
                                                         timestamp=f"2026-12-0{k + 1}T10:00:00+00:00"))
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


def settle(page, selector: str) -> None:
    """Every figure under selector drawn, and Plotly's resize to its card done."""
    page.wait_for_function(f"document.querySelectorAll('{selector} .main-svg').length >= {len(charts.FIGURES)}",
                           timeout=60_000)
    page.wait_for_timeout(1500)


def test_dashboard_figures_never_cover_their_own_text(results, browser):
    demo = build_app(results)
    demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **launch_options(demo))
    problems = []
    try:
        for width in WIDTHS:
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.goto(demo.local_url)
            page.wait_for_selector("#run-button")
            open_tab(page, "Results")  # one run: the newest
            settle(page, "[id^=chart-]:not(#chart-live)")
            assert figures_drawn(page, "[id^=chart-]:not(#chart-live) .js-plotly-plot") == len(charts.FIGURES)
            problems += [f"{width} px, Results: {p}" for p in collisions(page, "[id^=chart-] .js-plotly-plot")]
            open_tab(page, "History")
            page.wait_for_selector("#history-info:has-text('3 runs')", timeout=60_000)
            page.click("#history-filter-run input")
            for name in NAMES:
                page.get_by_role("option", name=name, exact=False).first.click()
                page.wait_for_timeout(300)
            page.keyboard.press("Escape")
            page.wait_for_selector("#history-info:has-text('Charts compare 3 run')", timeout=60_000)
            settle(page, "[id^=history-chart-]")
            problems += [f"{width} px, History: {p}" for p in collisions(page, "[id^=history-chart-] .js-plotly-plot")]
            page.close()
    finally:
        demo.close()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("runs", [1, 3])
def test_report_figures_never_cover_their_own_text(results, browser, tmp_path, runs):
    report = run_report(results, [f"geo-{k + 1}" for k in range(runs)], tmp_path / "report.html")
    problems = []
    for width in WIDTHS:
        page = browser.new_page(viewport={"width": width, "height": 1000})
        page.goto(report.as_uri())
        settle(page, "body")
        assert figures_drawn(page, ".js-plotly-plot") == len(charts.FIGURES)
        problems += [f"{width} px: {p}" for p in collisions(page)]
        page.close()
    assert not problems, "\n".join(problems)

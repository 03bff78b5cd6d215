"""A new user in a real browser (Debian's Chromium, headless): pick the tiny preset, Run, watch the table
and charts fill in, then find the run in History.

    BENCH_UPDATE_SCREENSHOTS=1 python -m pytest tests/test_browser.py   # also refreshes docs/*.png

Never skipped: CI installs chromium with apt (no `playwright install`).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch
from playwright.sync_api import Page, sync_playwright

from views import charts

from bench.dashboard.app import build_app, launch_options

from store import archive
from bench.config import Config, preset_path, read_json
from bench.runner import total_rows

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
RUN_TIMEOUT_MS = 300_000  # the tiny preset takes ~15 s alone; Chromium shares the CPU with it
VIEWPORT = {"width": 1440, "height": 1150}
DOC_SHOTS = {"run_page.png": "docs/run_page.png", "results_page.png": "docs/results_page.png",
             "samples_page.png": "docs/samples_page.png"}
NOTEBOOK_SHOT = "docs/history_page.png"  # from the History notebook test: two runs against a baseline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    results = tmp_path / "results" / "runs.csv"
    demo = build_app(results)
    demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **launch_options(demo))
    # Chromium draws on the same CPU: torch's spinning OpenMP threads would then slow the tiny run 4x.
    # This test checks the page, not speed.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield demo.local_url, results
    torch.set_num_threads(threads)
    demo.close()


@pytest.fixture
def page():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser.new_page(viewport=VIEWPORT)
        browser.close()


def open_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def tour(page: Page, url: str, results: Path, out: Path) -> dict[str, Path]:
    """What a new user does, with a screenshot of each page; returns name -> PNG path."""
    shots = {}
    page.goto(url)
    page.wait_for_selector("#run-button")
    page.click("#preset-dropdown input")
    page.get_by_role("option", name="tiny", exact=True).click()
    page.wait_for_function("document.querySelector('#cfg-model input, #cfg-model textarea').value === 'tiny/target'")
    page.click("#run-button")
    page.wait_for_selector("#run-progress .bench-progress:not(.idle)")
    page.wait_for_selector("#run-progress .bench-progress.done, #run-progress .bench-progress.failed, "
                           "#run-progress .bench-progress.stopped", timeout=RUN_TIMEOUT_MS)
    assert page.query_selector("#run-progress .bench-progress.done"), page.inner_text("#run-progress")
    expected = total_rows(Config.from_dict(read_json(preset_path("tiny"))))
    # The table is virtual (rows outside the viewport are not in the DOM): count via aria-rowcount, header included.
    page.wait_for_selector(f"#results-table [role=grid][aria-rowcount='{expected + 1}']")
    page.wait_for_selector("#chart-live .js-plotly-plot .bars")
    page.mouse.move(0, 0)  # no hover highlight on the Run button in the picture
    page.wait_for_timeout(500)  # the button's colour fades back after the run
    shots["run_page.png"] = out / "run_page.png"
    page.screenshot(path=shots["run_page.png"])

    open_tab(page, "Results")
    for name in ("tokens", "latency", "speedup"):
        page.wait_for_selector(f"#chart-{name} .js-plotly-plot .bars")
    page.wait_for_selector("#chart-batch .js-plotly-plot .scatterlayer .trace")
    for name in charts.FIGURES:  # every registered chart is laid out, the odd one out included
        page.wait_for_selector(f"#chart-{name} .js-plotly-plot .main-svg")
    page.wait_for_selector("#chart-tpot .js-plotly-plot .bars")
    shots["results_page.png"] = out / "results_page.png"
    page.screenshot(path=shots["results_page.png"], full_page=True)

    open_tab(page, "Samples")
    page.wait_for_selector("#samples-view .bench-card")
    shots["samples_page.png"] = out / "samples_page.png"
    page.screenshot(path=shots["samples_page.png"])

    run_id = archive.load_rows(results)["run_id"].iloc[-1]
    open_tab(page, "History")
    page.wait_for_function(f"document.querySelector('#history-table') && "
                           f"document.querySelector('#history-table').innerText.includes('{run_id}')")
    page.wait_for_selector("#history-chart-tokens .js-plotly-plot .bars")
    for name in charts.FIGURES:
        page.wait_for_selector(f"#history-chart-{name} .js-plotly-plot .main-svg")
    shots["history_page.png"] = out / "history_page.png"
    page.screenshot(path=shots["history_page.png"], full_page=True)
    return shots


def save_doc_shot(src: Path, dest: Path, max_bytes: int = 300_000) -> None:
    """Copy a screenshot into docs/, palette-compressed so the repository stays small."""
    from PIL import Image

    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)
    if dest.stat().st_size > max_bytes:
        shutil.copyfile(src, dest)
    assert dest.stat().st_size < max_bytes, f"{dest} is {dest.stat().st_size} bytes"


def test_new_user_runs_tiny_preset_and_finds_it_in_history(served, page, tmp_path):
    url, results = served
    shots = tour(page, url, results, tmp_path)
    assert all(p.stat().st_size > 10_000 for p in shots.values())
    rows = archive.load_rows(results)
    assert rows["run_id"].nunique() == 1 and (rows["status"] == "ok").all()
    if os.environ.get("BENCH_UPDATE_SCREENSHOTS") == "1":
        for name, dest in DOC_SHOTS.items():
            save_doc_shot(shots[name], ROOT / dest)


def test_form_shows_cli_errors_loads_and_downloads_json(served, page, tmp_path):
    url, results = served
    page.goto(url)
    page.wait_for_selector("#run-button")
    page.fill("#cfg-max-new-tokens input", "0")
    page.click("#run-button")
    page.wait_for_selector("#config-error:has-text('max_new_tokens')")
    # The CLI's words, with the key's label beside the key, since the form shows labels.
    assert "Max new tokens (max_new_tokens) must be an integer in 1..32768, got 0" in page.inner_text("#config-error")
    assert not results.exists()  # nothing ran
    page.fill("#cfg-max-new-tokens input", "")
    page.click("#run-button")
    page.wait_for_selector("#config-error:has-text('empty box')")
    assert "got null" not in page.inner_text("#config-error")

    with page.expect_file_chooser() as chooser:  # Load JSON config fills the form
        page.click("#config-upload")
    chooser.value.set_files(str(preset_path("tiny")))
    page.wait_for_function("document.querySelector('#cfg-model input, #cfg-model textarea').value === 'tiny/target'")
    assert page.input_value("#cfg-batch-sizes textarea, #cfg-batch-sizes input") == "1, 2, 6"

    # A file with a key Config does not know is refused whole: the form stays as it was, the error names the
    # file the user picked (not gradio's temporary copy) and the key it probably meant.
    typo = tmp_path / "my-config.json"
    typo.write_text(json.dumps({"model": "other/model", "max_new_token": 5}))
    with page.expect_file_chooser() as chooser:
        page.click("#config-upload")
    chooser.value.set_files(str(typo))
    page.wait_for_selector("#config-error:has-text('did you mean max_new_tokens?')")
    error = page.inner_text("#config-error")
    assert "my-config.json" in error and "/tmp/" not in error and "left as it was" in error
    assert page.input_value("#cfg-model input, #cfg-model textarea") == "tiny/target"

    page.click("#config-download-button")  # and Download hands the form back as a config file
    with page.expect_download() as download:
        page.click("#config-download a")
    saved = tmp_path / "config.json"
    download.value.save_as(saved)
    assert "results" not in read_json(saved)  # the server's own path is no business of the file's
    config = Config.from_dict(read_json(saved), check_models=False)
    assert config.model == "tiny/target" and config.batch_sizes == [1, 2, 6]
    assert [p.parent for p in (results.parent / "exports").glob("config-*.json")] == [results.parent / "exports"]


# ------------------------------------------------------------------------------------------------ regressions

def load_config(page: Page, path: Path) -> None:
    """Load JSON config: the form is filled from the file."""
    with page.expect_file_chooser() as chooser:
        page.click("#config-upload")
    chooser.value.set_files(str(path))
    page.wait_for_function("document.querySelector('#cfg-model input, #cfg-model textarea').value === 'tiny/target'")


def small_config(tmp_path: Path, name: str = "small.json", **overrides) -> Path:
    """The tiny preset with little work per row: a run of seconds."""
    path = tmp_path / name
    path.write_text(json.dumps(read_json(preset_path("tiny")) | dict(repetitions=1, max_new_tokens=8) | overrides))
    return path


def wait_finished(page: Page) -> str:
    page.wait_for_selector("#run-progress .bench-progress.done, #run-progress .bench-progress.failed, "
                           "#run-progress .bench-progress.stopped", timeout=RUN_TIMEOUT_MS)
    return page.inner_text("#run-progress")


CHART_WIDTHS = """names => names.map(name => {
    const plot = document.querySelector(`#chart-${name} .js-plotly-plot`);
    const svg = plot && plot.querySelector('.main-svg');
    return {name, card: plot ? plot.getBoundingClientRect().width : 0, svg: svg ? svg.getBoundingClientRect().width : 0};
})"""


def test_results_charts_fit_their_cards_after_a_run_made_on_another_tab(served, page, tmp_path):
    """Regression: Results opened before a run, the run made on the Run tab, then Results
    opened: the charts drawn while hidden were 700 px wide in 600 px cards, their right edge cut off."""
    url, results = served
    page.goto(url)
    page.wait_for_selector("#run-button")
    open_tab(page, "Results")  # mounts the plots, so the run redraws them while their tab is hidden
    page.wait_for_selector("#chart-tokens .js-plotly-plot .main-svg")
    open_tab(page, "Run")
    load_config(page, small_config(tmp_path))
    page.click("#run-button")
    assert "Done" in wait_finished(page)
    open_tab(page, "Results")
    page.wait_for_selector("#chart-tokens .js-plotly-plot .bars")
    names = list(charts.FIGURES)
    try:
        page.wait_for_function(f"names => ({CHART_WIDTHS})(names).every(w => w.card > 100 && Math.abs(w.svg - w.card) <= 1)",
                               arg=names, timeout=10_000)
    except Exception:
        pytest.fail(f"charts not the width of their cards: {page.evaluate(CHART_WIDTHS, names)}")


def test_stop_cancels_a_queued_run_and_nothing_is_written(served, tmp_path):
    """Regression: session B pressed Run while A's run held the benchmark, then Stop; B's
    queue indicator went away but its run started after A's and wrote its rows. Now it never starts."""
    url, results = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        a, b = browser.new_page(viewport=VIEWPORT), browser.new_page(viewport=VIEWPORT)
        for page in (a, b):
            page.goto(url)
            page.wait_for_selector("#run-button")
        load_config(a, small_config(tmp_path, "a.json", repetitions=3, max_new_tokens=32))
        load_config(b, small_config(tmp_path, "b.json", methods=["standard"]))
        a.click("#run-button")
        a.wait_for_selector("#run-progress .bench-progress.running")
        b.click("#run-button")
        b.wait_for_selector("#run-progress:has-text('Waiting for the benchmark queue')")
        assert a.query_selector("#run-progress .bench-progress.running"), "A finished before B could queue"
        b.click("#stop-button")
        b.wait_for_selector("#run-progress .bench-progress.stopped:has-text('Cancelled')")
        assert "nothing" in b.inner_text("#run-progress")
        b.wait_for_selector("#run-button:not([disabled])")  # B may press Run again at once
        assert "Done" in wait_finished(a)
        b.wait_for_timeout(3000)  # B's cancelled request left the queue after A's run; it never started
        assert "Cancelled" in b.inner_text("#run-progress")
        rows = archive.load_rows(results)
        assert rows["run_id"].nunique() == 1, rows[["run_id", "method"]]
        assert set(rows["method"]) != {"standard"}  # A's rows, not B's
        browser.close()


def test_history_keeps_every_fast_tick_in_the_runs_filter(served, page, tmp_path):
    """Regression: ticks about 250 ms apart in the Runs filter each reloaded the page and
    wrote the filter back, so the response to one tick undid the next."""
    from test_dashboard import synthetic_rows

    url, results = served
    results.parent.mkdir(parents=True, exist_ok=True)
    synthetic_rows(10_000).to_csv(results, index=False)  # big enough that a reload takes longer than a tick
    page.goto(url)
    open_tab(page, "History")
    page.wait_for_selector("#history-info:has-text('10,000')")
    page.click("#history-filter-run input")
    options = page.locator("[role=option]")
    picked = [options.nth(i).inner_text().strip().lstrip("✓").strip().split(" · ")[0] for i in range(3)]
    for i in range(3):
        options.nth(i).click()
        page.wait_for_timeout(250)
    page.wait_for_function("document.querySelector('#history-info').innerText.includes('Charts compare 3 run')",
                           timeout=20_000)
    page.wait_for_timeout(1500)  # any late answer has arrived
    chosen = page.evaluate("[...document.querySelectorAll('#history-filter-run .token')].map(e => e.innerText)")
    assert [c.split(" · ")[0].strip() for c in chosen] == picked
    assert "Charts compare 3 run" in page.inner_text("#history-info")
    legend = page.text_content("#history-chart-tokens .legend")
    assert all(run in legend for run in picked)


def test_history_names_hides_diffs_and_compares_against_a_baseline(served, page, tmp_path):
    """The lab notebook, through the page: rename and tag a run, pick a baseline, read the percent
    change and the settings diff, hide a run and show it again. The CSV is never rewritten."""
    from test_run_notebook import run_rows

    import pandas as pd

    url, results = served
    results.parent.mkdir(parents=True, exist_ok=True)
    rows = run_rows("run-a", 10.0) + run_rows("run-b", 12.0, device_name="AMD EPYC")
    pd.DataFrame(rows, columns=archive.COLUMNS).to_csv(results, index=False)
    before = results.read_bytes()
    page.goto(url)
    open_tab(page, "History")
    page.wait_for_selector("#history-info:has-text('4 of 4 rows')")

    page.click("#history-edit-section button, #history-edit-section .label-wrap")  # open the editor
    page.click("#history-edit-run input")
    page.get_by_role("option", name="run-a", exact=False).click()
    # Picking a run locks the editor until it is filled with the run's current values.
    page.wait_for_selector("#history-edit-note:has-text('Editing')")
    assert page.is_enabled("#history-edit-name textarea, #history-edit-name input")
    page.fill("#history-edit-name textarea, #history-edit-name input", "fp32 baseline")
    page.fill("#history-edit-tags textarea, #history-edit-tags input", "fp32, quiet")
    page.click("#history-edit-save")
    page.wait_for_selector("#history-edit-note:has-text('Saved')")

    page.click("#history-baseline input")
    page.get_by_role("option", name="fp32 baseline", exact=False).click()
    page.wait_for_selector("#history-change:has-text('+20.0%')", timeout=20_000)
    assert "run-b · AMD EPYC" in page.inner_text("#history-change")
    page.wait_for_selector("#history-diff:has-text('device_name')")
    assert "Intel Xeon" in page.inner_text("#history-diff") and "AMD EPYC" in page.inner_text("#history-diff")
    assert "fp32 baseline · Intel Xeon" in page.text_content("#history-chart-tokens .legend")
    if os.environ.get("BENCH_UPDATE_SCREENSHOTS") == "1":
        page.mouse.move(0, 0)  # the newest run and the baseline are compared: no pick needed
        page.wait_for_timeout(1500)
        page.screenshot(path=tmp_path / "history_page.png", full_page=True)
        save_doc_shot(tmp_path / "history_page.png", ROOT / NOTEBOOK_SHOT, max_bytes=400_000)

    page.check("#history-edit-hidden input")  # hide run-a: gone from the rows, kept on disk
    page.click("#history-edit-save")
    page.wait_for_selector("#history-info:has-text('1 hidden run')", timeout=20_000)
    assert "2 of 2 rows" in page.inner_text("#history-info")
    page.check("#history-show-hidden input")
    page.wait_for_selector("#history-info:has-text('4 of 4 rows')", timeout=20_000)
    assert results.read_bytes() == before  # renamed, tagged and hidden: the CSV is untouched
    meta = json.loads((results.parent / "runs_meta.json").read_text())["runs"]["run-a"]
    assert meta == {"name": "fp32 baseline", "tags": ["fp32", "quiet"], "notes": "", "hidden": True}

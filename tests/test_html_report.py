"""The standalone HTML report: `app.py --preset tiny --report PATH` writes one file that opens
in Chromium with no network and shows every chart of the Results page, the settings, the summary with
intervals and the texts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest
from playwright.sync_api import sync_playwright

from views import charts, report

from store import notebook, archive

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    results, path = folder / "runs.csv", folder / "out" / "report.html"
    env = {k: v for k, v in os.environ.items()} | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "app.py", "--preset", "tiny", "--repetitions", "1", "--max-new-tokens", "8",
                           "--results", str(results), "--report", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"report: {path}" in done.stdout
    return results, path


def test_cli_report_opens_offline_in_chromium_with_every_chart(tiny_report):
    results, path = tiny_report
    rows = archive.load_rows(results)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        requests, errors = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        for name in charts.FIGURES:
            page.wait_for_selector(f"#chart-{name}.js-plotly-plot .main-svg", timeout=30_000)
        page.wait_for_selector("#chart-tokens .bars .point")
        page.wait_for_selector("#chart-speedup .bars .point")
        assert page.evaluate("document.querySelectorAll('.js-plotly-plot').length") == len(charts.FIGURES)
        assert page.evaluate("document.querySelectorAll('script[src], link[href]').length") == 0  # all inside
        assert [u for u in requests if not u.startswith("file:")] == [] and errors == []
        text = page.inner_text("body")
        assert rows["run_id"].iloc[0] in text and "tiny/target" in text and "95% CI" in text
        assert "def find_python_files(root):" in text  # the prompts, with the texts beside them
        assert page.locator(".bench-card").count() >= len(rows)
        browser.close()


def test_report_of_two_runs_compares_them_and_escapes_what_users_wrote(tmp_path):
    from test_run_notebook import run_rows

    df = pd.DataFrame(run_rows("run-a", 10.0) + run_rows("run-b", 20.0, device_name="Other CPU",
                                                         run_name="<b>bold</b> name"), columns=archive.COLUMNS)
    out = report.write_report(tmp_path / "two.html", notebook.apply_meta(df, {}))
    html = out.read_text()
    assert "&lt;b&gt;bold&lt;/b&gt; name · Other CPU" in html and "<b>bold</b> name" not in html
    assert 'class="differs"' in html  # device_name differs between the runs and is highlighted
    assert html.count('class="chart"') == len(charts.FIGURES)

"""Runs belong to the server, not to a tab, in a real browser (Debian's Chromium, headless) on a busy machine:
Stop answers at once and keeps whole repetitions, a reload reattaches, a closed tab loses nothing, and the
report button is of the run on screen.

The machine is made busy by a CPU hog beside the test: a bounded busy loop in a process of its own at normal
priority, ended by its pid when the test ends.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from test_browser import (CHROMIUM, RUN_TIMEOUT_MS, VIEWPORT, load_config, open_tab, page, served, small_config,  # noqa: F401
                          wait_finished)

from bench.config import Config, read_json
from bench.runner import total_rows
from store import archive

HOG_S = 90  # bounded: the hog ends by itself even if the test dies


@contextmanager
def cpu_hog(seconds: float = HOG_S):
    """One core kept busy at normal priority for at most `seconds`."""
    hog = subprocess.Popen([sys.executable, "-c", f"import time\nend = time.time() + {seconds}\n"
                            "while time.time() < end:\n    pass\n"])
    try:
        yield hog
    finally:
        hog.kill()
        hog.wait()


def repetitions_done(page) -> int:
    """The run bar's "r of n repetitions" (summed over the run's rows), 0 before the first."""
    m = re.search(r"(\d+) of \d+ repetitions", page.inner_text("#run-progress"))
    return int(m.group(1)) if m else 0


def wait_repetitions(page, at_least: int, timeout_s: float = RUN_TIMEOUT_MS / 1000) -> None:
    deadline = time.time() + timeout_s
    while repetitions_done(page) < at_least:
        assert time.time() < deadline, page.inner_text("#run-progress")
        assert not page.query_selector("#run-progress .bench-progress.done"), "finished before the check"
        page.wait_for_timeout(100)


def test_stop_under_load_answers_at_once_and_keeps_whole_repetitions(served, page, tmp_path):
    url, results = served
    path = small_config(tmp_path, repetitions=3, max_new_tokens=48)
    expected = total_rows(Config.from_dict(read_json(path) | {"results": str(results)}))
    page.goto(url)
    page.wait_for_selector("#run-button")
    load_config(page, path)
    with cpu_hog():
        page.click("#run-button")
        wait_repetitions(page, expected)  # every row has one whole repetition
        clicked = time.perf_counter()
        page.click("#stop-button")
        page.wait_for_selector("#run-progress:has-text('Stopping')", timeout=10_000)
        answered = time.perf_counter() - clicked
        text = wait_finished(page)
        ended = time.perf_counter() - clicked
    print(f"Stop answered in {answered:.2f} s; the run ended {ended:.1f} s after Stop")
    assert answered < 2.0, f"Stop answered after {answered:.1f} s"
    assert "Stopped after" in text and "kept" in text, text
    rows = archive.load_rows(results)
    assert len(rows) == expected, rows[["method", "setting", "repetitions"]]
    assert (rows["repetitions"] >= 1).all() and (rows["repetitions"] < 3).all()
    for notes, reps in zip(rows["notes"], rows["repetitions"]):
        assert f"stopped after {reps} of 3 repetitions" in str(notes)
    # The run ended at the next step of the call in flight, not after the repetition or the run: a whole
    # repetition of every row took longer than this on the same busy machine.
    assert ended < 30, f"the run went on {ended:.0f} s after Stop"
    page.wait_for_selector("#run-button:not([disabled])")


def test_reload_mid_run_reattaches_and_the_run_keeps_every_row(served, page, tmp_path):
    url, results = served
    path = small_config(tmp_path, repetitions=2, max_new_tokens=24)
    expected = total_rows(Config.from_dict(read_json(path) | {"results": str(results)}))
    page.goto(url)
    page.wait_for_selector("#run-button")
    load_config(page, path)
    with cpu_hog():
        page.click("#run-button")
        page.wait_for_selector("#run-progress .bench-progress.running")
        page.reload()
        # The reloaded page finds its run again: the bar follows it and Run waits for it to end.
        page.wait_for_selector("#run-progress .bench-progress.running, #run-progress .bench-progress.done",
                               timeout=30_000)
        text = wait_finished(page)
    assert "Done" in text, text
    rows = archive.load_rows(results)
    assert len(rows) == expected and (rows["status"] == "ok").all() and rows["run_id"].nunique() == 1
    page.wait_for_selector(f"#results-table [role=grid][aria-rowcount='{expected + 1}']")
    page.reload()  # after the end, a reload shows the last finished run
    page.wait_for_selector("#run-progress .bench-progress.done")
    page.wait_for_selector(f"#results-table [role=grid][aria-rowcount='{expected + 1}']")


def test_closing_the_tab_mid_run_loses_nothing(served, tmp_path):
    url, results = served
    path = small_config(tmp_path, repetitions=2, max_new_tokens=16)
    expected = total_rows(Config.from_dict(read_json(path) | {"results": str(results)}))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(viewport=VIEWPORT)
        tab = context.new_page()
        tab.goto(url)
        tab.wait_for_selector("#run-button")
        load_config(tab, path)
        tab.click("#run-button")
        tab.wait_for_selector("#run-progress .bench-progress.running")
        tab.close()
        deadline = time.time() + RUN_TIMEOUT_MS / 1000
        while not (results.exists() and len(archive.load_rows(results)) == expected):
            assert time.time() < deadline, "the run never wrote its rows after its tab closed"
            time.sleep(0.5)
        rows = archive.load_rows(results)
        assert (rows["status"] == "ok").all() and rows["run_id"].nunique() == 1
        again = context.new_page()  # the same browser comes back: its finished run is on screen
        again.goto(url)
        again.wait_for_selector("#run-progress .bench-progress.done", timeout=30_000)
        browser.close()


def named_config(tmp_path: Path, name: str, **overrides) -> Path:
    """small_config with a run name (its `name` argument is the file's)."""
    path = small_config(tmp_path, f"{name.replace(' ', '-')}.json", **overrides)
    path.write_text(json.dumps(read_json(path) | {"name": name}))
    return path


def download_report(page, tmp_path: Path, name: str) -> str:
    page.click("#results-report")
    page.wait_for_selector("#results-report-file a")
    with page.expect_download() as download:
        page.click("#results-report-file a")
    saved = tmp_path / name
    download.value.save_as(saved)
    return saved.read_text()


def test_the_report_is_of_the_run_on_screen_while_another_runs(served, page, tmp_path):
    url, results = served
    page.goto(url)
    page.wait_for_selector("#run-button")
    load_config(page, named_config(tmp_path, "first run", methods=["standard"]))
    page.click("#run-button")
    assert "Done" in wait_finished(page)
    first = str(archive.load_rows(results)["run_id"].iloc[-1])
    # The second run has more repetitions than it can finish while the report is made, however busy the machine:
    # it is still going during the download, and is stopped once every row has a whole repetition to keep.
    second_config = named_config(tmp_path, "second run", repetitions=30, max_new_tokens=48)
    expected = total_rows(Config.from_dict(read_json(second_config) | {"results": str(results)}))
    load_config(page, second_config)
    page.click("#run-button")
    page.wait_for_selector("#run-progress .bench-progress.running")
    open_tab(page, "Results")
    page.wait_for_selector("#results-report:has-text('Download report of first run')")
    report = download_report(page, tmp_path, "first.html")
    assert not page.query_selector("#run-progress .bench-progress.done"), "the second run ended too soon"
    assert first in report and "second run" not in report
    open_tab(page, "Run")
    wait_repetitions(page, expected)
    page.click("#stop-button")
    assert "Stopped after" in wait_finished(page)
    open_tab(page, "Results")
    page.wait_for_selector("#results-report:has-text('Download report of second run')")
    second = str(archive.load_rows(results)["run_id"].iloc[-1])
    report = download_report(page, tmp_path, "second.html")
    assert second in report and first not in report

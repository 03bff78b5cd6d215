"""The page's layout and keyboard in a real browser (Debian's Chromium, headless), no run needed: the run bar
in reach at 800 px, presets that reset and say "(edited)", tabs from the keyboard, SLO targets on Enter."""
from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright

from test_browser import CHROMIUM, free_port, open_tab, served  # noqa: F401
from test_load_views import load_results  # noqa: F401

from bench.dashboard.app import build_app, launch_options


@pytest.fixture
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


def in_view(page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"]


def test_run_and_stop_stay_in_reach_at_800_px(served, browser):
    url, _ = served
    page = browser.new_page(viewport={"width": 800, "height": 900})
    page.goto(url)
    page.wait_for_selector("#run-button")
    assert in_view(page, "#run-button") and in_view(page, "#stop-button")  # without scrolling
    height = page.evaluate("document.documentElement.scrollHeight")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_timeout(300)
    assert in_view(page, "#run-button") and in_view(page, "#run-progress"), "the run bar scrolled away"
    # The advanced sections start collapsed: what most runs change is open, the rest a click away.
    assert page.is_visible("#cfg-max-new-tokens") and not page.is_visible("#cfg-target-ci")
    print(f"page height at 800 px: {height} px")


def test_repicking_a_preset_resets_the_form_and_an_edit_is_named(served, browser):
    url, _ = served
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#run-button")

    def pick(name):
        page.click("#preset-dropdown input")
        page.get_by_role("option", name=name).first.click()

    pick("tiny")
    page.wait_for_function("document.querySelector('#cfg-max-new-tokens input').value === '32'")
    page.fill("#cfg-max-new-tokens input", "5")
    page.locator("#cfg-max-new-tokens input").dispatch_event("input")
    page.wait_for_function("document.querySelector('#preset-dropdown input').value === 'tiny (edited)'")
    pick("tiny (edited)")  # the same preset again: back to it
    page.wait_for_function("document.querySelector('#cfg-max-new-tokens input').value === '32'")
    page.wait_for_function("document.querySelector('#preset-dropdown input').value === 'tiny'")


def test_tabs_follow_the_arrow_keys_and_enter(served, browser):
    url, _ = served
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#run-button")
    page.get_by_role("tab", name="Run", exact=True).focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    page.wait_for_selector("[role=tab][aria-selected=true]:has-text('Results')")


def test_a_typed_slo_target_applies_on_enter(load_results, browser):  # noqa: F811
    path, _ = load_results
    demo = build_app(path)
    demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **launch_options(demo))
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(demo.local_url)
        page.wait_for_selector("#run-button")
        open_tab(page, "SLO explorer")
        page.wait_for_selector("#slo-table:has-text('continuous')", timeout=30_000)
        before = page.inner_text("#slo-table")
        box = page.locator("#slo-ttft input[type=number]")
        box.fill("55")
        box.press("Enter")  # no blur, no click elsewhere
        page.wait_for_function(f"document.querySelector('#slo-table').innerText !== {before!r}", timeout=15_000)
        assert page.locator("#slo-ttft input[type=number]").input_value() == "55"
    finally:
        demo.close()

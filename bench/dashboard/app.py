"""The dashboard as one gradio app: the four pages in tabs, the queue, the one-run lock, and serving it."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import gradio as gr

from bench.config import Config, ConfigError, default_of
from bench.dashboard.context import Context
from bench.dashboard.form import check
from bench.dashboard.history_page import HistoryPage
from bench.dashboard.results_page import ResultsPage
from bench.dashboard.run_page import RunPage
from bench.dashboard.samples_page import SamplesPage
from decoding import METHODS

# One benchmark per process: the queue (concurrency_id "gpu", limit 1) serialises the UI, this lock
# serialises the code behind it, in case two apps share the process or a queue setting changes.
RUN_LOCK = threading.Lock()
CSS = Path(__file__).with_name("style.css").read_text()
THEME = gr.themes.Soft(primary_hue="blue", neutral_hue="slate")


def intro() -> str:
    names = [name.replace("_", " ") for name in METHODS]
    listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
    return f"# Decoding benchmark\nCompare {listed} decoding on speed, latency and memory."


def build_app(results_path: str | Path = "results/runs.csv", initial: dict | None = None) -> gr.Blocks:
    """The dashboard as a Blocks app (queued, API closed) writing rows to results_path.

    initial: config keys to prefill the form with (e.g. from CLI flags). Launch it with `serve()`,
    or with `.launch(**launch_options(app))` to keep its look and download folder.
    """
    ctx = Context(Path(results_path).resolve(), RUN_LOCK)
    with gr.Blocks(title="Decoding benchmark", analytics_enabled=False) as demo:
        gr.Markdown(intro(), elem_id="bench-title")
        with gr.Tabs(elem_id="tabs"):
            run = RunPage(ctx, dict(initial or {}))
            results = ResultsPage()
            samples = SamplesPage(ctx)
            history = HistoryPage(ctx)
        # Wired after every page exists: a run streams into Results, and Samples follows the Run page's run.
        run.wire(results)
        samples.wire(run.run_state)
        history.wire()
    demo.bench_results_path = ctx.results_path
    demo.queue(api_open=False)  # API clients go through the queue too, so nothing skips the one-run rule
    return demo


def launch_options(demo: gr.Blocks) -> dict:
    """launch() arguments every launch of the dashboard needs: look, and the one folder it may serve."""
    exports = Path(demo.bench_results_path).parent / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    return dict(theme=THEME, css=CSS, allowed_paths=[str(exports)])


def serve(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          auth: tuple[str, str] | None = None, **kwargs):
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth, **launch_options(demo), **kwargs)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """--auth USER:PASSWORD, else env BENCH_AUTH; raises ConfigError with one line when malformed."""
    source = "--auth" if text else "BENCH_AUTH"
    text = text or os.environ.get("BENCH_AUTH")
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError(f"{source} must be USER:PASSWORD with both parts non-empty")
    return user, password


def launch(initial: dict, results: str | None, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           auth: str | None = None) -> int:
    """`python app.py` without --preset/--config: serve until Ctrl-C. initial: config keys from the CLI's
    flags to prefill the form; auth: the raw --auth text. Startup errors print one line on stderr, return 2."""
    initial = dict(initial or {})
    results = results or initial.pop("results", None) or default_of(Config.__dataclass_fields__["results"])
    initial.pop("results", None)  # the app's results file is fixed; the form shows it, never edits it
    try:
        login = parse_auth(auth)
        if share and login is None:
            raise ConfigError("--share makes the dashboard public and anyone with the link could run jobs: "
                              "add --auth USER:PASSWORD (or set BENCH_AUTH=USER:PASSWORD)")
        if initial and (message := check(initial | {"results": results})):
            raise ConfigError(message)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo = build_app(results, initial=initial)
    try:
        # quiet: gradio's own hints name launch() arguments, not our flags; it still prints the share link.
        serve(demo, host=host, port=port, share=share, auth=login, prevent_thread_lock=True, quiet=True)
    except OSError as e:  # port taken, address not available: one line, like every other startup error
        print(f"error: cannot serve on {host}:{port}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"dashboard on {demo.local_url} (rows go to {results}; Ctrl-C stops it)")
    if share and not demo.share_url:
        print("warning: no public link could be made (see above); serving on the local address only", file=sys.stderr)
    demo.block_thread()  # until Ctrl-C
    return 0

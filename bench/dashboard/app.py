"""The dashboard as one gradio app: the four pages in tabs, the queue, the one-run lock, and serving it."""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from bench.config import Config, ConfigError, default_of
from bench.dashboard.access import LoginRequired, LoginThrottle, allow_list, read_login
from bench.dashboard.form import check
from bench.dashboard.history_page import HistoryPage
from bench.dashboard.results_page import ResultsPage
from bench.dashboard.run_page import RunPage
from bench.dashboard.samples_page import SamplesPage
from bench.dashboard.shared import AppContext
from bench.dashboard.slo_page import SloPage
from decoding import METHODS

# One benchmark per process: each app's RunBoard measures its runs one at a time, on its own thread, under
# this lock, in case two apps share the process.
RUN_LOCK = threading.Lock()
CSS = Path(__file__).with_name("style.css").read_text()
# The page's scripts, each a function run once on load: figures drawn in a hidden tab fit their card when
# shown (resize.js); tabs and typed SLO targets work from the keyboard (keys.js).
JS = "() => {\n" + "".join(f"({Path(__file__).with_name(name).read_text().strip()})();\n"
                           for name in ("resize.js", "keys.js")) + "}"
THEME = gr.themes.Soft(primary_hue="blue", neutral_hue="slate")


def intro() -> str:
    names = [name.replace("_", " ") for name in METHODS]
    listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
    return f"# Decoding benchmark\nCompare {listed} decoding on speed, latency and memory."


def build_app(results_path: str | Path = "results/runs.csv", initial: dict | None = None,
              allowed_models: frozenset[str] | None = None) -> gr.Blocks:
    """The dashboard as a Blocks app (queued, API closed) writing rows to results_path.

    initial: config keys to prefill the form with (e.g. from CLI flags). allowed_models: the only models a
    run may load (a shared dashboard), None for any. Launch it with `serve()`,
    or with `.launch(**launch_options(app))` to keep its look and download folder.
    """
    ctx = AppContext(Path(results_path).resolve(), RUN_LOCK, allowed_models=allowed_models)
    with gr.Blocks(title="Decoding benchmark", analytics_enabled=False) as demo:
        gr.Markdown(intro(), elem_id="bench-title")
        with gr.Tabs(elem_id="tabs"):
            run = RunPage(ctx, dict(initial or {}))
            results = ResultsPage(ctx)
            samples = SamplesPage(ctx)
            history = HistoryPage(ctx)
            SloPage(ctx)  # wires its own events: it reads only the results file and requests.jsonl
        # Wired after every page exists: a run streams into Results, and Samples follows the Run page's run.
        run.wire(results, demo)
        results.wire()
        samples.wire(run.run_state)
        history.wire()
    demo.bench_results_path = ctx.results_path
    demo.queue(api_open=False)  # API clients go through the queue too, so nothing skips the one-run rule
    return demo


def launch_options(demo: gr.Blocks) -> dict:
    """launch() arguments every launch of the dashboard needs: look, and the one folder it may serve."""
    exports = Path(demo.bench_results_path).parent / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    return dict(theme=THEME, css=CSS, js=JS, allowed_paths=[str(exports)])


@contextmanager
def no_forwarded_for():
    """While uvicorn's Config is made (inside launch), trust X-Forwarded-For from no address.

    By default uvicorn takes the client's address from X-Forwarded-For when the connection comes from
    127.0.0.1, which is where gradio's share tunnel connects from: every remote user could then name their
    own address and start the login throttle afresh. Gradio passes no uvicorn options, and uvicorn reads
    FORWARDED_ALLOW_IPS once, when its Config is made; an empty list trusts nobody."""
    before = os.environ.get("FORWARDED_ALLOW_IPS")
    os.environ["FORWARDED_ALLOW_IPS"] = ""
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FORWARDED_ALLOW_IPS", None)
        else:
            os.environ["FORWARDED_ALLOW_IPS"] = before


def serve(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          auth: tuple[str, str] | None = None, **kwargs):
    # With a login, both wrap the whole server, so they see every request and each login's answer before
    # gradio does: the door first (nothing but the login page without a session), then the login throttle.
    door = {"middleware": [Middleware(LoginRequired), Middleware(LoginThrottle)]} if auth else {}
    with no_forwarded_for():
        return demo.launch(server_name=host, server_port=port, share=share, auth=auth, app_kwargs=door,
                           **launch_options(demo), **kwargs)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """--auth USER:PASSWORD, else env BENCH_AUTH; raises ConfigError with one line when malformed."""
    return read_login(text, None)[0]


def launch(initial: dict, results: str | None, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           auth: str | None = None, auth_file: str | None = None, allow_models: list[str] | None = None) -> int:
    """`python app.py` without --preset/--config: serve until Ctrl-C. initial: config keys from the CLI's
    flags to prefill the form; auth: the raw --auth text; auth_file: a file holding USER:PASSWORD;
    allow_models: models remote users may run besides the presets' (with share). Startup errors print one
    line on stderr and return 2."""
    initial = dict(initial or {})
    results = results or initial.pop("results", None) or default_of(Config.__dataclass_fields__["results"])
    initial.pop("results", None)  # the app's results file is fixed; the form shows it, never edits it
    try:
        login, warning = read_login(auth, auth_file)
        if share and login is None:
            raise ConfigError("--share makes the dashboard public and anyone with the link could run jobs: "
                              "set BENCH_AUTH=USER:PASSWORD or --auth-file FILE (or --auth USER:PASSWORD)")
        if warning:
            print(warning, file=sys.stderr)
        if initial and (message := check(initial | {"results": results})):
            raise ConfigError(message)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo = build_app(results, initial=initial, allowed_models=allow_list(allow_models) if share else None)
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

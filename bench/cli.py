"""Command line: `python app.py --preset tiny` runs headless; `python app.py` starts the dashboard.

Every config key is a flag (`max_new_tokens` -> `--max-new-tokens`), made from the key's own help,
kind and limits (bench/config.py, and the `options` of methods, engines and scenarios): adding a key adds
its flag. Only `--preset`, `--config` and the dashboard's serving flags are written here.
"""
from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys
import threading
from dataclasses import fields

from bench.config import Config, ConfigError, default_of, field_help, preset_names, preset_path, read_json


def flag_of(f) -> str:
    return "--" + (f.metadata.get("flag") or f.name).replace("_", "-")


def add_config_flags(p: argparse.ArgumentParser) -> None:
    for f in fields(Config):
        kind, help_text = f.metadata["type"], f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        dest = "cfg_" + f.name
        if kind.element == "bool" and not kind.listed:
            p.add_argument(flag_of(f), dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name == "prompts":  # prompts hold commas, so each --prompt is one prompt
            p.add_argument(flag_of(f), dest=dest, action="append", metavar="TEXT",
                           help="a prompt (repeat for several); replaces the preset's")
        else:
            p.add_argument(flag_of(f), dest=dest, metavar="A,B" if kind.listed else "VALUE",
                           help=help_text + (" (comma-separated)" if kind.listed else ""))


def convert(f, text: str):
    """A flag's text as the config value (decoding/options.py); Config checks kinds and limits afterwards."""
    return f.metadata["type"].from_text(f.name, text, flag_of(f))


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line naming it and the nearest real flag, not the whole usage; and no
    abbreviations: `--max-new-token` is refused with a suggestion instead of silently read as another flag."""

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str):
        flags = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        unknown = [w.split("=")[0] for w in message.split() if w.startswith("--")] \
            if message.startswith("unrecognized arguments") else []
        hints = [f"{w}: did you mean {close[0]}?" for w in unknown
                 if (close := difflib.get_close_matches(w, flags, n=1, cutoff=0.6))]
        hint = f" ({'; '.join(hints)})" if hints else ""
        self.exit(2, f"error: {message}{hint}; see python app.py --help\n")


def parser() -> argparse.ArgumentParser:
    keys = "\n".join(f"  {k:<26} {h} ({allowed}; default {default_of(Config.__dataclass_fields__[k])!r})"
                     for k, (h, allowed) in field_help().items())
    p = OneLineParser(
        prog="app.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare LLM decoding methods on speed, latency and memory. With --preset or --config: "
                    "a headless run; without: the dashboard. Every config key below is also a flag "
                    "(max_new_tokens -> --max-new-tokens, lists comma-separated).",
        epilog=f"presets: {', '.join(preset_names())}\n\nconfig keys (presets and --config files use these):\n{keys}")
    p.add_argument("--preset", help="run a preset from presets/ headless")
    p.add_argument("--config", help="run a JSON config file headless (same keys as a preset)")
    p.add_argument("--check", action="store_true",
                   help="check this machine for the chosen preset or config (GPU, transformers, bitsandbytes, "
                        "flash-attn, NVML, compiling, models, disk, servers): one line per item; exit 1 if something "
                        "it needs is missing")
    p.add_argument("--report", metavar="PATH.html",
                   help="after a headless run, write one self-contained HTML report of it (opens offline)")
    add_config_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="dashboard host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="dashboard port (default 7860)")
    p.add_argument("--share", action="store_true", help="dashboard: public share link (needs --auth)")
    p.add_argument("--auth", help="dashboard login USER:PASSWORD (visible in ps: prefer env BENCH_AUTH or --auth-file)")
    p.add_argument("--auth-file", help="dashboard login: a file holding USER:PASSWORD")
    p.add_argument("--allow-model", action="append", metavar="ID",
                   help="with --share: a model remote users may run besides the presets' (repeatable)")
    return p


def config_dict(args) -> dict:
    """Preset, then --config file, then flags: later sources override single keys."""
    data: dict = {}
    if args.preset:
        data.update(read_json(preset_path(args.preset)))
    if args.config:
        data.update(read_json(args.config))
    for f in fields(Config):
        value = getattr(args, "cfg_" + f.name)
        if value is not None:
            data[f.name] = value if isinstance(value, (bool, list)) else convert(f, value)
    return data


def headless(config: Config, report: str | None = None) -> int:
    from tqdm import tqdm

    from bench.runner import Progress, RowDone, Stopped, run, total_rows
    from store.files import StoreError
    from views.table import table

    rows = []
    bar = tqdm(total=total_rows(config), unit="row", file=sys.stderr, dynamic_ncols=True)
    stop = threading.Event()
    # SIGTERM too: a job scheduler or `timeout` asks politely first, and what was measured should survive that.
    main_thread = threading.current_thread() is threading.main_thread()  # signals can only be caught there
    previous = {sig: signal.signal(sig, ctrl_c(stop, bar)) for sig in (signal.SIGINT, signal.SIGTERM)} \
        if main_thread else {}
    try:
        for event in run(config, stop):
            if isinstance(event, Progress):
                bar.set_description(event.message[:70])
            elif isinstance(event, RowDone):
                rows.append(event.row)
                bar.update(1)
    except Stopped:  # the runner has kept every row's whole repetitions, then stopped
        pass
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: {len(rows)} finished rows kept in {config.results}", file=sys.stderr)
        return 130
    except StoreError as e:  # the rows still to come could not be stored either: stop, keep what is there
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 3
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    bar.close()
    if stop.is_set():
        print(f"stopped: {len(rows)} rows with their whole repetitions kept in {config.results}", file=sys.stderr)
    print(table(rows))
    if rows:
        from views.verdict import verdict

        print("\n" + verdict(rows).text())
    print(f"\n{len(rows)} rows appended to {config.results}; texts in "
          f"{os.path.join(os.path.dirname(config.results) or '.', 'outputs.jsonl')}")
    if report and rows:
        from views.report import run_report

        try:
            print(f"report: {run_report(config.results, [rows[0]['run_id']], report)}")
        except OSError as e:
            print(f"error: cannot write the report to {report}: {e.strerror or e}", file=sys.stderr)
            return 3
    if stop.is_set():
        return 130
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def ctrl_c(stop: threading.Event, bar):
    """The first Ctrl-C stops like the dashboard's Stop: the call in flight ends at its next step, and every row
    keeps its whole repetitions (what an hour of measuring got is not thrown away). A second one aborts."""
    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        bar.write("stopping: keeping every row's whole repetitions (Ctrl-C again to abort at once)", file=sys.stderr)
    return handler


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        data = config_dict(args)
        if args.check:
            from bench.check import main as check

            return check(Config.from_dict(data, check_models=False))
        if not args.preset and not args.config:
            from bench.dashboard.app import launch

            return launch(data, results=data.pop("results", None), host=args.host, port=args.port,
                          share=args.share, auth=args.auth, auth_file=args.auth_file, allow_models=args.allow_model)
        config = Config.from_dict(data)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return headless(config, args.report)

"""Dashboard: the generated form, the run endpoint through gradio's queue (streaming, one run at a time,
stop), History at 10,000 rows, the figures, and the --share refusal. CPU only, offline, tiny models."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import pandas as pd
import pytest
import torch
from gradio_client import Client

from views import charts

from bench.dashboard.app import build_app, launch, launch_options, parse_auth
from bench.dashboard.chart_grid import grid_rows
from bench.dashboard.form import check, config_fields, form_dict, form_values, form_words, from_form
from bench.dashboard.history import HISTORY_TABLE_ROWS, history_view, load_history
from bench.dashboard.history_page import history_updates
from bench.dashboard.html import error_md, errors_md
from bench.dashboard.run_page import results_table
import bench.dashboard.history

from store import archive
from bench.config import Config, ConfigError, preset_names, preset_path, read_json
from bench.runner import total_rows
from decoding import METHODS

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 300  # a shared CI machine can be slow; the tiny runs themselves take seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny(**overrides) -> dict:
    """The tiny preset's models and methods, with less work per row to keep the suite quick."""
    return read_json(preset_path("tiny")) | dict(repetitions=1, max_new_tokens=8) | overrides


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    results = tmp_path_factory.mktemp("dash") / "results" / "runs.csv"
    demo = build_app(results)
    demo.queue(api_open=False).launch(prevent_thread_lock=True, server_port=free_port(), quiet=True,
                                      **launch_options(demo))
    yield demo, results
    demo.close()


def new_rows(results: Path, before: int) -> pd.DataFrame:
    return archive.load_rows(results).iloc[before:].reset_index(drop=True)


def row_count(results: Path) -> int:
    return len(archive.load_rows(results))


def table_of(output: tuple) -> dict | None:
    """The results table in one streamed update of the run endpoint (None when that update skips it)."""
    for value in output:
        if isinstance(value, dict) and "headers" in value and "method" in value["headers"]:
            return value
    return None


def texts_of(output: tuple) -> str:
    return " ".join(v for v in output if isinstance(v, str))


def finish(job, timeout: float = RUN_TIMEOUT_S) -> list[tuple]:
    deadline = time.time() + timeout
    while not job.done():
        assert time.time() < deadline, "run did not finish in time"
        time.sleep(0.1)
    return job.outputs()


# ------------------------------------------------------------------------------------------ form

def test_form_has_a_component_for_every_config_field():
    demo = build_app("/tmp/unused-results/runs.csv")
    elem_ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    for name in Config.__dataclass_fields__:
        assert "cfg-" + name.replace("_", "-") in elem_ids, f"config key {name} has no form field"
    for elem_id in ("run-button", "stop-button", "preset-dropdown", "results-table", "run-progress", "config-error",
                    "chart-live", *(f"chart-{n}" for n in charts.FIGURES), "history-tab", "history-table",
                    "history-export", "samples-view", "config-upload", "config-download-button"):
        assert elem_id in elem_ids


def plot_rows(demo, prefix: str) -> list[list[str]]:
    """The chart names of each row of the grid whose elem_ids start with prefix, top to bottom."""
    rows = []
    for block in demo.blocks.values():
        elem_id = getattr(block, "elem_id", None) or ""
        if elem_id.startswith(prefix) and elem_id != "chart-live":
            names = [c.elem_id.removeprefix(prefix) for c in block.parent.children]
            if names not in rows:
                rows.append(names)
    return rows


@pytest.mark.parametrize("count", [1, 5, 7, 8])
def test_chart_grid_lays_out_every_registered_figure(monkeypatch, count):
    """Regression: the grid was zip(names[::2], names[1::2]), which dropped the last of an odd count."""
    registry = {f"fig{i}": charts.tokens_per_s for i in range(count)}
    monkeypatch.setattr(charts, "FIGURES", registry)
    demo = build_app("/tmp/unused-results/runs.csv")
    expected = grid_rows(list(registry))
    assert [len(r) for r in expected] == [2] * (count // 2) + [1] * (count % 2)
    for prefix in ("chart-", "history-chart-"):  # Results and History
        assert plot_rows(demo, prefix) == expected
    page = history_updates(Path("/tmp/unused-results/runs.csv"), [], {})
    assert [k for k in page if k.startswith("chart:")] == [f"chart:{name}" for name in registry]


def test_results_and_history_show_the_registry_with_the_tpot_chart():
    demo = build_app("/tmp/unused-results/runs.csv")
    assert "tpot" in charts.FIGURES
    expected = [row for _, names in charts.sections(list(charts.FIGURES)) for row in grid_rows(names)]
    assert [n for row in expected for n in row] == list(charts.FIGURES)
    assert any(len(row) == 1 for row in expected)  # a section's odd one out, alone on its row
    for prefix in ("chart-", "history-chart-"):
        assert plot_rows(demo, prefix) == expected
    headings = [getattr(b, "value", "") for b in demo.blocks.values() if "bench-section" in (getattr(b, "elem_classes", None) or [])]
    assert headings == [f"#### {h}" for h in charts.SECTION_STARTS.values()] * 2  # Results, then History


def test_initial_settings_prefill_the_form():
    demo = build_app("/tmp/unused-results/runs.csv", initial={"max_new_tokens": 7, "model": "tiny/target"})
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert by_id["cfg-max-new-tokens"].value == 7 and by_id["cfg-model"].value == "tiny/target"
    assert by_id["cfg-results"].value == "/tmp/unused-results/runs.csv"


@pytest.mark.parametrize("name", preset_names())
def test_presets_survive_the_form_unchanged(name):
    """preset -> form values -> dict -> Config is the same Config the CLI builds from the preset."""
    data = read_json(preset_path(name)) | {"results": "x/runs.csv"}
    through_form = form_dict(form_values(data, "x/runs.csv"))
    assert Config.from_dict(through_form, check_models=False) == Config.from_dict(data, check_models=False)


@pytest.mark.parametrize("prompts", [
    ["Hello", "Write a poem"],                                   # one per line, as typed
    ["def f(x):\n    return x\n", "# a comment\nimport os"],   # code keeps its newlines and indentation
    ["    leading spaces\n\n\nand blank lines"],                  # a lone multi-line prompt
])
def test_prompts_round_trip_through_the_textbox(prompts):
    from bench.dashboard.form import join_texts, split_texts
    assert split_texts(join_texts(prompts)) == prompts


def test_typed_prompts_split_on_lines_or_on_separator_lines():
    from bench.dashboard.form import split_texts
    assert split_texts(" a \n\n b\r\n") == ["a", "b"]
    assert split_texts("def f():\n    pass\n---\nx = 1\n---\n") == ["def f():\n    pass", "x = 1"]


def test_run_table_of_a_load_run_has_the_cli_load_columns():
    load = {"method": "standard", "setting": "rate=4", "engine": "continuous", "status": "ok", "request_rate": 4.0,
            "requests": 40, "failed_requests": 0, "request_throughput": 3.9, "ttft_ms_median": 12.345,
            "tpot_ms_median": 4.5, "goodput": 3.9}
    table = results_table([load])
    assert list(table.columns[:4]) == ["method", "setting", "engine", "status"]
    assert table["TTFT ms"][0] == 12.3 and table["req/s"][0] == 3.9 and "tok/s/seq 95% CI" not in table
    per_call = results_table([{"method": "standard", "setting": "greedy", "status": "ok"}])
    assert "tok/s/seq 95% CI" in per_call and "req/s" not in per_call


def test_form_errors_are_the_cli_words():
    fields = {f.name: f for f in config_fields()}
    data = form_dict(form_values(tiny(), "x/runs.csv"))
    for key, shown in (("max_new_tokens", 0), ("batch_sizes", "1, two"), ("top_p", 1.5), ("methods", [])):
        bad = data | {key: from_form(fields[key], shown)}
        with pytest.raises(ConfigError) as cli:
            Config.from_dict(bad, check_models=False)
        assert check(bad) == str(cli.value)
        assert str(cli.value) in error_md(check(bad))


# ------------------------------------------------------------------------------------------ runs

def test_run_streams_updates_and_keeps_every_row(app):
    demo, results = app
    before = row_count(results)
    config = tiny()
    job = Client(demo.local_url, verbose=False).submit(json.dumps(config), api_name="/run")
    outputs = finish(job)
    tables = [t for t in map(table_of, outputs) if t is not None]
    sizes = [len(t["data"]) for t in tables]
    assert len(set(sizes)) > 2, f"table did not grow while running: {sizes}"  # streamed, not one final answer
    expected = total_rows(Config.from_dict(config))
    final = tables[-1]
    methods = [row[final["headers"].index("method")] for row in final["data"]]
    assert len(final["data"]) == expected
    assert set(methods) == set(config["methods"])
    assert "Done: " in texts_of(outputs[-1])
    rows = new_rows(results, before)
    assert len(rows) == expected and rows["run_id"].nunique() == 1
    assert list(rows["method"]) == methods and (rows["status"] == "ok").all()
    assert len(archive.load_outputs(results)) > 0


def test_two_runs_at_once_queue_one_after_the_other(app):
    """Runs belong to the server's board, which measures one at a time: the second waits (and says so) while
    the first runs, and their rows are never interleaved."""
    demo, results = app
    before = row_count(results)
    config = tiny(methods=["standard", "batched"], batch_sizes=[1, 2])
    first = Client(demo.local_url, verbose=False).submit(json.dumps(config), api_name="/run")
    time.sleep(0.3)
    second = Client(demo.local_url, verbose=False).submit(json.dumps(config), api_name="/run")
    finish(first)
    waited = [o for o in finish(second) if "Waiting for the benchmark queue" in texts_of(o)]
    assert waited and "1 run ahead" in texts_of(waited[0]), "the second run never waited for the first"
    rows = new_rows(results, before)
    per_run = total_rows(Config.from_dict(config))
    assert len(rows) == 2 * per_run
    run_ids = list(rows["run_id"])
    # Not interleaved: all rows of one run, then all rows of the other.
    assert run_ids[:per_run] == [run_ids[0]] * per_run and run_ids[per_run:] == [run_ids[-1]] * per_run
    assert run_ids[0] != run_ids[-1]
    assert rows["timestamp"].iloc[per_run - 1] <= rows["timestamp"].iloc[per_run]


def test_stop_ends_the_run_and_keeps_whole_repetitions(app):
    """Stop mid-run (through the API, as the form's button does): the run ends at the next step, and every
    row keeps its whole repetitions with a note saying how far it got, as Ctrl-C does in the CLI."""
    demo, results = app
    before = row_count(results)
    config = tiny(repetitions=3, max_new_tokens=32)
    client = Client(demo.local_url, verbose=False)  # Stop acts on the runs of its own session
    job = client.submit(json.dumps(config), api_name="/run")
    deadline, rows_of_run = time.time() + RUN_TIMEOUT_S, total_rows(Config.from_dict(config))

    def every_row_has_a_repetition() -> bool:  # "r of n repetitions", summed over the run's rows
        done = [int(m.group(1)) for o in job.outputs() for m in re.finditer(r"(\d+) of \d+ repetitions", texts_of(o))]
        return bool(done) and max(done) >= rows_of_run

    while not every_row_has_a_repetition():
        assert time.time() < deadline and not job.done(), [texts_of(o)[:300] for o in job.outputs()[-3:]]
        time.sleep(0.05)
    assert "stopping 1 run" in client.predict(api_name="/stop")
    outputs = finish(job)
    assert "Stopped after" in texts_of(outputs[-1])
    rows = new_rows(results, before)
    shown = len(table_of(outputs[-1])["data"])
    assert len(rows) == shown == rows_of_run
    assert (rows["repetitions"] < 3).all() and (rows["repetitions"] >= 1).all()
    for notes, reps in zip(rows["notes"], rows["repetitions"]):
        assert f"stopped after {reps} of 3 repetitions" in str(notes)


def test_invalid_config_shows_the_config_error_and_runs_nothing(app):
    demo, results = app
    before = row_count(results)
    config = tiny(max_new_tokens=0)
    with pytest.raises(ConfigError) as cli:
        Config.from_dict(config)
    outputs = Client(demo.local_url, verbose=False).predict(json.dumps(config), api_name="/run")
    assert form_words(str(cli.value)) in texts_of(outputs)  # the CLI's words, with the form's label
    assert row_count(results) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_refused_up_front_and_the_app_stays_usable(app):
    """Once, device cuda passed the form check, then failed every row, which stayed in History for good."""
    demo, results = app
    before = row_count(results)
    client = Client(demo.local_url, verbose=False)
    config = tiny(methods=["standard"], device="cuda")
    assert "config key 'device'" in check(config) and "'cpu'" in check(config)
    outputs = client.predict(json.dumps(config), api_name="/run")
    text = texts_of(outputs)
    assert "Device (device): 'cuda' asked for" in text and "Not started" in text
    assert row_count(results) == before  # nothing measured, nothing written
    outputs = client.predict(json.dumps(tiny(methods=["standard"])), api_name="/run")  # still usable
    assert "Done: 1 row in" in texts_of(outputs)


def test_all_rows_failed_is_worded_as_such():
    rows = figure_rows().to_dict("records")
    only_failed = [r for r in rows if r["status"] != "ok"]
    text = errors_md(only_failed)
    assert "The row failed" in text and "fine" not in text
    text = errors_md(only_failed * 3)
    assert "All 3 rows failed" in text and "fine" not in text
    assert "1 of 4 rows failed" in errors_md(rows) and "fine and kept" in errors_md(rows)


def test_api_cannot_skip_the_queue_and_only_exports_are_served(app):
    demo, results = app
    base = demo.local_url.rstrip("/")
    request = urllib.request.Request(f"{base}/gradio_api/run/run", data=json.dumps({"data": ["{}"]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:  # REST route closed: clients must queue
        urllib.request.urlopen(request, timeout=10)
    assert "join the queue" in refused.value.read().decode()
    exports = results.parent / "exports"
    assert launch_options(demo)["allowed_paths"] == [str(exports)]
    secret = results.parent / "secret.txt"
    secret.write_text("not for download")
    (exports / "ok.csv").write_text("a\n1\n")
    assert urllib.request.urlopen(f"{base}/gradio_api/file={exports / 'ok.csv'}", timeout=10).status == 200
    for path in (secret, Path("/etc/passwd"), ROOT / "app.py"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/gradio_api/file={path}", timeout=10)
        assert refused.value.code == 403


# ------------------------------------------------------------------------------------------ history

def synthetic_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """n rows with every store column, 10 rows per run, like a long history of benchmark runs."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({c: [""] * n for c in archive.COLUMNS})
    df["run_id"] = [f"2026{seed:02d}-run-{i // 10:05d}" for i in range(n)]
    df["timestamp"] = [f"2026-01-{1 + i // 4000:02d}T{(i // 600) % 24:02d}:{(i // 10) % 60:02d}:00+00:00" for i in range(n)]
    df["status"] = rng.choice(["ok"] * 9 + ["oom"], n)
    df["method"] = rng.choice(["standard", "nucleus", "beam_search", "batched", "speculative", "prompt_lookup"], n)
    df["setting"] = "greedy"
    df["engine"] = "hf"
    df["model"] = rng.choice(["Qwen/Qwen3-4B", "Qwen/Qwen3-0.6B", "tiny/target"], n)
    df["device"] = rng.choice(["cuda", "cpu"], n)
    df["batch_size"] = rng.choice([1, 4, 16], n)
    for c in ("tokens_per_s_per_sequence_median", "aggregate_tokens_per_s_median", "latency_ms_median",
              "ttft_ms_median", "tokens_per_s_per_sequence_std", "aggregate_tokens_per_s_std", "speedup_vs_standard"):
        df[c] = rng.random(n) * 100
    return df


def test_history_with_10000_rows_loads_and_filters_in_under_2_s(tmp_path, monkeypatch):
    results = tmp_path / "runs.csv"
    synthetic_rows(10_000).to_csv(results, index=False)
    synthetic_rows(50, seed=7).to_csv(tmp_path / "other-machine.csv", index=False)  # dropped into the folder
    assert "chart:tokens" in history_updates(results, [], {})  # the whole page, charts included
    bench.dashboard.history.read_rows.__globals__["_CACHE"].clear()  # timed from a cold read
    # Timed: reading, filtering, the pickers and the table. Each chart costs the same whatever the history's
    # size (it draws the compared runs only), so the registry's length is left out of this budget.
    monkeypatch.setattr(charts, "FIGURES", {})
    started = time.perf_counter()
    everything = history_updates(results, [], {})
    filtered = history_updates(results, [], {"model": ["Qwen/Qwen3-4B"], "method": ["batched", "standard"],
                                                       "device": ["cuda"], "run_id": []})
    took = time.perf_counter() - started
    assert took < 2.0, f"History took {took:.2f} s for 10,000 rows"
    assert "10,050 rows" in everything["info"]  # info line: both files
    rows, _, _ = history_view(load_history([results])[0],
                                        {"model": ["Qwen/Qwen3-4B"], "method": ["batched", "standard"],
                                         "device": ["cuda"]})
    assert len(rows) and set(rows["method"]) == {"batched", "standard"} and set(rows["device"]) == {"cuda"}
    table = filtered["table"]
    assert len(table) == min(len(rows), HISTORY_TABLE_ROWS)
    run_filter = filtered["filter:run_id"]["choices"]
    assert len(run_filter) == 1005 and run_filter[0][1] == "202600-run-00999"  # newest first, labelled


def test_history_compares_picked_runs_on_the_same_charts(tmp_path):
    results = tmp_path / "runs.csv"
    synthetic_rows(40).to_csv(results, index=False)
    picked = ["202600-run-00001", "202600-run-00003"]
    page = history_updates(results, [], {"run_id": picked})
    tokens = page["chart:tokens"]
    assert sorted(t.name for t in tokens.data) == picked  # one colour (trace) per compared run


# ------------------------------------------------------------------------------------------ figures

def figure_rows() -> pd.DataFrame:
    base = {c: np.nan for c in archive.COLUMNS} | dict(status="ok", engine="hf", model="m", run_id="r1",
                                                     quantization="none", attention="sdpa", dtype="float32")
    rows = [
        base | dict(method="standard", setting="greedy", batch_size=1, tokens_per_s_per_sequence_median=10.0,
                    tokens_per_s_per_sequence_std=1.0, aggregate_tokens_per_s_median=10.0, latency_ms_median=100.0,
                    ttft_ms_median=20.0, speedup_vs_standard=1.0, peak_allocated_mib=500.0),
        base | dict(method="batched", setting="batch_size=4", batch_size=4, tokens_per_s_per_sequence_median=8.0,
                    tokens_per_s_per_sequence_std=0.5, aggregate_tokens_per_s_median=32.0,
                    aggregate_tokens_per_s_std=2.0, latency_ms_median=125.0, ttft_ms_median=30.0,
                    speedup_vs_standard=0.8, peak_allocated_mib=900.0),
        base | dict(method="speculative", setting="greedy,k=5", batch_size=1, tokens_per_s_per_sequence_median=20.0,
                    tokens_per_s_per_sequence_std=2.0, acceptance_rate=0.6, mean_accepted_tokens=3.2,
                    speedup_vs_standard=2.0, latency_ms_median=50.0, ttft_ms_median=10.0),
        base | dict(method="nucleus", setting="x", status="oom", error="CUDA out of memory"),
    ]
    return pd.DataFrame(rows)


def test_figures_keep_per_sequence_and_aggregate_apart():
    df = figure_rows()
    tokens = charts.tokens_per_s(df)
    assert list(tokens.data[0].y) == [10.0, 8.0, 20.0]  # per-sequence only; the oom row is left out
    assert list(tokens.data[0].error_y.array) == [1.0, 0.5, 2.0]
    batch = charts.batch_throughput(df)
    assert list(batch.data[0].y) == [32.0] and "aggregate" in batch.layout.yaxis.title.text
    latency = charts.latency(df)
    assert [list(t.y) for t in latency.data] == [[20.0, 30.0, 10.0], [80.0, 95.0, 40.0]]
    assert list(latency.data[1].base) == [20.0, 30.0, 10.0]  # decode stacked on top of TTFT
    assert latency.layout.yaxis.title.text == "ms per call"
    assert charts.memory(df).layout.yaxis.title.text == "MiB"
    acceptance = charts.acceptance(df)
    assert [list(t.y) for t in acceptance.data] == [[60.0], [3.2]]
    assert "batch_size: 4" in tokens.data[0].hovertext[1]  # hover carries the row's settings
    for fn in charts.FIGURES.values():  # empty and error-only inputs draw a message, not a crash
        assert fn(pd.DataFrame(columns=archive.COLUMNS)).layout.annotations
        assert fn(df[df["status"] == "oom"]).layout.annotations


def test_tpot_chart_bars_median_ticks_p90_coloured_by_method():
    df = figure_rows()
    df.loc[df["method"] == "standard", ["tpot_ms_median", "tpot_ms_p90"]] = [4.0, 5.0]
    df.loc[df["method"] == "batched", ["tpot_ms_median", "tpot_ms_p90"]] = [3.0, 3.5]
    df.loc[df["method"] == "speculative", ["tpot_ms_median", "tpot_ms_p90"]] = [2.0, 6.0]
    fig = charts.time_per_output_token(df)
    bars, ticks = fig.data
    assert bars.type == "bar" and list(bars.y) == [4.0, 3.0, 2.0]  # the oom row is left out
    assert list(bars.marker.color) == [METHODS[m].color for m in ("standard", "batched", "speculative")]
    assert ticks.type == "scatter" and list(ticks.y) == [5.0, 3.5, 6.0] and ticks.name == "p90"
    assert "p90 6.00 ms" in bars.hovertext[2] and "ms per output token" in fig.layout.yaxis.title.text
    assert "Time per output token" in fig.layout.title.text
    for empty in (pd.DataFrame(columns=archive.COLUMNS), None, df[df["status"] == "oom"]):
        assert "no finished rows yet" in charts.time_per_output_token(empty).layout.annotations[0].text
    two_runs = pd.concat([df, df.assign(run_id="r2")], ignore_index=True)
    grouped = charts.time_per_output_token(two_runs)
    assert [t.offsetgroup for t in grouped.data] == ["r1", "r2", "r1", "r2"]  # ticks sit on their run's bars
    assert [t.showlegend for t in grouped.data if t.type == "scatter"] == [True, False]


def test_figures_take_method_order_and_colours_from_decoding_methods():
    rows = figure_rows()
    shuffled = pd.concat([rows.iloc[[2, 1, 0]], rows.iloc[[0]].assign(method="typical", setting="t")])
    tokens = charts.tokens_per_s(shuffled)
    order = [m for m in METHODS if m in set(shuffled["method"])]
    assert [label.split(" [")[0] for label in tokens.data[0].x] == order
    assert list(tokens.data[0].marker.color) == [METHODS[m].color for m in order]
    drafting = [m for m, spec in METHODS.items() if spec.drafts]
    assert "no " + " or ".join(drafting) + " rows" in charts.acceptance(rows.iloc[:2]).layout.annotations[0].text


def test_no_method_name_is_written_into_the_dashboard_or_figures():
    """Method names, order and colours come from decoding.METHODS, so a new method needs no edit here."""
    sources = [ROOT / "views" / "charts.py", *sorted((ROOT / "bench" / "dashboard").glob("*.py"))]
    for path in sources:
        text = path.read_text()
        for name in METHODS:
            assert f'"{name}"' not in text and f"'{name}'" not in text, f"{path.name} names method {name!r}"


def test_history_module_needs_no_gradio():
    """History's data work runs (and is tested) where gradio is not installed."""
    code = ("import sys; sys.modules['gradio'] = None\n"  # any import of gradio now raises ImportError
            "from bench.dashboard import history\n"
            "df, problems = history.load_history([])\n"
            "rows, table, compared = history.history_view(df, {})\n"
            "del sys.modules['gradio']\n"
            "assert 'gradio' not in sys.modules and len(table) == 0 and problems == []\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_errors_are_listed_above_the_table():
    rows = figure_rows().to_dict("records")
    text = errors_md(rows)
    assert "1 of 4 rows failed" in text and "CUDA out of memory" in text and "nucleus" in text
    assert errors_md(rows[:3]) == ""


# ------------------------------------------------------------------------------------------ launching

def app_py(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BENCH_AUTH"} | (env or {})
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args, env, words", [
    (["--share"], {}, "--auth"),
    (["--share", "--auth", "nocolon"], {}, "USER:PASSWORD"),
    (["--share"], {"BENCH_AUTH": "nocolon"}, "BENCH_AUTH"),
])
def test_share_without_valid_auth_refuses_in_one_line(args, env, words):
    done = app_py(*args, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("auth, env, words", [
    (None, {}, "--auth"), ("nocolon", {}, "USER:PASSWORD"), (None, {"BENCH_AUTH": "me:"}, "BENCH_AUTH"),
])
def test_launch_refuses_share_without_valid_auth(monkeypatch, capsys, auth, env, words):
    monkeypatch.delenv("BENCH_AUTH", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launch({}, None, host="127.0.0.1", port=free_port(), share=True, auth=auth) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_launch_checks_the_initial_settings_in_the_cli_words(monkeypatch, capsys):
    monkeypatch.delenv("BENCH_AUTH", raising=False)
    assert launch({"max_new_tokens": 0}, "x/runs.csv", port=free_port()) == 2
    assert "config key 'max_new_tokens'" in capsys.readouterr().err
    assert parse_auth("me:pw") == ("me", "pw") and parse_auth(None) is None


def test_app_py_serves_the_dashboard_on_host_and_port(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "BENCH_AUTH"}
    proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port),
                             "--results", str(tmp_path / "runs.csv")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                assert time.time() < deadline, "dashboard did not come up"
                time.sleep(0.5)
        assert "Decoding benchmark" in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_history_says_when_compared_workloads_differ_and_names_hidden_picks():
    from test_run_notebook import run_rows

    from bench.dashboard.history import with_picked, workload_note

    same = pd.DataFrame(run_rows("run-a", 10.0, max_new_tokens=16) + run_rows("run-b", 12.0, max_new_tokens=16))
    assert workload_note(same, "run-a") == ""  # the same workload: nothing to say
    other = pd.DataFrame(run_rows("run-a", 10.0, max_new_tokens=16) + run_rows("run-b", 12.0, max_new_tokens=32))
    note = workload_note(other, "run-a")
    assert "max_new_tokens" in note and "16" in note and "32" in note
    assert workload_note(other, None) == ""  # no baseline, no percent change to qualify
    choices = with_picked([("run a", "run-a")], ["run-a", "run-b", "run-c"], hidden={"run-b"})
    assert ("run-b (hidden)", "run-b") in choices and ("run-c (not in the loaded files)", "run-c") in choices


def test_history_draws_the_charts_of_the_same_rows_once():
    from test_run_notebook import run_rows

    from bench.dashboard.history_page import FigureCache

    rows = pd.DataFrame(run_rows("run-a", 10.0) + run_rows("run-b", 12.0))
    cache = FigureCache()
    first = cache.figures(rows)
    assert cache.figures(rows.copy()) is first  # equal rows: the same figures, nothing redrawn
    assert cache.figures(rows.iloc[:2]) is not first
    assert set(first) == set(charts.FIGURES)

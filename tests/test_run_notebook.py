"""History as a lab notebook: runs named, tagged, annotated and hidden through a sidecar that never
rewrites the CSV; settings diffed; rows compared against a baseline run in percent with intervals. Also the
Samples page's notes. Pure functions: no server, no browser."""
from __future__ import annotations

import json
import math
import threading

import numpy as np
import pandas as pd
import pytest

from views import charts, compare

from bench.dashboard.history_page import history_updates
from bench.dashboard.html import summary_md

from store import notebook, archive
from bench.dashboard.history import change_table, diff_table, history_view, load_history, table_view, visible
from views.samples import samples_html


def run_rows(run_id: str, speed: float, ci: float = 0.05, device_name: str = "Intel Xeon", **extra) -> list[dict]:
    """Two finished rows of one run: standard and batched, with 95% intervals of +-ci around each median."""
    base = {c: np.nan for c in archive.COLUMNS} | dict(
        run_id=run_id, timestamp=f"2026-11-2{'abc'.index(run_id[-1]) + 1}T10:00:00+00:00", status="ok", engine="hf",
        model="m", quantization="none", attention="sdpa", dtype="float32", device="cpu", device_name=device_name,
        torch_version="2.13.0", run_name="", run_tags="", run_notes="", notes="") | extra
    rows = []
    for method, setting, batch, factor in (("standard", "greedy", 1, 1.0), ("batched", "batch_size=4", 4, 3.0)):
        v = speed * factor
        rows.append(base | dict(
            method=method, setting=setting, batch_size=batch, tokens_per_s_per_sequence_median=v,
            tokens_per_s_per_sequence_ci_low=v * (1 - ci), tokens_per_s_per_sequence_ci_high=v * (1 + ci),
            aggregate_tokens_per_s_median=v, aggregate_tokens_per_s_ci_low=v * (1 - ci),
            aggregate_tokens_per_s_ci_high=v * (1 + ci), ttft_ms_median=1000 / v, ttft_ms_ci_low=1000 / v * (1 - ci),
            ttft_ms_ci_high=1000 / v * (1 + ci), tpot_ms_median=100 / v, latency_ms_median=5000 / v))
    return rows


@pytest.fixture
def folder(tmp_path):
    results = tmp_path / "runs.csv"
    rows = run_rows("run-a", 10.0) + run_rows("run-b", 12.0, device_name="AMD EPYC") + run_rows("run-c", 10.2, ci=0.2)
    pd.DataFrame(rows, columns=archive.COLUMNS).to_csv(results, index=False)
    return results


def test_sidecar_renames_tags_and_hides_without_touching_the_csv(folder):
    before = folder.read_bytes()
    notebook.update_meta(folder, "run-a", name="fp32 baseline", tags="fp32, baseline,fp32", notes="quiet machine")
    notebook.update_meta(folder, "run-c", hidden=True)
    assert folder.read_bytes() == before  # append-only: the CSV is never rewritten
    meta = json.loads(notebook.meta_path(folder).read_text())["runs"]
    assert meta["run-a"] == {"name": "fp32 baseline", "tags": ["fp32", "baseline"], "notes": "quiet machine"}
    df, problems = load_history([folder], folder)
    assert problems == [] and len(df) == 6  # no row deleted
    a = df[df["run_id"] == "run-a"].iloc[0]
    assert (a["run_name"], a["run_tags"], a["run_notes"]) == ("fp32 baseline", "fp32, baseline", "quiet machine")
    assert set(visible(df, False)["run_id"]) == {"run-a", "run-b"} and len(visible(df, True)) == 6
    notebook.update_meta(folder, "run-c", hidden=False)
    assert not load_history([folder], folder)[0]["hidden"].any()  # shown again


def test_sidecar_writers_never_lose_each_others_change(folder):
    threads = [threading.Thread(target=notebook.update_meta, args=(folder, f"run-{i}"), kwargs={"name": f"n{i}"})
               for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {k: v["name"] for k, v in notebook.load_meta(folder).items()} == {f"run-{i}": f"n{i}" for i in range(12)}


def test_a_broken_sidecar_is_ignored_not_fatal(folder):
    notebook.meta_path(folder).write_text("{not json")
    df, problems = load_history([folder], folder)
    assert len(df) == 6 and problems == [] and not df["hidden"].any()


def test_legends_and_pickers_say_name_or_run_id_and_device(folder):
    notebook.update_meta(folder, "run-a", name="baseline")
    df, _ = load_history([folder], folder)
    labels = notebook.run_labels(df)
    assert labels == {"run-a": "baseline · Intel Xeon", "run-b": "run-b · AMD EPYC", "run-c": "run-c · Intel Xeon"}
    fig = charts.tokens_per_s(df[df["run_id"].isin(["run-a", "run-b"])])
    assert sorted(t.name for t in fig.data) == ["baseline · Intel Xeon", "run-b · AMD EPYC"]
    page = history_updates(folder, [], {})
    choices = dict((v, k) for k, v in page["filter:run_id"]["choices"])
    assert choices["run-a"] == "baseline · Intel Xeon · m · 2026-11-21 10:00 · 2 rows"
    assert page["filter:device_name"]["choices"] == ["AMD EPYC", "Intel Xeon"]  # a filter of its own
    notebook.update_meta(folder, "run-b", name="baseline")  # the same name on the same device: never merged
    notebook.update_meta(folder, "run-c", name="baseline")
    labels = notebook.run_labels(load_history([folder], folder)[0])
    assert len(set(labels.values())) == 3 and labels["run-c"] == "baseline · Intel Xeon (run-c)"


def test_settings_diff_shows_the_keys_that_differ_side_by_side(folder):
    df, _ = load_history([folder], folder)
    diff = diff_table(df[df["run_id"].isin(["run-a", "run-b"])])
    assert list(diff.columns) == ["key", "run-b · AMD EPYC", "run-a · Intel Xeon"]  # newest first
    assert diff.set_index("key").loc["device_name"].tolist() == ["AMD EPYC", "Intel Xeon"]
    assert "model" not in set(diff["key"])  # the same in both: not a difference
    assert diff_table(df[df["run_id"] == "run-a"]).empty  # one run: nothing to diff


def test_percent_change_against_a_baseline_with_intervals_and_ns(folder):
    df, _ = load_history([folder], folder)
    rows, _, compared = history_view(df, {"run_id": ["run-b", "run-c"]}, baseline="run-a")
    assert set(compared["run_id"]) == {"run-a", "run-b", "run-c"}  # the baseline is drawn beside them
    table = change_table(compared, "run-a").set_index(["run", "row"])
    faster = table.loc[("run-b · AMD EPYC", "standard [greedy]"), "tok/s/seq"]
    assert faster.startswith("+20.0% [") and "n.s." not in faster
    low, high = (float(x) for x in faster.split("[")[1].rstrip("]").split(","))
    assert 10 < low < 20 < high < 31  # +-5% on each side, combined in quadrature on the log scale
    same = table.loc[("run-c · Intel Xeon", "standard [greedy]"), "tok/s/seq"]
    assert same.startswith("+2.0% n.s.")  # a wide interval that holds 0: no significant difference
    assert table.loc[("run-b · AMD EPYC", "standard [greedy]"), "TTFT"].startswith("-16.7%")
    assert table.loc[("run-b · AMD EPYC", "standard [greedy]"), "peak MiB"] == "-"  # no figure on the CPU
    assert change_table(compared, None).empty


def test_change_interval_is_the_quadrature_of_both_runs_intervals():
    base = {"x": 10.0, "x_ci_low": 9.0, "x_ci_high": 11.0}
    row = {"x": 12.0, "x_ci_low": 11.0, "x_ci_high": 13.0}
    change, low, high = compare.change_interval(base, row, "x", "x")
    half = math.hypot(math.log(11 / 9) / 2, math.log(13 / 11) / 2)
    assert change == pytest.approx(20.0)
    assert low == pytest.approx((math.exp(math.log(1.2) - half) - 1) * 100)
    assert high == pytest.approx((math.exp(math.log(1.2) + half) - 1) * 100)
    assert compare.change_text(float("nan"), 0, 0) == "-"


def test_history_table_rounds_and_shows_intervals_as_the_cli_does(folder):
    df, _ = load_history([folder], folder)
    table = table_view(df.assign(speedup_vs_standard=1.23456, speedup_vs_standard_ci_low=0.9,
                                 speedup_vs_standard_ci_high=1.6))
    first = table.iloc[0]
    assert first["tok/s/seq 95% CI"] == "9.5-10.5" and first["speedup_vs_standard"] == "1.2x n.s."


def test_an_unrelated_csv_is_refused_under_could_not_read(tmp_path):
    results = tmp_path / "runs.csv"
    pd.DataFrame(run_rows("run-a", 10.0), columns=archive.COLUMNS).to_csv(results, index=False)
    (tmp_path / "salaries.csv").write_text("name,salary\nann,100\n")
    page = history_updates(results, [], {})
    assert "could not read:** salaries.csv: not a decoding-bench results file" in page["info"]
    assert "**2** of 2 rows" in page["info"]  # no empty row from it


def test_samples_say_when_a_completion_does_not_exist_and_when_text_is_random():
    records = [dict(run_id="r", method="standard", setting="greedy", engine="hf", quantization="none",
                    attention="sdpa", prompt_index=0, completion_index=c, sequence_index=0, text=f"t{c}",
                    new_tokens=3) for c in (0, 1)]
    missing = samples_html(records, "r", None, completion=4)
    assert "no completion 5" in missing and "1 to 2" in missing and "failed" not in missing
    assert "meaningless" in samples_html(records, "r", None, 0, rows=[{"random_weights": True}])
    assert "meaningless" not in samples_html(records, "r", None, 0, rows=[{"random_weights": False, "model": "m"}])


def test_results_summary_names_the_run_only_when_it_has_a_name():
    rows = run_rows("run-a", 10.0)
    assert summary_md(rows).startswith("**Run `run-a`** · 2026-11-21 10:00 · model")
    assert "**fp32**" in summary_md([r | {"run_name": "fp32"} for r in rows])


@pytest.mark.parametrize("name", ["nan", "NA", "null", "None"])
def test_a_run_named_like_a_missing_value_keeps_its_name_in_history_and_its_export(tmp_path, name):
    """pandas read `nan`, `NA`, `null` as missing: the run's name came back empty in History and its export."""
    from store.export import export_csv

    results = tmp_path / "runs.csv"
    for row in run_rows("run-a", 10.0, run_name=name, run_tags=name, run_notes=name):
        archive.append_row(results, row)
    df, problems = load_history([results], results)
    assert problems == [] and df["run_name"].tolist() == [name, name]
    assert df["run_tags"].tolist() == [name, name] and df["run_notes"].tolist() == [name, name]
    assert df["tokens_per_s_per_sequence_median"].tolist() == [10.0, 30.0]  # numbers stay numbers
    exported = pd.read_csv(export_csv(df, tmp_path / "export.csv"), keep_default_na=False)
    assert exported["run_name"].tolist() == [name, name]

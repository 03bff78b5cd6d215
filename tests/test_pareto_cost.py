"""Pareto fronts with intervals (views/pareto.py) and the cost columns (metrics/cost.py): the front of a
hand-built set, the arithmetic by hand, and a tiny run with and without a price."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bench.runner import run_all
from conftest import tiny_config
from metrics import COLUMNS
from metrics.cost import Cost, cost_with_interval, energy_per_million, per_million
from metrics.serving import LoadFigures, RequestRecord
from store import archive
from views import charts
from views.pareto import dominates, pareto_front


def pt(x, y, xw=0.0, yw=0.0, **extra):
    return {"x": x, "x_low": x - xw, "x_high": x + xw, "y": y, "y_low": y - yw, "y_high": y + yw, **extra}


def test_the_front_of_hand_built_points_with_overlapping_intervals():
    points = [
        pt(10, 100, 1, 5),   # 0: fast for one user
        pt(11, 102, 3, 10),  # 1: beats 0 on both medians, but the intervals overlap on both axes: no dominance
        pt(5, 300, 1, 10),   # 2: the throughput end
        pt(4, 200, 1, 10),   # 3: below 2 on both, apart on y: dominated
        pt(8, 150, 1, 5),    # 4: between 0 and 2, beaten by neither
        pt(7, 140, 1, 20),   # 5: below 4 on both; intervals overlap on x and y: stays
        pt(2, 120, 0.5, 5),  # 6: below 4 on both, apart on x: dominated
        pt(float("nan"), 500),  # 7: no x: never on the front
    ]
    assert dominates(points[2], points[3]) and not dominates(points[1], points[0])
    assert not dominates(points[0], points[1])  # 1 is better: never dominated by 0
    assert pareto_front(points) == [2, 5, 4, 0, 1]  # by x ascending
    # Without intervals the classic front: 1 beats 0, 4 beats 5.
    bare = [{"x": p["x"], "y": p["y"]} for p in points]
    assert pareto_front(bare) == [2, 4, 1]


def test_equal_points_do_not_dominate_each_other_and_an_empty_set_has_no_front():
    assert pareto_front([pt(1, 1), pt(1, 1)]) == [0, 1]
    assert pareto_front([]) == []


def test_cost_arithmetic_by_hand_with_the_interval_turned_over():
    # 2.5 per hour at 50 tok/s: 180 000 tokens an hour, so 1e6 tokens cost 2.5 / 0.18 = 13.888...
    assert per_million(2.5, 50.0) == pytest.approx(13.8888889)
    cost, low, high = cost_with_interval(2.5, 50.0, 40.0, 62.5)
    assert low == pytest.approx(2.5 / (62.5 * 3600) * 1e6) == pytest.approx(11.1111111)  # from the high rate
    assert high == pytest.approx(2.5 / (40.0 * 3600) * 1e6) == pytest.approx(17.3611111)  # from the low rate
    assert low < cost < high
    # 0.5 J/token: 5e5 J per million = 0.1389 kWh, at 0.30 per kWh 0.041666...
    assert energy_per_million(0.5, 0.30) == pytest.approx(0.5 * 1e6 / 3.6e6 * 0.30) == pytest.approx(0.0416667)
    assert math.isnan(per_million(0.0, 50.0)) and math.isnan(per_million(2.5, float("nan")))
    assert math.isnan(per_million(2.5, 0.0)) and math.isnan(energy_per_million(0.5, 0.0))


def test_the_metric_fills_fixed_call_and_load_rows_and_leaves_cells_empty_without_a_price():
    ctx = SimpleNamespace(config=SimpleNamespace(cost_per_hour=3.6, currency="EUR", energy_price_per_kwh=0.36))
    call_row = {"aggregate_tokens_per_s_median": 100.0, "aggregate_tokens_per_s_ci_low": 80.0,
                "aggregate_tokens_per_s_ci_high": 125.0, "joules_per_token": 2.0, "output_tokens_per_s": float("nan")}
    out = Cost.summarize([], ctx, call_row)
    assert out["cost_per_million_tokens"] == pytest.approx(10.0)  # 3.6 / (100 * 3600) * 1e6
    assert (out["cost_per_million_tokens_ci_low"], out["cost_per_million_tokens_ci_high"]) == \
        (pytest.approx(8.0), pytest.approx(12.5))
    assert out["energy_cost_per_million_tokens"] == pytest.approx(0.2)  # 2 J * 1e6 / 3.6e6 * 0.36
    assert math.isnan(out["cost_per_million_good_tokens"]) and out["currency"] == "EUR"
    load_row = {"output_tokens_per_s": 200.0, "output_tokens_per_s_ci_low": 100.0,
                "output_tokens_per_s_ci_high": 400.0, "goodput": 2.0, "goodput_ci_low": 1.0, "goodput_ci_high": 4.0,
                "new_tokens": 50.0, "joules_per_token": float("nan")}
    out = Cost.summarize([], ctx, load_row)
    assert [out[f"cost_per_million_tokens{s}"] for s in ("", "_ci_low", "_ci_high")] == \
        [pytest.approx(5.0), pytest.approx(2.5), pytest.approx(10.0)]
    # good tokens: 2 req/s x 50 tokens = 100 tok/s
    assert [out[f"cost_per_million_good_tokens{s}"] for s in ("", "_ci_low", "_ci_high")] == \
        [pytest.approx(10.0), pytest.approx(5.0), pytest.approx(20.0)]
    assert math.isnan(out["energy_cost_per_million_tokens"])
    unset = Cost.summarize([], SimpleNamespace(config=SimpleNamespace(cost_per_hour=0.0, currency="USD",
                                                                      energy_price_per_kwh=0.0)), call_row)
    assert all(math.isnan(unset[c]) for c in Cost.columns if c != "currency") and unset["currency"] == ""


def test_units_are_in_the_column_names_and_their_help():
    assert set(Cost.columns) <= set(COLUMNS)
    for column in Cost.columns[:-1]:
        assert "per_million" in column and "1e6" in Cost.help[column] + Cost.help["cost_per_million_tokens"]
    assert "currency" in Cost.help["cost_per_million_tokens"] and "kWh" in Cost.help["energy_cost_per_million_tokens"]


def test_load_rates_carry_intervals_from_their_requests():
    records = [RequestRecord(i, 0, scheduled=i * 0.1, sent=i * 0.1, first_token=i * 0.1 + 0.05, end=i * 0.1 + 0.5,
                             output_tokens=10 + i, status="ok") for i in range(20)]
    out = LoadFigures.figures(records, 0.0, 0.0)
    assert out["output_tokens_per_s_ci_low"] < out["output_tokens_per_s"] < out["output_tokens_per_s_ci_high"]
    assert out["goodput_ci_low"] <= out["goodput"] <= out["goodput_ci_high"]


def test_a_tiny_run_with_a_price_fills_the_cost_columns_and_one_without_leaves_them_empty(tmp_path):
    small = dict(methods=["standard", "batched"], prompts=["def f(x):"], max_new_tokens=4, repetitions=2)
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    priced = run_all(tiny_config(tmp_path / "a", cost_per_hour=2.5, **small))
    assert priced and all(r["status"] == "ok" for r in priced)
    for r in priced:
        rate = r["aggregate_tokens_per_s_median"]
        assert r["cost_per_million_tokens"] == pytest.approx(2.5 / (rate * 3600) * 1e6)
        assert r["currency"] == "USD"
        if r["aggregate_tokens_per_s_ci_high"] == r["aggregate_tokens_per_s_ci_high"]:
            assert r["cost_per_million_tokens_ci_low"] == pytest.approx(
                2.5 / (r["aggregate_tokens_per_s_ci_high"] * 3600) * 1e6)
        assert math.isnan(r["cost_per_million_good_tokens"])  # no load rows here
    stored = archive.load_rows(tmp_path / "a" / "runs.csv")
    assert stored["cost_per_million_tokens"].notna().all()
    assert charts.cost(stored).data, "the cost chart draws once a price is set"

    plain = run_all(tiny_config(tmp_path / "b", **small))
    assert all(math.isnan(r["cost_per_million_tokens"]) and r["currency"] == "" for r in plain)
    stored = archive.load_rows(tmp_path / "b" / "runs.csv")
    assert stored["cost_per_million_tokens"].isna().all()
    assert not charts.cost(stored).data  # the card says how to set a price, draws nothing
    fig = charts.pareto_chart(stored)
    assert any(t.type == "table" for t in fig.data) and any(t.name == "Pareto front" for t in fig.data)


def test_the_pareto_chart_marks_the_front_and_lists_it():
    base = {c: np.nan for c in archive.COLUMNS} | dict(status="ok", run_id="r", engine="hf", quantization="none",
                                                     attention="sdpa", dtype="float32", model="m", notes="")
    rows = [
        base | dict(method="standard", setting="greedy", batch_size=1, tokens_per_s_per_sequence_median=40.0,
                    tokens_per_s_per_sequence_ci_low=38.0, tokens_per_s_per_sequence_ci_high=42.0,
                    aggregate_tokens_per_s_median=40.0, aggregate_tokens_per_s_ci_low=38.0,
                    aggregate_tokens_per_s_ci_high=42.0),
        base | dict(method="batched", setting="batch_size=8", batch_size=8, tokens_per_s_per_sequence_median=20.0,
                    tokens_per_s_per_sequence_ci_low=18.0, tokens_per_s_per_sequence_ci_high=22.0,
                    aggregate_tokens_per_s_median=160.0, aggregate_tokens_per_s_ci_low=150.0,
                    aggregate_tokens_per_s_ci_high=170.0, quantization="bnb-4bit"),
        base | dict(method="batched", setting="batch_size=2", batch_size=2, tokens_per_s_per_sequence_median=15.0,
                    tokens_per_s_per_sequence_ci_low=14.0, tokens_per_s_per_sequence_ci_high=16.0,
                    aggregate_tokens_per_s_median=30.0, aggregate_tokens_per_s_ci_low=28.0,
                    aggregate_tokens_per_s_ci_high=32.0),
        base | dict(method="standard", setting="concurrency=4", engine="continuous", batch_size=1, new_tokens=100.0,
                    e2e_ms_median=4000.0, e2e_ms_ci_low=3000.0, e2e_ms_ci_high=5000.0, output_tokens_per_s=90.0,
                    output_tokens_per_s_ci_low=80.0, output_tokens_per_s_ci_high=100.0),
    ]
    fig = charts.pareto_chart(pd.DataFrame(rows))
    table = next(t for t in fig.data if t.type == "table")
    listed = list(table.cells.values[1])
    assert len(listed) == 3 and "batch_size=2" not in " ".join(listed)  # dominated by standard beyond noise
    assert "bnb-4bit" in " ".join(listed) and any("continuous" in n for n in listed)  # quantization and engine named
    load = next(t for t in fig.data if t.type == "scatter" and t.marker.symbol == "diamond")
    assert load.x[0] == pytest.approx(25.0)  # 100 tokens / 4 s end to end
    assert load.error_x.array[0] == pytest.approx(100 / 3 - 25) and load.error_x.arrayminus[0] == pytest.approx(5)

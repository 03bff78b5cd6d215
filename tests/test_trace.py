"""Latency detail: one traced call per row, after the measured ones. Its token times are whole, ordered,
and show what the method does (a speculative round lands several tokens at one time); its charts draw them."""
import math

import pytest

from views import charts

from store import archive
from bench.runner import run_all
from conftest import RANDOM_TARGET, tiny_config
from metrics.timing import TokenTrace
from metrics.trace import format_times, inter_token_ms, parse_times

K = 3
NEW = 13  # 1 token from the prefill, then 3 rounds of k + 1 = 4


def test_gaps_by_hand():
    assert inter_token_ms([10.0, 12.0, 15.0]) == [2.0, 3.0]
    # a round that lands three tokens at 20 ms after one at 11: three gaps of 3 ms each
    assert inter_token_ms([11.0, 20.0, 20.0, 20.0]) == [3.0, 3.0, 3.0]
    assert inter_token_ms([5.0, 5.0, 8.0]) == [0.0, 3.0]  # tokens of the first event arrived together
    assert inter_token_ms([7.0]) == [] and parse_times(float("nan")) == [] and parse_times("") == []
    assert parse_times(format_times([1.0, 2.5])) == [1.0, 2.5]


def test_a_step_stamps_every_token_it_made(monkeypatch):
    import time

    import torch

    now = iter([0.0, 0.010, 0.015, 0.030, 0.031])
    monkeypatch.setattr(time, "perf_counter", lambda: next(now))
    with TokenTrace(torch.device("cpu")) as trace:  # starts at 0
        trace.tokens(1)  # 10 ms: the prefill's token
        trace.tokens(4)  # 15 ms: a round of three
        trace.tokens(5)  # 30 ms
    assert trace.token_times_ms() == pytest.approx([10, 15, 15, 15, 30])


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """The target drafting for itself: every draft is accepted, so each round lands exactly k + 1 tokens."""
    tmp = tmp_path_factory.mktemp("trace")
    out = {}
    for engine in ("hf", "fast"):
        config = tiny_config(tmp, engine=engine, draft_model=RANDOM_TARGET, methods=["standard", "batched",
                             "speculative"], speculative_modes=["greedy"], num_draft_tokens=K, batch_sizes=[2],
                             max_new_tokens=NEW, repetitions=1)
        out |= {(engine, r["method"]): r for r in run_all(config)}
    return out, tmp / "runs.csv"


def test_every_row_traces_each_new_token_in_order(rows):
    rows, _ = rows
    for key, row in rows.items():
        times = parse_times(row["token_times_ms"])
        assert len(times) == NEW, key  # forced length: every token of sequence 1, no more
        assert times[0] > 0 and all(a <= b for a, b in zip(times, times[1:])), key


def test_a_fully_accepted_round_lands_its_tokens_at_one_time(rows):
    rows, _ = rows
    fast = parse_times(rows[("fast", "speculative")]["token_times_ms"])
    assert rows[("fast", "speculative")]["acceptance_rate"] == 1.0
    assert len(set(fast)) == 1 + math.ceil((NEW - 1) / (K + 1))  # the prefill's token, then one time per round
    for engine in ("hf", "fast"):  # plain decoding makes one token per step
        times = parse_times(rows[(engine, "standard")]["token_times_ms"])
        assert len(set(times)) == NEW or engine == "hf" and len(set(times)) >= NEW - 1
    assert len(set(parse_times(rows[("hf", "speculative")]["token_times_ms"]))) < NEW


def test_traces_survive_the_csv_and_are_drawn(rows):
    rows, results = rows
    df = archive.load_rows(results)
    assert df["token_times_ms"].notna().all()
    timeline = charts.token_timeline(df)
    lines = [t for t in timeline.data if t.mode == "lines"]
    assert len(lines) == len(df) and all(len(t.x) == NEW for t in lines)
    ttft = [t for t in timeline.data if t.mode == "markers"]
    assert [t.y[0] for t in ttft] == [1] * len(df)
    itl = charts.inter_token_latency(df)
    assert len(itl.data) == len(df) and [t.visible for t in itl.data].count(True) == 1
    assert len(itl.layout.updatemenus[0].buttons) == len(df)
    assert all(len(t.x) == NEW - 1 for t in itl.data)

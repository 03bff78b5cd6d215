"""The load scenario's arithmetic against servers whose truth is known: arrivals, streamed timing, goodput, and a
server command that dies at once. CPU, offline: the servers are local processes on 127.0.0.1."""
import math
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

KNOWN_DELAY = f"{sys.executable} {ROOT / 'tests' / 'fixtures' / 'known_delay_server.py'} --port {{port}}"
TTFT_MS, TOKEN_MS = 200.0, 50.0


def test_poisson_arrivals_have_mean_one_over_rate_and_cv_one():
    from scenarios.arrivals import schedule

    rate = 4.0
    times = schedule(2000, rate, burstiness=1.0, seed=3)
    gaps = np.diff([0.0] + times)
    assert len(times) == 2000
    assert abs(gaps.mean() - 1 / rate) <= 0.05 / rate
    assert abs(gaps.std() / gaps.mean() - 1.0) <= 0.1
    bursty = np.diff([0.0] + schedule(2000, rate, burstiness=0.25, seed=3))
    assert bursty.std() / bursty.mean() > 1.5  # gamma shape 0.25: CV 2
    assert schedule(5, math.inf) == [0.0] * 5
    assert max(schedule(0, rate, duration_s=10.0, seed=1)) <= 10.0


def test_streamed_events_are_counted_per_token():
    from metrics.serving import RequestRecord, itls_s, spread_tokens, tpot_s

    times = spread_tokens([(1.0, 1), (1.3, 3), (1.4, 1), (1.5, 0)])
    assert times == pytest.approx([1.0, 1.1, 1.2, 1.3, 1.4])
    r = RequestRecord(0, 0, 0.0, sent=0.5, first_token=1.0, token_times=times, end=1.4, output_tokens=5, status="ok")
    assert itls_s(r) == pytest.approx([0.1] * 4) and tpot_s(r) == pytest.approx(0.1)


@pytest.fixture
def known_delay_run(tmp_path):
    """The load scenario against the known-delay server, which the tool starts itself (server_command)."""
    from bench.config import Config
    from bench.runner import run_all

    config = Config.from_dict(dict(
        model="tiny/target", methods=["standard"], engine=["server"], server_command=[KNOWN_DELAY],
        prompts=["Explain speculative decoding", "Hi"], max_new_tokens=13, concurrency=[2], num_requests=6,
        warmup_requests=1, slo_ttft_ms=TTFT_MS * 1.5, slo_tpot_ms=TOKEN_MS * 1.5, results=str(tmp_path / "runs.csv")))
    return config, run_all(config)


def test_known_delay_server_gives_back_its_ttft_itl_and_tpot(known_delay_run):
    config, rows = known_delay_run
    (row,) = rows
    assert row["status"] == "ok", row["error"]
    assert row["requests"] == 6 and row["failed_requests"] == 0 and row["new_tokens"] == 13
    # The role-only event comes at 20 ms: were it taken for the first token, TTFT would be 10x too short.
    assert row["ttft_ms_median"] == pytest.approx(TTFT_MS, rel=0.1)
    assert row["itl_ms_median"] == pytest.approx(TOKEN_MS, rel=0.1)  # chunks of 3 are 3 gaps of 50 ms, not 1 of 150
    assert row["tpot_ms_median"] == pytest.approx(TOKEN_MS, rel=0.1)
    assert row["endpoint"].startswith("http://127.0.0.1:") and row["server_command"] == KNOWN_DELAY


def test_goodput_recomputed_from_requests_jsonl_equals_the_row(known_delay_run):
    from store import archive
    from store.requests import load_requests
    from metrics.serving import RequestRecord, goodput

    config, (row,) = known_delay_run
    records = load_requests(config.results)
    assert len(records) == row["requests"] and {r["row_key"] for r in records} == {archive.row_key(row)}
    recs = [RequestRecord.from_json(r) for r in records]
    assert all(len(r.token_times) == 13 and r.sent >= r.scheduled for r in recs)
    assert goodput(recs, config.slo_ttft_ms, config.slo_tpot_ms) == row["goodput"]
    stored = archive.load_rows(config.results).iloc[0]
    assert goodput(recs, config.slo_ttft_ms, config.slo_tpot_ms) == pytest.approx(float(stored["goodput"]), rel=1e-5)
    assert goodput(recs, TTFT_MS / 10, 0) == 0.0  # nobody meets a TTFT target 10x below the server's


def test_a_server_command_that_exits_at_once_is_an_error_row_and_the_next_one_runs(tmp_path):
    from bench.config import Config
    from bench.runner import run_all

    dies = f"{sys.executable} -c \"import sys; print('no GPU here'); sys.exit(3)\""
    config = Config.from_dict(dict(
        model="tiny/target", methods=["standard"], engine=["server"], server_command=[dies, KNOWN_DELAY],
        prompts=["Hi"], max_new_tokens=13, concurrency=[1], num_requests=2, warmup_requests=0,
        results=str(tmp_path / "runs.csv")))
    rows = run_all(config)
    assert [r["status"] for r in rows] == ["error", "ok"]
    assert "exited with code 3" in rows[0]["error"] and "no GPU here" in rows[0]["error"]
    assert rows[0]["server_command"] == dies and rows[1]["requests"] == 2


def test_load_keys_are_checked_in_one_line(tmp_path):
    from bench.config import Config, ConfigError

    base = dict(model="tiny/target", methods=["standard"], results=str(tmp_path / "r.csv"))
    with pytest.raises(ConfigError, match="'endpoint'"):
        Config.from_dict({**base, "engine": ["server"]}, check_models=False)
    with pytest.raises(ConfigError, match="'request_rate'"):
        Config.from_dict({**base, "request_rate": [0]}, check_models=False)
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"prompt": "hi", "output_tokens": 0}\n')
    with pytest.raises(ConfigError, match="'dataset'.*line 1"):
        Config.from_dict({**base, "concurrency": [1], "dataset": str(bad)}, check_models=False)
    ok = Config.from_dict({**base, "request_rate": ["inf", 2], "dataset": str(ROOT / "datasets" / "chat_mix.jsonl")},
                          check_models=False)
    assert ok.request_rate == [math.inf, 2.0]


def test_no_server_process_outlives_the_run(known_delay_run):
    import os

    import psutil

    time.sleep(0.2)
    mine = psutil.Process(os.getpid()).children(recursive=True)
    assert not [p for p in mine if "known_delay_server.py" in " ".join(p.cmdline())]


def test_spec_decode_counters_are_read_from_prometheus_text():
    from engines.server.session import prometheus_totals

    text = """# HELP vllm:spec_decode_num_draft_tokens_total Number of draft tokens.
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="Qwen/Qwen3-4B"} 400.0
vllm:spec_decode_num_draft_tokens_created{engine="0",model_name="Qwen/Qwen3-4B"} 1.7e9
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="Qwen/Qwen3-4B"} 252.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",position="0"} 90.0
vllm:num_requests_running{engine="0"} 3.0
"""
    totals = prometheus_totals(text)
    assert totals["drafted_tokens"] == 400.0
    assert totals["accepted_tokens"] == 252.0  # not the per-position counter

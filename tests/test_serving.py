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


def test_each_event_is_kept_with_its_time_and_tokens_and_itl_is_also_one_gap_per_event(known_delay_run):
    from metrics.serving import RequestRecord
    from metrics.stream_figures import event_gaps_s
    from store.requests import load_requests

    config, (row,) = known_delay_run
    recs = [RequestRecord.from_json(r) for r in load_requests(config.results)]
    for r in recs:
        assert [n for _, n in r.events] == [1, 3, 1, 3, 1, 3, 1]  # the stand-in's chunks, as streamed
        assert r.events[0][0] == pytest.approx(r.first_token, abs=1e-5)
        gaps = event_gaps_s(r)  # a chunk of k tokens comes k * TOKEN_MS after the one before
        assert gaps == pytest.approx([k * TOKEN_MS / 1000 for k in (3, 1, 3, 1, 3, 1)], abs=0.03)
    # Pooled gaps are half 50 ms, half 150 ms: the median is halfway, where per token every gap is 50 ms.
    assert row["itl_event_ms_median"] == pytest.approx(2 * TOKEN_MS, rel=0.15)
    assert row["itl_ms_median"] == pytest.approx(TOKEN_MS, rel=0.1)
    assert row["offered_request_rate"] != row["offered_request_rate"]  # closed loop: no arrivals were drawn


def test_reasoning_is_timed_apart_from_the_answer(tmp_path):
    """Chat chunks 1, 3, 1 come as reasoning_content (5 tokens), the rest as content (8 tokens): the first answer
    token arrives TTFT + (3 + 1 + 3) x TOKEN_MS after the request."""
    from bench.config import Config
    from bench.runner import run_all
    from metrics.serving import RequestRecord
    from store.requests import load_requests

    command = KNOWN_DELAY + " --reasoning-chunks 3 --server-ttft-ms 120"
    config = Config.from_dict(dict(
        model="tiny/target", methods=["standard"], engine=["server"], server_command=[command], api="chat",
        prompts=["Explain speculative decoding"], max_new_tokens=13, concurrency=[2], num_requests=6,
        warmup_requests=1, results=str(tmp_path / "runs.csv")))
    (row,) = run_all(config)
    assert row["status"] == "ok", row["error"]
    assert row["ttft_ms_median"] == pytest.approx(TTFT_MS, rel=0.1)  # the first token of any kind
    assert row["ttfat_ms_median"] == pytest.approx(TTFT_MS + 7 * TOKEN_MS, rel=0.1)
    assert row["reasoning_ms_median"] == pytest.approx(7 * TOKEN_MS, rel=0.1)
    assert row["reasoning_tokens"] == 5 and row["answer_tokens"] == 8
    assert row["reasoning_share"] == pytest.approx(5 / 13)
    assert row["ttfat_ms_p90"] != row["ttfat_ms_p90"]  # 6 requests: no p90 pretends to be one
    # The stand-in says its own TTFT is 120 ms: the rest of the client's 200 ms is outside the "engine".
    assert row["client_ttft_overhead_ms"] == pytest.approx(TTFT_MS - 120, rel=0.2)
    assert row["server_ttft_ms_median"] == pytest.approx(120)
    recs = [RequestRecord.from_json(r) for r in load_requests(config.results)]
    assert all(r.reasoning_tokens == 5 and r.output_tokens == 13 for r in recs)
    assert all(r.server["time_to_first_token_ms"] == 120 for r in recs)
    import json

    texts = [json.loads(line)["text"] for line in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    assert texts == [" w" * 8]  # the answer only: greedy texts compare answers


def test_tokens_the_final_usage_counts_but_no_event_carried_are_kept_at_the_stream_end(tmp_path):
    """A streaming detokenizer holds back an incomplete UTF-8 piece: its token is in the usage, in no event."""
    from bench.config import Config
    from bench.runner import run_all
    from metrics.serving import RequestRecord
    from store.requests import load_requests

    config = Config.from_dict(dict(
        model="tiny/target", methods=["standard"], engine=["server"], server_command=[KNOWN_DELAY + " --held-back 1"],
        prompts=["Hi"], max_new_tokens=14, request_rate=[20.0], num_requests=4, warmup_requests=0,
        results=str(tmp_path / "runs.csv")))
    (row,) = run_all(config)
    assert row["status"] == "ok", row["error"]
    assert row["new_tokens"] == 14 and "some requests returned another number" not in row["notes"]
    assert "reconciled with the final usage" in row["notes"]
    for r in (RequestRecord.from_json(x) for x in load_requests(config.results)):
        assert r.output_tokens == 14 and len(r.token_times) == 14
        assert r.events[-1][1] == 1 and r.events[-1][0] - r.events[-2][0] == pytest.approx(TOKEN_MS / 1000, abs=0.03)
        assert r.end == pytest.approx(r.events[-1][0], abs=1e-5)  # TPOT and e2e count the held-back token too
    assert row["tpot_ms_median"] == pytest.approx(TOKEN_MS, rel=0.1)
    assert row["offered_request_rate"] > 0 and row["request_rate"] == 20.0


def test_server_histograms_and_drafting_counters_become_columns():
    """/metrics deltas: exact means, percentiles as their bucket's bound, τ and acceptance by position (the issue's
    ngram run: 1730 drafted, 1129 accepted)."""
    from metrics.server_metrics import Snapshot, server_figures

    def text(queue_sum, le, drafts, accepted, per_pos, kv):
        m = 'engine="0",model_name="m"'
        lines = [f"vllm:request_queue_time_seconds_sum{{{m}}} {queue_sum}",
                 f"vllm:request_queue_time_seconds_count{{{m}}} {sum(le.values()) and max(le.values())}",
                 *(f'vllm:request_queue_time_seconds_bucket{{engine="0",le="{b}",model_name="m"}} {v}'
                   for b, v in le.items()),
                 f"vllm:spec_decode_num_drafts_total{{{m}}} {drafts}",
                 f"vllm:spec_decode_num_draft_tokens_total{{{m}}} {drafts * 4}",
                 f"vllm:spec_decode_num_accepted_tokens_total{{{m}}} {accepted}",
                 f"vllm:spec_decode_num_accepted_tokens_created{{{m}}} 1.7e9",
                 *(f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",model_name="m",position="{i}"}} {v}'
                   for i, v in enumerate(per_pos)),
                 f"vllm:prefix_cache_queries_total{{{m}}} 100", f"vllm:prefix_cache_hits_total{{{m}}} 25",
                 f"vllm:kv_cache_usage_perc{{{m}}} {kv}", "# HELP vllm:x y"]
        return "\n".join(lines)

    before = Snapshot.of(text(1.0, {"0.3": 10, "0.5": 10, "+Inf": 10}, 10, 5, [3, 1, 1, 0], 0.1))
    after = Snapshot.of(text(1.5, {"0.3": 15, "0.5": 19, "+Inf": 20}, 10 + 1730 // 4, 5 + 1129, [3 + 357, 1 + 294,
                                                                                               1 + 248, 0 + 230], 0.2))
    out = server_figures(before, after, kv_peak=0.7)
    assert out["server_kind"] == "vllm"
    assert out["server_queue_ms_mean"] == pytest.approx(500 / 10)  # 0.5 s over 10 requests
    assert out["server_queue_ms_p50_le"] == 300.0 and out["server_queue_ms_p99_le"] == math.inf
    drafts = 1730 // 4
    assert out["server_drafts"] == drafts and out["server_k"] == 4
    assert out["mean_accepted_tokens"] == pytest.approx(1 + 1129 / drafts)
    assert out["acceptance_by_position"] == "|".join(f"{v / drafts:.3f}" for v in (357, 294, 248, 230))
    assert out["acceptance_rate"] == pytest.approx(1129 / (drafts * 4))
    assert "prefix_cache_hit_rate" not in out  # no new queries during the load: no rate, not 0
    assert out["kv_cache_usage_peak"] == 0.7


def test_a_server_command_flag_carries_a_json_speculative_config(tmp_path):
    from bench.cli import config_dict, parser
    from engines.server.spec import server_drafting

    spec = '{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}'
    plain = "vllm serve {model} --port {port}"
    args = parser().parse_args(["--engine", "server", "--server-command", f"{plain},{plain} --speculative-config '{spec}'"])
    commands = config_dict(args)["server_command"]
    assert commands == [plain, f"{plain} --speculative-config '{spec}'"]
    assert server_drafting(commands[0]) == {}
    assert server_drafting(commands[1]) == {"method": "ngram", "k": 4, "draft_model": ""}
    assert server_drafting("python -m sglang.launch_server --speculative-algorithm EAGLE3 "
                           "--speculative-num-draft-tokens 4 --speculative-draft-model-path h") == \
        {"method": "eagle3", "k": 4, "draft_model": "h"}
    from decoding.options import split_list

    assert split_list("it's,fine") == ["it's", "fine"]  # an apostrophe in plain text: every comma still splits

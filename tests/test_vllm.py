"""Against a real vLLM (CPU) with ngram drafting, started once for this module on the tiny target: greedy texts equal
the in-process hf engine's, drafting figures equal the server's own /metrics deltas, the server-side columns are
filled, per-request figures reach requests.jsonl, and beam search gives a row. Needs scripts/setup-vllm.sh's build
(tests/fixtures/vllm.py: skipped without it, failed under CI)."""
import json
import math

import httpx
import pytest

from fixtures.vllm import MODEL, NGRAM, require_vllm, serve_command, start

PROMPTS = [  # code, so that prompt lookup finds n-grams to draft from
    "import os\n\n\ndef find_python_files(root):\n    \"\"\"Return the paths of all .py files below root.\"\"\"\n"
    "    result = []\n    for dirpath, dirnames, filenames in os.walk(root):\n        for",
    "def gcd(a, b):\n    \"\"\"What is the greatest common divisor of a and b?\n\n    >>> gcd(12, 18)\n    6\n    \"\"\"\n"
    "    while",
]
TOKENS = 24
PROBE_TOKENS = 16  # the session's first request, which picks the request dialect (engines/server/session.py)


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    require_vllm()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    process, endpoint = start(serve_command("--enable-per-request-metrics", f"--speculative-config '{NGRAM}'"), log)
    yield endpoint
    process.stop()


def spec_counters(endpoint: str) -> dict:
    from metrics.server_metrics import SERVER_METRICS, by_label, parse, total

    samples = parse(httpx.get(endpoint[:-3] + "/metrics", timeout=10).text)
    names = SERVER_METRICS["vllm"]
    out = {role: total(samples, names.counters[role]) for role in ("drafts", "draft_tokens", "accepted")}
    out.update({f"pos{p}": v for p, v in by_label(samples, names.per_position, "position").items()})
    return out


def probe_again(endpoint: str, prompt: str) -> None:
    """The session's dialect probe, sent once more: greedy and deterministic, it drafts what the first one did."""
    body = {"model": MODEL, "prompt": prompt, "max_tokens": PROBE_TOKENS, "stream": True, "temperature": 0.0,
            "ignore_eos": True, "min_tokens": PROBE_TOKENS,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    with httpx.stream("POST", endpoint + "/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for _ in response.iter_lines():
            pass


@pytest.fixture(scope="module")
def greedy_run(vllm, tmp_path_factory):
    """hf and the ngram vLLM on the same prompts, greedy; /metrics read by the test itself around the run."""
    from bench.config import Config
    from bench.runner import run_all

    results = tmp_path_factory.mktemp("run") / "runs.csv"
    config = Config.from_dict(dict(
        model="tiny/target", draft_model=None, methods=["standard"], engine=["hf", "server"], endpoint=vllm,
        prompts=PROMPTS, max_new_tokens=TOKENS, device="cpu", dtype="float32", concurrency=[2], num_requests=8,
        warmup_requests=0, results=str(results)))
    before = spec_counters(vllm)
    rows = run_all(config)
    after = spec_counters(vllm)
    probe_again(vllm, PROMPTS[0])
    probe = spec_counters(vllm)
    load = {k: (after[k] - before[k]) - (probe[k] - after[k]) for k in after}  # the load's own, the probe taken out
    return config, rows, load


def test_greedy_texts_of_vllm_equal_the_in_process_ones(greedy_run):
    _, rows, _ = greedy_run
    hf, server = rows
    assert hf["status"] == "ok" and server["status"] == "ok", server["error"]
    assert server["greedy_match"] == 1.0  # ngram drafting is lossless, and float32 rounds as hf does


def test_ngram_drafting_figures_equal_the_servers_metrics_deltas(greedy_run):
    _, (_, row), load = greedy_run
    assert load["drafts"] > 0, "the prompts gave ngram nothing to draft: the test proves nothing"
    assert row["drafted_tokens"] == load["draft_tokens"] and row["accepted_tokens"] == load["accepted"]
    assert row["server_drafts"] == load["drafts"]
    assert row["mean_accepted_tokens"] == pytest.approx(1 + load["accepted"] / load["drafts"])
    positions = [float(v) for v in row["acceptance_by_position"].split("|")]
    assert positions == pytest.approx([load[f"pos{p}"] / load["drafts"] for p in range(4)], abs=5e-4)
    # The server's k and method, not the client's prompt-lookup default; endpoint rows read k off the counters.
    assert row["server_k"] == 4 and row["num_draft_tokens"] == 4
    assert row["acceptance_rate"] == pytest.approx(load["accepted"] / load["draft_tokens"])


def test_server_side_columns_and_per_request_figures(greedy_run):
    from metrics.serving import RequestRecord
    from store import archive
    from store.requests import load_requests

    config, (_, row), _ = greedy_run
    assert row["server_kind"] == "vllm"
    for role in ("queue", "ttft", "itl", "e2e"):
        assert row[f"server_{role}_ms_mean"] >= 0, role
        assert row[f"server_{role}_ms_p99_le"] >= row[f"server_{role}_ms_p50_le"] > 0, role
    assert 0 < row["server_ttft_ms_mean"] < row["server_e2e_ms_mean"]
    assert row["preemptions"] == 0 and 0 <= row["prefix_cache_hit_rate"] <= 1
    assert 0 < row["kv_cache_usage_peak"] <= 1  # sampled during the load, so above the idle 0
    # The client's TTFT holds the server's and the HTTP/SSE path around it.
    assert row["ttft_ms_median"] >= row["server_ttft_ms_median"] > 0
    assert row["client_ttft_overhead_ms"] == row["client_ttft_overhead_ms"]
    records = [RequestRecord.from_json(r) for r in load_requests(config.results, {archive.row_key(row)})]
    assert len(records) == 8
    for r in records:
        assert r.output_tokens == TOKENS and sum(n for _, n in r.events) == TOKENS  # reconciled with the usage
        assert {"queue_time_ms", "time_to_first_token_ms", "generation_time_ms"} <= set(r.server)
        assert r.queue == pytest.approx(r.server["queue_time_ms"] / 1000)
    assert row["queue_ms_median"] == row["queue_ms_median"]
    # An ngram server sends several tokens per event: per event the gaps are fewer and longer than per token.
    assert row["itl_event_ms_median"] >= row["itl_ms_median"]


def test_beam_search_on_vllm_returns_num_return_sequences_of_num_beams(vllm, tmp_path):
    from bench.config import Config
    from bench.runner import run_all
    from metrics.serving import RequestRecord
    from store.requests import load_requests

    config = Config.from_dict(dict(
        model="tiny/target", draft_model=None, methods=["beam_search"], num_beams=4, num_return_sequences=2,
        engine=["server"], endpoint=vllm, prompts=PROMPTS[1:], max_new_tokens=12, device="cpu", dtype="float32",
        concurrency=[1], num_requests=3, warmup_requests=0, results=str(tmp_path / "runs.csv")))
    (row,) = run_all(config)
    assert row["status"] == "ok", row["error"]
    assert row["num_beams"] == 4 and row["num_return_sequences"] == 2
    assert row["new_tokens"] == 2 * 12  # the two kept beams' tokens
    assert row["e2e_ms_median"] > 0 and row["request_throughput"] > 0 and row["output_tokens_per_s"] > 0
    assert math.isnan(row["ttft_ms_median"]) and math.isnan(row["itl_ms_median"])  # no stream, no TTFT
    assert "non-streaming" in row["notes"]
    for r in (RequestRecord.from_json(x) for x in load_requests(config.results)):
        assert r.server == {"beams_returned": 4, "beams_kept": 2}
    texts = [json.loads(line) for line in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    assert texts and texts[0]["text"]


def test_sessions_on_vllm_reuse_the_prefix_cache(vllm, tmp_path):
    """Multi-turn sessions on the real server: every turn answered, and turn k's prompt, the whole history so far,
    hits vLLM's prefix cache (its own counters, read over the load), which a single-turn load barely does."""
    from collections import defaultdict

    from bench.config import Config
    from bench.runner import run_all
    from store import archive
    from store.requests import load_requests

    # vLLM CPU caches whole blocks of 128 tokens: a system prompt of a few blocks gives every later turn some.
    context = " ".join(["The project reads a JSON config, validates every key and measures each method."] * 24)
    dataset = tmp_path / "sessions.jsonl"
    dataset.write_text("".join(json.dumps({"system": f"{context} Session {i}.", "turns": [
        {"user": f"Write function {i}.", "output_tokens": 8}, {"user": "Shorter.", "output_tokens": 8},
        {"user": "Add a test.", "output_tokens": 8}]}) + "\n" for i in range(4)))
    config = Config.from_dict(dict(
        model="tiny/target", draft_model=None, methods=["standard"], engine=["server"], endpoint=vllm,
        workload="sessions", dataset=str(dataset), num_requests=4, concurrency=[2],
        warmup_requests=0, max_new_tokens=8, results=str(tmp_path / "runs.csv")))
    (row,) = run_all(config)
    assert row["status"] == "ok", row["error"]
    assert row["sessions"] == 4 and row["turns"] == 12 and row["failed_requests"] == 0
    assert len(row["ttft_ms_by_turn"].split()) == 3
    turns = defaultdict(list)
    for r in load_requests(config.results, {archive.row_key(row)}):
        turns[r["session"]].append(r["turn"])
    assert sorted(sorted(t) for t in turns.values()) == [[0, 1, 2]] * 4
    # Every turn after the first repeats its session's history, whole blocks of it cached.
    assert row["prefix_cache_hit_rate"] > 0.3

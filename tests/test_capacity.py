"""The capacity search against a queue whose capacity is known in closed form, and the drafting crossover chart.

The queue: one server, first come first served, a fixed service time D, Poisson arrivals at rate λ (M/D/1). A
request's TTFT is its wait W plus the time to its first token. The wait's distribution (Erlang; Crommelin):

    P(W <= t) = (1 - ρ) Σ_{k=0}^{⌊t/D⌋} [λ(kD - t)]^k / k! · e^{-λ(kD - t)},   ρ = λD < 1

The analytic capacity at a TTFT target is the λ at which P(W <= target - first token time) = 0.9 (p90), found by
bisection on λ. With the target at 2D the queue is at ρ ≈ 0.59 there: its waits decorrelate within a few
requests, so a few hundred requests per probe tell 15% apart.
"""
import math
import sys

import pandas as pd
import pytest

from conftest import ROOT

SERVICE_MS, FIRST_MS = 10.0, 1.0  # the serial server: first token 1 ms into service, then 12 tokens of 0.75 ms
SERIAL = (f"{sys.executable} {ROOT / 'tests' / 'fixtures' / 'known_delay_server.py'} --port {{port}} --serial "
          f"--role-ms 0 --ttft-ms {FIRST_MS} --token-ms {(SERVICE_MS - FIRST_MS) / 12}")


def wait_cdf(t: float, rate: float, service: float) -> float:
    rho = rate * service
    if rho >= 1:
        return 0.0
    return (1 - rho) * sum((rate * (k * service - t)) ** k / math.factorial(k) * math.exp(-rate * (k * service - t))
                           for k in range(int(math.floor(t / service + 1e-12)) + 1))


def analytic_capacity(t: float, service: float, share: float = 0.9) -> float:
    lo, hi = 0.0, 1 / service
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if wait_cdf(t, mid, service) >= share else (lo, mid)
    return lo


def test_the_wait_formula_matches_a_long_simulated_queue():
    assert wait_cdf(0.125, 32.0, 0.025) == pytest.approx(0.8995, abs=0.001)
    records = simulated(rate_load(32.0), 20000, seed=1, service=0.025)
    share = sum(r.first_token - r.sent <= 0.125 + FIRST_MS / 1000 for r in records) / len(records)
    assert share == pytest.approx(0.8995, abs=0.02)


# --- a simulated M/D/1 queue, fed to the same Search (and bound) the scenario runs ----------------------------

def rate_load(rate):
    from scenarios.workload import Load

    return Load(rate=rate)


def simulated(load, n: int, seed: int, service: float = SERVICE_MS / 1000):
    """The records the serial server would give: arrivals from the load generator's own schedule (open loop) or
    back to back (concurrency 1), served one at a time."""
    from metrics.serving import RequestRecord
    from scenarios.arrivals import schedule

    arrivals = None if load.concurrency else schedule(n, load.rate, 1.0, seed)
    out, free = [], 0.0
    for i in range(n):
        sent = free if arrivals is None else arrivals[i]
        start = max(sent, free)
        free = start + service
        first = start + FIRST_MS / 1000
        times = [first + (free - first) * j / 12 for j in range(13)]
        out.append(RequestRecord(i, i % 2, sent, sent=sent, first_token=first, token_times=times, end=free,
                                 output_tokens=13, status="ok"))
    return out


def simulated_search(seed: int, n: int, slo_ttft_ms: float, tolerance=0.05, budget=10):
    from scenarios.capacity import Search

    search = Search(0.9, tolerance, budget)
    while (load := search.next()) is not None:
        search.add(load, simulated(load, n, seed), slo_ttft_ms, 0.0, seed=seed)
    return search


def test_the_lower_bound_holds_the_analytic_capacity_in_17_of_20_seeded_searches():
    """20 searches on simulated M/D/1 records (not 20 real ones, to stay cheap): the bound is computed by the same
    Search.result -> metrics.capacity.capacity / attainment_interval the scenario uses on real probes."""
    service = SERVICE_MS / 1000
    truth = analytic_capacity(2 * service, service)
    results = [simulated_search(seed, 300, 2 * SERVICE_MS + FIRST_MS).result() for seed in range(20)]
    below = sum(r["capacity_rps_ci_low"] <= truth for r in results)
    assert below >= 17, [round(r["capacity_rps_ci_low"] / truth, 2) for r in results]
    assert all(r["capacity_probes"] <= 10 for r in results)


def test_the_search_stops_within_its_budget_and_says_so():
    search = simulated_search(0, 100, 2 * SERVICE_MS + FIRST_MS, tolerance=0.001, budget=4)
    assert len(search.probes) == 4 and search.result()["capacity_probes"] == 4
    assert search.probes[0].load.concurrency == 1 and all(p.load.rate for p in search.probes[1:])
    assert any("budget spent" in n for n in search.notes())
    hopeless = simulated_search(0, 50, FIRST_MS / 2)  # no request gets its first token that soon, even alone
    assert len(hopeless.probes) == 1 and hopeless.result()["capacity_rps"] == 0.0


# --- the same by concurrency: a simulated closed loop, N clients and one server -------------------------------

def closed_loop(clients: int, n: int, seed: int, service: float = SERVICE_MS / 1000, jitter: float = 0.02):
    """N clients, each sending its next request when its last one ends, served one at a time (service times within
    ±jitter of D): past the first N, every request waits for the N - 1 ahead of it, about (N - 1)·D."""
    import random

    from metrics.serving import RequestRecord

    rng, out, ends, free = random.Random(seed), [], [], 0.0
    for i in range(n):
        sent = 0.0 if i < clients else ends[i - clients]
        start = max(sent, free)
        free = start + service * (1 + rng.uniform(-jitter, jitter))
        ends.append(free)
        first = start + FIRST_MS / 1000
        times = [first + (free - first) * j / 12 for j in range(13)]
        out.append(RequestRecord(i, i % 2, sent, sent=sent, first_token=first, token_times=times, end=free,
                                 output_tokens=13, status="ok"))
    return out


def concurrency_search(seed: int, n: int, slo_ttft_ms: float, budget=10):
    from scenarios.capacity import Search

    search = Search(0.9, 0.05, budget, by="concurrency")
    while (load := search.next()) is not None:
        assert load.concurrency >= 1 and not load.rate
        search.add(load, closed_loop(load.concurrency, n, seed), slo_ttft_ms, 0.0, seed=seed)
    return search


@pytest.mark.parametrize("waits", [0, 2, 5, 12])
def test_the_concurrency_search_finds_the_closed_loop_capacity(waits):
    """TTFT = (N - 1)·D + first token time; a target half a service time past `waits` waits admits N = waits + 1."""
    truth = waits + 1
    slo = (waits + 0.5) * SERVICE_MS + FIRST_MS
    for seed in range(3):
        search = concurrency_search(seed, 200, slo)
        result = search.result()
        assert abs(result["capacity_concurrency"] - truth) <= 1, (seed, result)
        assert result["capacity_concurrency_ci_low"] <= result["capacity_concurrency"]
        assert result["capacity_probes"] == len(search.probes) <= 10
        assert "capacity_rps" not in result and not search.notes()
        levels = [p.load.concurrency for p in search.probes]
        assert levels[0] == 1 and len(set(levels)) == len(levels)


def test_the_concurrency_search_stops_within_its_budget_and_says_so():
    search = concurrency_search(0, 100, 40.5 * SERVICE_MS + FIRST_MS, budget=4)
    assert [p.load.concurrency for p in search.probes] == [1, 2, 4, 8]
    assert search.result()["capacity_concurrency"] == 8.0
    assert any("every concurrency probed met" in n for n in search.notes())
    bracket = concurrency_search(0, 100, 5.5 * SERVICE_MS + FIRST_MS, budget=5)  # 1, 2, 4, 8 (missed), 6
    assert [p.load.concurrency for p in bracket.probes] == [1, 2, 4, 8, 6]
    assert any("budget spent" in n for n in bracket.notes())
    hopeless = concurrency_search(0, 50, FIRST_MS / 2)
    assert len(hopeless.probes) == 1 and hopeless.result()["capacity_concurrency"] == 0.0


def test_capacity_by_is_an_option_and_needs_capacity():
    from bench.config import Config, ConfigError
    from scenarios.workload import check_load

    base = dict(model="tiny/target", methods=["standard"], engine=["hf"], prompts=["Hi"], slo_ttft_ms=50.0)
    assert Config.from_dict(base, check_models=False).capacity_by == "rate"
    config = Config.from_dict({**base, "capacity": True, "capacity_by": "concurrency"}, check_models=False)
    assert config.capacity_by == "concurrency" and check_load(config) is None
    with pytest.raises(ConfigError):
        Config.from_dict({**base, "capacity": True, "capacity_by": "batch"}, check_models=False)
    with pytest.raises(ConfigError, match="capacity_by"):
        Config.from_dict({**base, "capacity_by": "concurrency"}, check_models=False)


# --- one real search, over HTTP, against the serial known-delay server ---------------------------------------

def test_capacity_search_finds_the_md1_rate_within_15_percent(tmp_path):
    from bench.config import Config
    from bench.runner import run_all
    from store import archive

    config = Config.from_dict(dict(
        model="tiny/target", methods=["standard"], engine=["server"], server_command=[SERIAL], prompts=["Hi"],
        max_new_tokens=13, num_requests=300, warmup_requests=2, slo_ttft_ms=2 * SERVICE_MS + FIRST_MS,
        slo_tpot_ms=0.0, capacity=True, capacity_tolerance=0.05, capacity_max_probes=10,
        results=str(tmp_path / "runs.csv")))
    rows = run_all(config)
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert 3 <= len(rows) <= 10 and [r["capacity_probe"] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0]["concurrency"] == 1 and all(r["request_rate"] for r in rows[1:])
    assert all(f"capacity probe {k}: " in r["setting"] for k, r in enumerate(rows, 1))
    last = rows[-1]
    assert last["capacity_probes"] == len(rows) and all(math.isnan(r["capacity_rps"]) for r in rows[:-1])
    # The analytic rate: the server holds its lock SERVICE_MS per request (the queue's D); the time from send to the
    # first token with no wait (HTTP both ways, the first chunk) is what the synchronous probe measured, and leaves
    # slo - that for the wait W in the formula above. Client-side overhead outside the lock does not queue.
    first = rows[0]["ttft_ms_median"] / 1000
    truth = analytic_capacity(config.slo_ttft_ms / 1000 - first, SERVICE_MS / 1000)
    assert last["capacity_rps"] == pytest.approx(truth, rel=0.15), (last["capacity_rps"], truth)
    assert last["capacity_rps_ci_low"] <= last["capacity_rps"]
    stored = archive.load_rows(config.results)
    assert {"capacity_rps", "capacity_rps_ci_low"} <= set(stored.columns)
    from views import charts

    fig = charts.capacity(stored)
    assert len(fig.data) >= 2 and any(s["line"]["dash"] == "dash" for s in fig.layout.shapes)


# --- where drafting stops paying --------------------------------------------------------------------------------

def drafting_rows(highs):
    from decoding import METHODS

    method = next(n for n, s in METHODS.items() if s.drafts)
    rows = []
    for rate, high in zip((1, 4, 16, 64), highs):
        rows.append({"status": "ok", "run_id": "r1", "timestamp": "2025-01-01T00:00:00+00:00", "engine": "hf", "method": method, "setting": f"greedy, rate={rate}",
                     "quantization": "none", "attention": "sdpa", "request_rate": rate, "concurrency": "",
                     "batch_size": 1, "output_tokens_per_s": 10.0,
                     "load_speedup_tpot": high - 0.1, "load_speedup_tpot_ci_low": high - 0.2,
                     "load_speedup_tpot_ci_high": high,
                     "load_speedup_tokens_per_s": 1.2, "load_speedup_tokens_per_s_ci_low": 1.1,
                     "load_speedup_tokens_per_s_ci_high": 1.3})
    return pd.DataFrame(rows)


def test_the_first_load_point_whose_speedup_interval_falls_below_1_is_marked():
    from views import charts, load_decisions

    (series,) = load_decisions.crossover(drafting_rows([1.6, 1.05, 0.95, 0.7]))
    assert series["loads"] == ["1", "4", "16", "64"]
    assert series["tpot"]["first_below"] == 2  # rate 16: 0.95 < 1; rate 4's interval holds 1
    assert series["tokens_per_s"]["first_below"] is None
    fig = charts.drafting_under_load(drafting_rows([1.6, 1.05, 0.95, 0.7]))
    marks = [s for s in fig.layout.shapes if s["x0"] == s["x1"]]
    assert [m["x0"] for m in marks] == ["16"]
    (never,) = load_decisions.crossover(drafting_rows([1.6, 1.5, 1.4, 1.3]))
    assert never["tpot"]["first_below"] is None


def test_drafting_rows_are_paired_by_request_with_the_plain_row():
    from metrics.load_speedup import speedups
    from metrics.serving import RequestRecord

    def recs(tpot):
        return [RequestRecord(i, i, 0.0, sent=0.0, first_token=0.1, token_times=[], end=0.1 + tpot * 9,
                              output_tokens=10, status="ok") for i in range(6)]

    out = speedups(recs(0.02), recs(0.01))
    assert out["load_speedup_tpot"] == pytest.approx(2.0) and out["load_speedup_pairs"] == 6
    assert out["load_speedup_tpot_ci_low"] == pytest.approx(2.0)


def test_a_concurrency_search_is_drawn_along_concurrency():
    """A closed-loop search's probes are drawn by requests in flight, its capacity marked there."""
    import pandas as pd

    from views import charts

    base = {"status": "ok", "run_id": "r", "timestamp": "2026-12-01T00:00:00+00:00", "engine": "continuous",
            "method": "standard", "quantization": "none", "attention": "sdpa", "capacity_target": 0.9,
            "request_rate": float("nan"), "batch_size": 1, "do_sample": False, "model": "m", "dtype": "float32",
            "device": "cpu", "unstable": False, "notes": ""}
    rows = [dict(base, setting=f"greedy, capacity probe {k}: concurrency={n}", concurrency=n, capacity_probe=k,
                 slo_attainment=a, slo_attainment_ci_low=a - 0.05, slo_attainment_ci_high=min(1.0, a + 0.05))
            for k, (n, a) in enumerate([(1, 1.0), (2, 1.0), (4, 1.0), (8, 0.5), (6, 0.95)], 1)]
    rows[-1].update(capacity_concurrency=6.0, capacity_concurrency_ci_low=4.0, capacity_probes=5)
    fig = charts.capacity(pd.DataFrame(rows))
    assert fig.layout.xaxis.title.text == "requests in flight" and "concurrency" in fig.layout.title.text
    assert list(fig.data[1].x) == [1, 2, 4, 6, 8]
    assert sorted(round(s.x0, 1) for s in fig.layout.shapes if s.x0) == [4.0, 6.0]

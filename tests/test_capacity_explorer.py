"""The SLO explorer recomputes each capacity search's capacity from the probe rows' requests.jsonl for any targets,
with metrics/capacity.py as the search used, so at the run's own targets it gives the run's own numbers."""
import math

import pytest

SLO_TTFT_MS, SLO_TPOT_MS = 100.0, 20.0


def probe_records(rate: float, n: int = 16):
    """Requests whose TTFT grows with the rate (spread over a factor of three), 0.1 s apart."""
    from metrics.serving import RequestRecord

    out = []
    for i in range(n):
        sent, ttft = 0.1 * i, 0.01 + 0.005 * rate * (0.5 + (i * 7 % n) / (n - 1))
        times = [sent + ttft + 0.01 * j for j in range(5)]
        out.append(RequestRecord(i, i % 2, scheduled=sent, sent=sent, first_token=times[0], token_times=times,
                                 end=times[-1], prompt_tokens=7, output_tokens=5, status="ok", queue=0.0))
    return out


@pytest.fixture
def capacity_results(tmp_path):
    """One capacity search driven by scenarios.capacity.Search, its probe rows and requests stored as a run's, and
    one plain load row that is no probe."""
    from metrics.capacity import target_share
    from metrics.rows import COLUMNS
    from metrics.serving import LoadFigures
    from scenarios.capacity import Search, label
    from scenarios.workload import Load
    from store import archive
    from store.requests import append_requests

    path = tmp_path / "runs.csv"
    search = Search(target_share(90.0, 1.0), 0.1, 8)
    rows, load, k = [], Load(concurrency=1), 1
    while load is not None:
        recs = probe_records(load.rate)
        probe = search.add(load, recs, SLO_TTFT_MS, SLO_TPOT_MS, seed=0)
        row = {c: math.nan for c in COLUMNS}
        row.update(run_id="r1", timestamp="2026-11-26T00:00:00+00:00", status="ok", error="", method="standard",
                   setting=label("greedy", k, load), engine="continuous", quantization="none", attention="sdpa",
                   concurrency=load.concurrency or "", request_rate=load.rate or "", notes="")
        row.update(LoadFigures.figures(recs, SLO_TTFT_MS, SLO_TPOT_MS))
        row.update(capacity_probe=k, slo_attainment=probe.share, slo_attainment_ci_low=probe.low,
                   slo_attainment_ci_high=probe.high, capacity_target=search.target)
        rows.append((row, recs))
        load, k = search.next(), k + 1
    rows[-1][0].update(search.result())
    plain = {**rows[1][0], "setting": "greedy, rate=3", "request_rate": 3.0, **{c: math.nan for c in (
        "capacity_probe", "slo_attainment", "capacity_target", "capacity_rps", "capacity_rps_ci_low")}}
    rows.append((plain, probe_records(3.0)))
    for row, recs in rows:
        append_requests(path, row, [r.to_json() for r in recs])
        archive.append_row(path, row)
    return path, search.result(), len(rows) - 1


def test_capacity_is_recomputed_from_the_probe_rows_requests(capacity_results):
    from bench.dashboard import slo_page

    path, stored, probes = capacity_results
    assert probes >= 3 and stored["capacity_rps"] > 0
    rows = slo_page.load_rows_of(path)
    by_row = slo_page.records_by_row(path, rows)
    same = slo_page.capacities(rows, by_row, SLO_TTFT_MS, SLO_TPOT_MS)
    assert len(same) == 1  # one search; the plain load row is no probe
    got = same.iloc[0]
    assert got["probes"] == probes and got["search"] == "greedy"
    assert got["capacity now (req/s)"] == pytest.approx(stored["capacity_rps"])
    assert got["its 95% bound now"] == pytest.approx(stored["capacity_rps_ci_low"])
    assert got["capacity at the run's SLOs (req/s)"] == pytest.approx(stored["capacity_rps"])
    assert got["its 95% bound"] == pytest.approx(stored["capacity_rps_ci_low"])

    loose = slo_page.capacities(rows, by_row, 2 * SLO_TTFT_MS, SLO_TPOT_MS).iloc[0]
    tight = slo_page.capacities(rows, by_row, SLO_TTFT_MS / 2, SLO_TPOT_MS).iloc[0]
    assert loose["capacity now (req/s)"] >= got["capacity now (req/s)"] >= tight["capacity now (req/s)"]
    assert loose["capacity now (req/s)"] > tight["capacity now (req/s)"]
    assert loose["its 95% bound now"] >= got["its 95% bound now"] >= tight["its 95% bound now"]
    none = slo_page.capacities(rows, by_row, 1.0, SLO_TPOT_MS).iloc[0]  # even one request at a time misses
    assert none["capacity now (req/s)"] == 0 and none["its 95% bound now"] == 0


def test_no_capacity_table_without_probe_rows(tmp_path):
    from bench.dashboard import slo_page

    rows = slo_page.load_rows_of(tmp_path / "missing.csv")
    assert list(slo_page.capacities(rows, {}, 100.0, 20.0).columns) == slo_page.CAPACITY_COLUMNS
    assert slo_page.capacities(rows, {}, 100.0, 20.0).empty


def test_slo_page_shows_the_capacity_table(capacity_results):
    import threading

    import gradio as gr

    from bench.dashboard.shared import AppContext
    from bench.dashboard.slo_page import SloPage

    path, stored, _ = capacity_results
    with gr.Blocks():
        page = SloPage(AppContext(path.resolve(), threading.Lock()))
    shown = page.show_capacity("r1", SLO_TTFT_MS, SLO_TPOT_MS)
    assert shown["visible"] and shown["value"].iloc[0]["capacity now (req/s)"] == pytest.approx(stored["capacity_rps"])
    assert not page.show_capacity(None, SLO_TTFT_MS, SLO_TPOT_MS)["visible"]

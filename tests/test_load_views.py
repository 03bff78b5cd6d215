"""Views of load rows: the SLO explorer recomputes goodput from requests.jsonl for any target, the charts draw the
SLOs, and the CLI table shows the load columns. Rows and records are written through the store, no model runs."""
import math

import pytest


def records(first_token_s: list[float], tokens: int = 5, gap_s: float = 0.01):
    from metrics.serving import RequestRecord

    out = []
    for i, ttft in enumerate(first_token_s):
        sent = 0.1 * i
        times = [sent + ttft + gap_s * j for j in range(tokens)]
        out.append(RequestRecord(i, i % 2, scheduled=sent, sent=sent, first_token=times[0], token_times=times,
                                 end=times[-1], prompt_tokens=7, output_tokens=tokens, status="ok", queue=0.0))
    return out


@pytest.fixture
def load_results(tmp_path):
    """Two load rows of one run in runs.csv, with their requests in requests.jsonl."""
    from store import archive
    from store.requests import append_requests
    from metrics.rows import COLUMNS
    from metrics.serving import LoadFigures

    path = tmp_path / "runs.csv"
    rows = []
    for rate, ttfts in ((2.0, [0.05, 0.06, 0.07, 0.08]), (8.0, [0.05, 0.2, 0.4, 0.6])):
        recs = records(ttfts)
        row = {c: math.nan for c in COLUMNS}
        row.update(run_id="r1", timestamp="2026-11-26T00:00:00+00:00", status="ok", error="", method="standard",
                   setting=f"greedy, rate={rate:g}", engine="continuous", quantization="none", attention="sdpa",
                   concurrency="", request_rate=rate, notes="")
        row.update(LoadFigures.figures(recs, 100.0, 20.0))
        append_requests(path, row, [r.to_json() for r in recs])
        archive.append_row(path, row)
        rows.append(row)
    return path, rows


def test_slo_explorer_recomputes_goodput_from_requests(load_results):
    from bench.dashboard import slo_page

    path, rows = load_results
    df = slo_page.load_rows_of(path)
    assert slo_page.run_choices(df) == [("r1", "r1")]
    by_row = slo_page.records_by_row(path, df)
    assert sorted(len(v) for v in by_row.values()) == [4, 4]
    same = slo_page.recomputed(df, by_row, 100.0, 20.0)
    assert sorted(same["goodput"]) == pytest.approx(sorted(r["goodput"] for r in rows), rel=1e-5)
    loose = slo_page.recomputed(df, by_row, 0.0, 0.0)  # no target: every finished request counts
    assert sorted(loose["goodput"]) == pytest.approx(sorted(r["request_throughput"] for r in rows), rel=1e-5)
    strict = slo_page.recomputed(df, by_row, 55.0, 20.0)  # one request per row has TTFT <= 55 ms
    assert list(strict["goodput"] * strict["duration_s"].astype(float)) == pytest.approx([1.0, 1.0])
    table = slo_page.table_of(strict)
    assert list(table["requests"]) == [4, 4] and (table["share within"] <= 1).all()
    ttft_max, tpot_max = slo_page.slider_limits(by_row)
    assert ttft_max >= 600 and tpot_max >= 10


def test_slo_sliders_span_the_runs_percentiles_not_one_outlier():
    """One request of 40 s among 200 of about 100 ms made 500 ms a sliver of a 0..50,000 ms slider."""
    from bench.dashboard import slo_page

    by_row = {"r": records([0.1 + 0.001 * (i % 50) for i in range(199)] + [40.0])}
    ttft_max, _ = slo_page.slider_limits(by_row)
    assert 150 <= ttft_max <= 300  # 1.5 x the 99th percentile (about 150 ms), not 1.25 x 40,000 ms


def test_load_charts_draw_lines_slos_and_a_timeline(load_results):
    from views import charts
    from store import archive
    from store.requests import load_requests

    path, rows = load_results
    df = archive.load_rows(path)
    curve = charts.throughput_latency(df)
    assert len(curve.data) == 2 and curve.layout.shapes[0].y0 == 20.0  # TPOT view, its SLO line
    assert [b.label for b in curve.layout.updatemenus[0].buttons] == ["TPOT p90", "TTFT p90"]
    assert sorted(curve.data[0].text) == ["rate=2", "rate=8"]  # one line through both load points
    good = charts.goodput(df)
    assert "TTFT <= 100 ms" in good.layout.title.text and len(good.data) == 2
    timeline = charts.request_timeline(load_requests(path, {archive.row_key(rows[1])}))
    assert len(timeline.data) == 3 and len(timeline.data[0].y) == 4
    per_call = df.assign(request_throughput=float("nan"), output_tokens_per_s=float("nan"))
    assert "no load rows" in charts.throughput_latency(per_call).layout.annotations[0].text


def test_slo_page_builds_and_answers(load_results):
    import gradio as gr

    from bench.dashboard.shared import AppContext
    from bench.dashboard.slo_page import SloPage

    path, _ = load_results
    import threading

    with gr.Blocks():
        page = SloPage(AppContext(path.resolve(), threading.Lock()))
    assert page.refresh(None)["value"] == "r1"
    ttft, tpot, point, table, good, curve = page.show_run("r1")
    assert ttft["value"] == 100.0 and tpot["value"] == 20.0 and len(point["choices"]) == 2
    assert len(table) == 2 and len(good.data) == 2
    assert len(page.show_timeline("r1", point["value"]).data) == 3


def test_cli_table_shows_load_columns(load_results):
    from views.table import table

    _, rows = load_results
    text = table(rows)
    assert "req/s" in text and "goodput" in text and "TTFT p90" in text and "rate=8" in text

"""SLO explorer: move the TTFT and TPOT targets and see the goodput of every load point of a run recomputed from
requests.jsonl, without rerunning anything; and the requests of one load point as a timeline, so queueing shows.

Benchmarks usually fix their SLOs before the run; every request's times are kept here, so any target can be
asked after the fact. The recomputation is metrics.serving.goodput, the function that filled the CSV's column."""
from __future__ import annotations

import math

import gradio as gr
import pandas as pd

from bench.dashboard.shared import UI_ONLY, AppContext
from metrics.serving import RequestRecord, goodput, tpot_s, ttft_s
from store import archive
from store.requests import load_requests
from views import charts

TABLE_COLUMNS = ["engine", "method", "setting", "requests", "failed", "req/s", "goodput at the run's SLOs",
                 "goodput now", "share within"]


def load_rows_of(path) -> pd.DataFrame:
    """Finished load rows of the results file, newest run first."""
    try:
        df = archive.load_rows(path)
    except Exception:  # a broken or missing file: nothing to explore
        return pd.DataFrame(columns=archive.COLUMNS)
    if df.empty or "request_throughput" not in df:
        return df.iloc[0:0]
    df = df[pd.to_numeric(df["request_throughput"], errors="coerce").notna() & (df["status"].astype(str) == "ok")]
    return df.iloc[::-1]


def run_choices(rows: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(rows["run_id"].astype(str)))


def records_by_row(path, rows: pd.DataFrame) -> dict[str, list[RequestRecord]]:
    keys = {archive.row_key(r) for r in rows.to_dict("records")}
    out: dict[str, list[RequestRecord]] = {}
    for record in load_requests(path, keys):
        out.setdefault(record["row_key"], []).append(RequestRecord.from_json(record))
    return out


def slider_limits(records: dict[str, list[RequestRecord]]) -> tuple[float, float]:
    """Ranges that reach past the slowest request, so every goodput from 0 to all is reachable."""
    ttfts = [ttft_s(r) * 1000 for rs in records.values() for r in rs]
    tpots = [tpot_s(r) * 1000 for rs in records.values() for r in rs]
    top = lambda values, floor: max([v for v in values if v == v] + [floor]) * 1.25  # noqa: E731
    return math.ceil(top(ttfts, 10.0)), math.ceil(top(tpots, 1.0))


def recomputed(rows: pd.DataFrame, records: dict[str, list[RequestRecord]], slo_ttft_ms: float,
               slo_tpot_ms: float) -> pd.DataFrame:
    """The run's load rows with goodput and the SLO columns as these targets make them."""
    out = rows.copy()
    values = []
    for r in out.to_dict("records"):
        recs = records.get(archive.row_key(r), [])
        values.append(goodput(recs, slo_ttft_ms, slo_tpot_ms) if recs else float("nan"))
    out["goodput_at_run"] = pd.to_numeric(out["goodput"], errors="coerce")
    out["goodput"] = values
    out["slo_ttft_ms"], out["slo_tpot_ms"] = slo_ttft_ms, slo_tpot_ms
    return out


def table_of(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    throughput = pd.to_numeric(df["request_throughput"], errors="coerce")
    return pd.DataFrame({
        "engine": df["engine"], "method": df["method"], "setting": df["setting"],
        "requests": pd.to_numeric(df["requests"], errors="coerce").astype("Int64"),
        "failed": pd.to_numeric(df["failed_requests"], errors="coerce").astype("Int64"),
        "req/s": throughput.round(3), "goodput at the run's SLOs": df["goodput_at_run"].round(3),
        "goodput now": pd.to_numeric(df["goodput"], errors="coerce").round(3),
        "share within": (pd.to_numeric(df["goodput"], errors="coerce") / throughput).round(3),
    })


def target(value) -> float:
    """A row's SLO as a number; empty or missing is no target."""
    number = pd.to_numeric(value, errors="coerce")
    return float(number) if number == number and number is not None else 0.0


def point_label(row: dict) -> str:
    return f"{row['engine']} · {row['method']} [{row['setting']}]"


class SloPage:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        with gr.Tab("SLO explorer", id="slo", elem_id="slo-tab") as self.tab:
            gr.Markdown("Goodput of every load point of a run, recomputed from `requests.jsonl` for the targets "
                        "below (0 = no target). Nothing is rerun.", elem_id="slo-intro")
            with gr.Row():
                self.run = gr.Dropdown(label="Run", choices=[], elem_id="slo-run", scale=2)
                self.ttft = gr.Slider(0, 1000, value=0, step=1, label="TTFT target (ms)", elem_id="slo-ttft", scale=3)
                self.tpot = gr.Slider(0, 100, value=0, step=0.1, label="TPOT target (ms)", elem_id="slo-tpot", scale=3)
            self.table = gr.Dataframe(table_of(pd.DataFrame()), interactive=False, elem_id="slo-table")
            with gr.Row(equal_height=True):
                self.goodput = gr.Plot(charts.goodput(None), show_label=False, elem_id="slo-goodput")
                self.curve = gr.Plot(charts.throughput_latency(None), show_label=False, elem_id="slo-curve")
            self.point = gr.Dropdown(label="Load point for the request timeline", choices=[], elem_id="slo-point")
            self.timeline = gr.Plot(charts.request_timeline([]), show_label=False, elem_id="slo-timeline")
        self.wire()

    def wire(self) -> None:
        figures = [self.table, self.goodput, self.curve]
        self.tab.select(self.refresh, self.run, [self.run], **UI_ONLY)
        self.run.change(self.show_run, self.run, [self.ttft, self.tpot, self.point, *figures], **UI_ONLY)
        for slider in (self.ttft, self.tpot):
            slider.release(self.show_goodput, [self.run, self.ttft, self.tpot], figures, **UI_ONLY)
        self.point.change(self.show_timeline, [self.run, self.point], self.timeline, **UI_ONLY)

    def rows_of_run(self, run_id: str | None) -> pd.DataFrame:
        rows = load_rows_of(self.ctx.results_path)
        return rows[rows["run_id"].astype(str) == str(run_id)] if run_id else rows.iloc[0:0]

    def refresh(self, current):
        choices = run_choices(load_rows_of(self.ctx.results_path))
        value = current if current in choices else (choices[0] if choices else None)
        return gr.update(choices=choices, value=value)

    def show_run(self, run_id):
        rows = self.rows_of_run(run_id)
        records = records_by_row(self.ctx.results_path, rows)
        ttft_max, tpot_max = slider_limits(records)
        first = rows.to_dict("records")[0] if len(rows) else {}
        ttft, tpot = (target(first.get(k)) for k in ("slo_ttft_ms", "slo_tpot_ms"))
        labels = [point_label(r) for r in rows.to_dict("records")]
        return [gr.update(maximum=max(ttft_max, ttft), value=ttft), gr.update(maximum=max(tpot_max, tpot), value=tpot),
                gr.update(choices=labels, value=labels[0] if labels else None),
                *self.figures(rows, records, ttft, tpot)]

    def figures(self, rows, records, ttft, tpot) -> list:
        df = recomputed(rows, records, ttft or 0.0, tpot or 0.0)
        return [table_of(df), charts.goodput(df), charts.throughput_latency(df)]

    def show_goodput(self, run_id, ttft, tpot):
        rows = self.rows_of_run(run_id)
        return self.figures(rows, records_by_row(self.ctx.results_path, rows), ttft, tpot)

    def show_timeline(self, run_id, label):
        rows = [r for r in self.rows_of_run(run_id).to_dict("records") if point_label(r) == label]
        if not rows:
            return charts.request_timeline([])
        key = archive.row_key(rows[0])
        return charts.request_timeline(load_requests(self.ctx.results_path, {key}), f"Requests of {label}")

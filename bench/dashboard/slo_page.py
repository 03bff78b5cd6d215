"""SLO explorer: move the TTFT and TPOT targets and see the goodput of every load point of a run recomputed from
requests.jsonl, without rerunning anything; and the requests of one load point as a timeline, so queueing shows.

Benchmarks usually fix their SLOs before the run; every request's times are kept here, so any target can be
asked after the fact. The recomputation is metrics.serving.goodput, the function that filled the CSV's column."""
from __future__ import annotations

import math
import re

import gradio as gr
import pandas as pd

from bench.dashboard.shared import UI_ONLY, AppContext
from metrics.capacity import attainment, attainment_interval, capacity
from metrics.serving import RequestRecord, goodput, tpot_s, ttft_s
from store import archive, notebook
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


def run_choices(rows: pd.DataFrame, path=None) -> list[tuple[str, str]]:
    """(label, run_id) newest first, named as everywhere else (the notebook's name, else the id)."""
    ids = list(dict.fromkeys(rows["run_id"].astype(str)))
    if path is None or not ids:
        return [(i, i) for i in ids]
    labels = notebook.run_labels(notebook.apply_meta(rows, notebook.load_meta(path)))
    return [(str(labels.get(i, i)), i) for i in ids]


def records_by_row(path, rows: pd.DataFrame) -> dict[str, list[RequestRecord]]:
    keys = {archive.row_key(r) for r in rows.to_dict("records")}
    out: dict[str, list[RequestRecord]] = {}
    for record in load_requests(path, keys):
        out.setdefault(record["row_key"], []).append(RequestRecord.from_json(record))
    return out


def slider_limits(records: dict[str, list[RequestRecord]]) -> tuple[float, float]:
    """Ranges set from the run's own percentiles: 1.5 x the 99th percentile, so the targets that matter get the
    slider's length rather than one slow outlier (a target past it keeps at least 99% of the requests in)."""
    ttfts = [ttft_s(r) * 1000 for rs in records.values() for r in rs]
    tpots = [tpot_s(r) * 1000 for rs in records.values() for r in rs]

    def top(values, floor):
        values = sorted(v for v in values if v == v)
        return max(values[min(len(values) - 1, int(0.99 * len(values)))] if values else 0.0, floor) * 1.5

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


PROBE = re.compile(r"^(?P<base>.*?)(?:, )?capacity probe (?P<k>\d+): (?P<load>.*)$")  # scenarios/capacity.label
SEARCH_KEYS = ["run_id", "engine", "method", "model", "draft_model", "dtype", "quantization", "attention"]
CAPACITY_COLUMNS = ["engine", "method", "search", "probes", "target share", "capacity at the run's SLOs (req/s)",
                    "its 95% bound", "capacity now (req/s)", "its 95% bound now"]


def search_of(row: dict) -> tuple | None:
    """Which capacity search a probe row belongs to (None: not a probe): its run, engine, method, variant, the
    setting before "capacity probe k" and the server command it probed."""
    m = PROBE.match(str(row.get("setting", "")))
    if not m or not target(row.get("capacity_probe")) > 0:
        return None
    server = re.search(r"server=\d+", m["load"])
    return (*(str(row.get(k, "")) for k in SEARCH_KEYS), m["base"], server.group(0) if server else "")


def capacities(rows: pd.DataFrame, records: dict[str, list[RequestRecord]], slo_ttft_ms: float, slo_tpot_ms: float,
               seed: int = 0) -> pd.DataFrame:
    """Each capacity search's capacity and its one-sided 95% bound recomputed for these targets over the rates it
    probed, by metrics.capacity as the search does (the synchronous probe missing makes it 0; `seed` the run's
    config seed, 0 by default, which the bootstrap bound depends on); beside them the run's own."""
    searches: dict[tuple, list[dict]] = {}
    for r in rows.to_dict("records"):
        if (key := search_of(r)) is not None:
            searches.setdefault(key, []).append(r)
    out = []
    for key, probes in searches.items():
        probes.sort(key=lambda r: target(r.get("capacity_probe")))
        goal = next((target(r.get("capacity_target")) for r in probes if target(r.get("capacity_target"))), 0.0)
        measured = []  # (rate, attainment, its lower bound) per probe, rate 0 for the synchronous one
        for r in probes:
            recs = records.get(archive.row_key(r), [])
            low = attainment_interval(recs, slo_ttft_ms, slo_tpot_ms, seed=seed)[0] if recs else float("nan")
            measured.append((target(r.get("request_rate")), attainment(recs, slo_ttft_ms, slo_tpot_ms), low))
        sync = [share for rate, share, _ in measured if not rate]
        missed = sync and not (sync[0] == sync[0] and sync[0] >= goal)
        best, low = (0.0, 0.0) if missed else capacity([p for p in measured if p[0]], goal)
        last = probes[-1]
        out.append({"engine": last["engine"], "method": last["method"], "search": ", ".join(filter(None, key[-2:])) or "-",
                    "probes": len(probes), "target share": goal,
                    "capacity at the run's SLOs (req/s)": pd.to_numeric(last.get("capacity_rps"), errors="coerce"),
                    "its 95% bound": pd.to_numeric(last.get("capacity_rps_ci_low"), errors="coerce"),
                    "capacity now (req/s)": best, "its 95% bound now": low})
    return pd.DataFrame(out, columns=CAPACITY_COLUMNS)


def capacity_update(rows, records, ttft, tpot):
    df = capacities(rows, records, ttft or 0.0, tpot or 0.0)
    return gr.update(value=df, visible=not df.empty)


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
            self.capacity = gr.Dataframe(pd.DataFrame(columns=CAPACITY_COLUMNS), interactive=False, visible=False,
                                         label="Capacity searches at these targets, over the rates each probed",
                                         elem_id="slo-capacity")
            with gr.Row(equal_height=True):
                self.goodput = gr.Plot(charts.laid_out(charts.goodput(None)), show_label=False, elem_id="slo-goodput")
                self.curve = gr.Plot(charts.laid_out(charts.throughput_latency(None)), show_label=False,
                                     elem_id="slo-curve")
            self.point = gr.Dropdown(label="Load point for the request timeline", choices=[], elem_id="slo-point")
            self.timeline = gr.Plot(charts.laid_out(charts.request_timeline([])), show_label=False, elem_id="slo-timeline")
        self.wire()

    def wire(self) -> None:
        figures = [self.table, self.goodput, self.curve]
        targets = [self.run, self.ttft, self.tpot]
        self.tab.select(self.refresh, self.run, [self.run], **UI_ONLY)
        self.run.change(self.show_run, self.run, [self.ttft, self.tpot, self.point, *figures], **UI_ONLY).then(
            self.show_capacity, targets, self.capacity, **UI_ONLY)  # after show_run set the run's own targets
        for slider in (self.ttft, self.tpot):
            slider.release(self.show_goodput, targets, figures, **UI_ONLY).then(
                self.show_capacity, targets, self.capacity, **UI_ONLY)
        self.point.change(self.show_timeline, [self.run, self.point], self.timeline, **UI_ONLY)

    def rows_of_run(self, run_id: str | None) -> pd.DataFrame:
        rows = load_rows_of(self.ctx.results_path)
        return rows[rows["run_id"].astype(str) == str(run_id)] if run_id else rows.iloc[0:0]

    def refresh(self, current):
        choices = run_choices(load_rows_of(self.ctx.results_path), self.ctx.results_path)
        ids = [i for _, i in choices]
        value = current if current in ids else (ids[0] if ids else None)
        return gr.update(choices=choices, value=value)

    def show_run(self, run_id):
        rows = self.rows_of_run(run_id)
        records = records_by_row(self.ctx.results_path, rows)
        ttft_max, tpot_max = slider_limits(records)
        first = rows.to_dict("records")[0] if len(rows) else {}
        ttft, tpot = (target(first.get(k)) for k in ("slo_ttft_ms", "slo_tpot_ms"))
        labels = [point_label(r) for r in rows.to_dict("records")]
        return [gr.update(maximum=max(ttft_max, math.ceil(ttft * 1.2)), value=ttft),
                gr.update(maximum=max(tpot_max, math.ceil(tpot * 1.2)), value=tpot),
                gr.update(choices=labels, value=labels[0] if labels else None),
                *self.figures(rows, records, ttft, tpot)]

    def figures(self, rows, records, ttft, tpot) -> list:
        df = recomputed(rows, records, ttft or 0.0, tpot or 0.0)
        return [table_of(df), charts.laid_out(charts.goodput(df)), charts.laid_out(charts.throughput_latency(df))]

    def show_goodput(self, run_id, ttft, tpot):
        rows = self.rows_of_run(run_id)
        return self.figures(rows, records_by_row(self.ctx.results_path, rows), ttft, tpot)

    def show_capacity(self, run_id, ttft, tpot):
        rows = self.rows_of_run(run_id)
        return capacity_update(rows, records_by_row(self.ctx.results_path, rows), ttft, tpot)

    def show_timeline(self, run_id, label):
        rows = [r for r in self.rows_of_run(run_id).to_dict("records") if point_label(r) == label]
        if not rows:
            return charts.laid_out(charts.request_timeline([]))
        key = archive.row_key(rows[0])
        return charts.laid_out(charts.request_timeline(load_requests(self.ctx.results_path, {key}),
                                                       f"Requests of {label}"))

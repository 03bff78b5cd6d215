"""The metrics axis: each metric declares its CSV columns and summarizes a row's measured calls.

    metric.columns                      the CSV columns it fills, in order
    metric.summarize(calls, ctx, row)   -> {column: value}; row holds what earlier metrics filled

Trackers are the metrics that also wrap every call as context managers (clock, memory counters,
energy); the others read what the engine returned or what earlier metrics computed. To add a metric,
write its class and add it here: its columns reach the CSV, the README check and the dashboard
through this list.
"""
from metrics.bandwidth import Bandwidth
from metrics.capacity import CapacityFigures
from metrics.compiles import CompileCounters
from metrics.cost import Cost
from metrics.drafts import DraftCounts
from metrics.energy import EnergyMeter
from metrics.load_speedup import LoadSpeedup
from metrics.memory import PeakMemory
from metrics.quality import Quality
from metrics.rss import PeakRSS
from metrics.server_metrics import ServerFigures
from metrics.serving import LoadFigures
from metrics.stream_figures import StreamFigures
from metrics.timing import CallTimer
from metrics.turns import WorkloadFigures
from metrics.tokens import TokenCounts

METRICS = (TokenCounts, CallTimer, PeakMemory, PeakRSS, EnergyMeter, CompileCounters, DraftCounts, Bandwidth, Quality, LoadFigures,
           WorkloadFigures, StreamFigures, ServerFigures, CapacityFigures, LoadSpeedup, Cost)  # CSV column order; Cost reads the rates and energy filled before it
# Entered last to first around a call: CallTimer sits closest to it, so no other tracker's work is timed,
# and the energy counter is read after the timer's synchronize; the compile counters, outermost, see every compile.
TRACKERS = (CallTimer, PeakMemory, PeakRSS, EnergyMeter, CompileCounters)
COLUMNS = [c for m in METRICS for c in m.columns]


def summarize(calls, ctx=None, row: dict | None = None) -> dict:
    out = dict(row or {})
    for metric in METRICS:
        out.update(metric.summarize(calls, ctx, out))
    return {c: out[c] for c in COLUMNS}

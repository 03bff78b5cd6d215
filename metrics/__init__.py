"""The metrics axis: each metric declares its CSV columns and summarizes a row's measured calls.

Trackers are the metrics that also wrap every call as context managers (clock, memory counters);
the others read what the engine returned. To add a metric, write its class and add it here: its
columns reach the CSV, the README check and the dashboard through this list.
"""
from metrics.drafts import DraftCounts
from metrics.memory import PeakMemory
from metrics.timing import CallTimer
from metrics.tokens import TokenCounts

METRICS = (TokenCounts, CallTimer, PeakMemory, DraftCounts)  # in CSV column order
# Entered last to first around a call: CallTimer sits closest to it, so no other tracker's work is timed.
TRACKERS = (CallTimer, PeakMemory)
COLUMNS = [c for m in METRICS for c in m.columns]


def summarize(calls) -> dict:
    out = {}
    for metric in METRICS:
        out.update(metric.summarize(calls))
    return out

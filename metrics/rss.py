"""Peak resident memory (RSS) of the process over one call: CPU memory, beside the GPU's counters, so CPU
runs and quantized loads show something in the memory chart.

On Linux the kernel keeps the process's high-water mark (VmHWM in /proc/self/status) and resets it to the
current RSS when "5" is written to /proc/self/clear_refs: reset on entry, read on exit, the call's own peak.
Where the reset is refused (another OS, a locked-down /proc) the mark is the peak since the process started
(getrusage), which only ever grows: still an upper bound, and the column's figure then says so by being flat.
Both reads happen outside the timed region (CallTimer sits closest to the call).
"""
from __future__ import annotations

import resource
import sys
from pathlib import Path

MIB = 1024 * 1024
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_mib() -> float:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MIB  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / MIB if sys.platform == "darwin" else peak * 1024 / MIB


class PeakRSS:
    """The process's peak resident set over a call, in MiB."""

    columns = ("peak_rss_mib",)
    help = {"peak_rss_mib": "the process's peak resident memory (CPU RAM) during a call, max over calls: the kernel's "
                            "high-water mark reset before each call (`/proc/self/clear_refs`), read after it; where the "
                            "reset is refused, the peak since the process started"}

    def __init__(self, device=None, stop_event=None):
        self.mib = float("nan")

    def __enter__(self) -> "PeakRSS":
        reset_peak()
        return self

    def __exit__(self, *exc) -> None:
        self.mib = peak_mib()

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        """The largest call's peak (memory has to fit the worst call); empty for rows without the tracker."""
        peaks = []
        for call in calls:
            try:
                peaks.append(call.tracker(PeakRSS).mib)
            except (StopIteration, AttributeError):
                continue
        peaks = [p for p in peaks if p == p]
        return {"peak_rss_mib": max(peaks) if peaks else float("nan")}

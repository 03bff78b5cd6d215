"""Energy of one call: the GPU's NVML total-energy counter, or the CPU package's RAPL counter where
the kernel lets us read it; empty cells where neither exists (never zero).

Both counters update in steps (NVML every few to tens of milliseconds, depending on the board), so a call of
0.1-0.3 s would read a handful of steps. The counter's update period is measured once per process and reported;
a per-call figure is given only for calls at least RESOLVED periods long, and the row's J/token and watts are
measured over whole repetitions (the counter read before the first call of a repetition and after its last)."""
from __future__ import annotations

import functools
import time
from pathlib import Path

from metrics.stats import median

RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")
RESOLVED = 10  # a figure must span at least this many counter updates (a 10% bound on its rounding)


def nvml_uuid(device) -> str | None:
    """The GPU's UUID as NVML spells it: the CUDA index is not NVML's under CUDA_VISIBLE_DEVICES or another
    CUDA_DEVICE_ORDER, the UUID names the same board for both."""
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(device).uuid)
    except Exception:
        return None
    return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"


@functools.cache
def nvml_handle(uuid: str | None):
    """NVML is initialised once per process; None when the package, the driver or the board is missing."""
    if uuid is None:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByUUID(uuid)
    except Exception:
        return None


def rapl_readable() -> bool:
    try:
        int(RAPL.read_text())
        return True
    except (OSError, ValueError):
        return False


def read_joules(source: str, handle=None) -> float:
    if source == "nvml":
        import pynvml

        return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0
    return int(RAPL.read_text()) / 1e6  # wraps after ~262 kJ; a wrapped reading is negative and dropped


@functools.cache
def update_period_s(source: str, handle=None, budget_s: float = 1.0) -> float:
    """How often the counter moves, in seconds: the mean gap between its first changes seen while polling (at
    most budget_s, once per process and counter); NaN if it never moved twice."""
    changes, last = [], read_joules(source, handle)
    start = time.perf_counter()
    while time.perf_counter() - start < budget_s and len(changes) < 5:
        value = read_joules(source, handle)
        if value != last:
            changes.append(time.perf_counter())
            last = value
        time.sleep(0.0002)
    return (changes[-1] - changes[0]) / (len(changes) - 1) if len(changes) >= 2 else float("nan")


class EnergyMeter:
    """Joules spent during a call. On a GPU: the board's energy (NVML, millijoule counter). On a CPU with
    RAPL: the whole package's energy, other processes included, which the `energy_source` column says."""

    columns = ("energy_j_median", "joules_per_token", "watts_mean", "energy_source", "energy_resolution_ms")
    help = {
        **dict.fromkeys(("energy_j_median", "joules_per_token", "watts_mean", "energy_source"),
                        "energy of one call (median; empty when calls are shorter than 10 counter updates), energy "
                        "of whole repetitions / their new tokens, / their time (empty when a repetition is shorter "
                        "than 10 updates); `nvml` (GPU board, opened by UUID), `rapl` (CPU package) or empty where "
                        "neither can be read"),
        "energy_resolution_ms": "how often the energy counter updates, measured once per process: figures spanning "
                                "fewer than 10 updates are left empty",
    }

    def __init__(self, device, stop_event=None):
        self.device = device
        self.source = ""
        self.handle = None
        self.joules = float("nan")
        self.start_j = self.end_j = self.start_t = self.end_t = float("nan")
        if device.type == "cuda":
            self.handle = nvml_handle(nvml_uuid(device))
            if self.handle is not None:
                self.source = "nvml"
        elif device.type == "cpu" and rapl_readable():
            self.source = "rapl"

    def __enter__(self) -> "EnergyMeter":
        if self.source:
            self.start_j, self.start_t = read_joules(self.source, self.handle), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.source and self.start_j == self.start_j:
            self.end_j, self.end_t = read_joules(self.source, self.handle), time.perf_counter()
            spent = self.end_j - self.start_j
            self.joules = spent if spent >= 0 else float("nan")

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        meters = [c.tracker(EnergyMeter) for c in calls]
        source = meters[0].source if meters else ""
        empty = {"energy_j_median": float("nan"), "joules_per_token": float("nan"), "watts_mean": float("nan"),
                 "energy_source": source, "energy_resolution_ms": float("nan")}
        if not source:
            return empty
        from metrics.timing import CallTimer

        period = update_period_s(source, meters[0].handle)
        latency = median([c.tracker(CallTimer).latency_s for c in calls])
        resolved = period == period and latency >= RESOLVED * period
        out = dict(empty, energy_resolution_ms=period * 1000)
        out["energy_j_median"] = median([m.joules for m in meters]) if resolved else float("nan")
        # Whole repetitions: the row's calls of one repetition run back to back, so the counter read before the
        # first and after the last spans them all (with the few microseconds between calls).
        joules = seconds = tokens = 0.0
        for rep in sorted({c.repetition for c in calls}):
            part = [(c, m) for c, m in zip(calls, meters) if c.repetition == rep]
            spent = part[-1][1].end_j - part[0][1].start_j
            span = part[-1][1].end_t - part[0][1].start_t
            if spent < 0 or spent != spent or not (period == period and span >= RESOLVED * period):
                continue
            joules, seconds = joules + spent, seconds + span
            tokens += sum(sum(c.generation.new_tokens) for c, _ in part)
        if tokens and seconds:
            out["joules_per_token"], out["watts_mean"] = joules / tokens, joules / seconds
        return out

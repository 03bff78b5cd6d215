"""Energy of one call: the GPU's NVML total-energy counter, or the CPU package's RAPL counter where
the kernel lets us read it; empty cells where neither exists (never zero)."""
from __future__ import annotations

import functools
from pathlib import Path

from metrics.stats import median

RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


@functools.cache
def nvml_handle(index: int):
    """NVML is initialised once per process; None when the package or the driver is missing."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:
        return None


def rapl_readable() -> bool:
    try:
        int(RAPL.read_text())
        return True
    except (OSError, ValueError):
        return False


class EnergyMeter:
    """Joules spent during a call. On a GPU: the board's energy (NVML, millijoule counter). On a CPU with
    RAPL: the whole package's energy, other processes included, which the `energy_source` column says."""

    columns = ("energy_j_median", "joules_per_token", "watts_mean", "energy_source")
    help = dict.fromkeys(columns, "energy of one call (median), all measured energy / all new tokens, / all measured time; "
                                  "`nvml` (GPU board), `rapl` (CPU package) or empty where neither can be read")

    def __init__(self, device, stop_event=None):
        self.device = device
        self.source = ""
        self.joules = float("nan")
        self._start = None
        if device.type == "cuda" and nvml_handle(device.index or 0) is not None:
            self.source = "nvml"
        elif device.type == "cpu" and rapl_readable():
            self.source = "rapl"

    def _read(self) -> float:
        if self.source == "nvml":
            import pynvml

            return pynvml.nvmlDeviceGetTotalEnergyConsumption(nvml_handle(self.device.index or 0)) / 1000.0
        return int(RAPL.read_text()) / 1e6  # wraps after ~262 kJ; a wrapped call reads negative and is dropped

    def __enter__(self) -> "EnergyMeter":
        if self.source:
            self._start = self._read()
        return self

    def __exit__(self, *exc) -> None:
        if self.source and self._start is not None:
            spent = self._read() - self._start
            self.joules = spent if spent >= 0 else float("nan")

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        meters = [c.tracker(EnergyMeter) for c in calls]
        source = meters[0].source if meters else ""
        if not source:
            return {"energy_j_median": float("nan"), "joules_per_token": float("nan"), "watts_mean": float("nan"),
                    "energy_source": ""}
        from metrics.timing import CallTimer

        joules = [m.joules for m in meters]
        valid = [(j, c) for j, c in zip(joules, calls) if j == j]
        tokens = sum(sum(c.generation.new_tokens) for _, c in valid)
        seconds = sum(c.tracker(CallTimer).latency_s for _, c in valid)
        total = sum(j for j, _ in valid)
        return {
            "energy_j_median": median(joules),
            "joules_per_token": total / tokens if tokens else float("nan"),
            "watts_mean": total / seconds if seconds else float("nan"),
            "energy_source": source,
        }

"""Peak device memory of one call: the counter is reset on entry, read on exit."""
from __future__ import annotations

import torch

MIB = 1024 * 1024


class PeakMemory:
    """PyTorch's CUDA max-allocated and max-reserved over the call, in MiB (NaN on the CPU, where
    PyTorch keeps no such counter)."""

    columns = ("peak_allocated_mib", "peak_reserved_mib", "start_allocated_mib")
    help = {
        **dict.fromkeys(("peak_allocated_mib", "peak_reserved_mib"),
                        "`torch.cuda.max_memory_allocated` / `max_memory_reserved` during a call (reset before each), max "
                        "over calls; empty on the CPU, where PyTorch keeps no such counter"),
        "start_allocated_mib": "`torch.cuda.memory_allocated` when the call starts (weights of every loaded model, the "
                               "draft included, and caches the fast engine keeps): `peak_allocated_mib` − this is the "
                               "call's own working memory",
    }

    def __init__(self, device: torch.device, stop_event=None):
        self.device = device
        self.allocated_mib = self.reserved_mib = self.start_mib = float("nan")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            # What is already resident (weights of every loaded model, kept caches): peak - start is the call's own.
            self.start_mib = torch.cuda.memory_allocated(self.device) / MIB
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.allocated_mib = torch.cuda.max_memory_allocated(self.device) / MIB
            self.reserved_mib = torch.cuda.max_memory_reserved(self.device) / MIB


    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        """The largest figure of any measured call: memory has to fit the worst call, not the typical one."""
        memories = [call.tracker(PeakMemory) for call in calls]
        return {
            "peak_allocated_mib": max(m.allocated_mib for m in memories),
            "peak_reserved_mib": max(m.reserved_mib for m in memories),
            "start_allocated_mib": max(m.start_mib for m in memories),
        }


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()

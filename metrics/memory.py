"""Device memory of one call (the counters are reset on entry, read on exit), and what each engine holds.

`peak_allocated_mib` is PyTorch's process-wide counter: it includes every loaded model and every engine's caches, and
a CUDA-graph engine's activations live in the graph pool, allocated at capture, so its peak hardly moves during a call.
`footprint_mib` compares engines like with like: the weights the row's models hold, the caches its engine keeps
between calls, the CUDA-graph pool (when the engine compiles), and the call's own working memory."""
from __future__ import annotations

import sys

import torch

MIB = 1024 * 1024


def graph_pool_bytes(device: torch.device) -> float:
    """Bytes the cudagraph trees' private memory pool holds on this device (captured graphs' activations and
    outputs): one pool per device, shared by every engine that captured graphs in this process. 0 when none."""
    trees = sys.modules.get("torch._inductor.cudagraph_trees")
    if device.type != "cuda" or trees is None or not torch._C._is_key_in_tls("tree_manager_containers"):
        return 0.0
    container = trees.get_obj(trees.local, "tree_manager_containers").get(device.index or 0)
    manager = getattr(container, "tree_manager", None)
    if manager is None:
        return 0.0
    pool = manager.cuda_graphs_thread_pool
    return float(sum(s["total_size"] for s in torch.cuda.memory_snapshot()
                     if tuple(s.get("segment_pool_id", ())) == tuple(pool)))


class PeakMemory:
    """PyTorch's CUDA max-allocated and max-reserved over the call, in MiB (NaN on the CPU, where
    PyTorch keeps no such counter), and the row's footprint."""

    columns = ("peak_allocated_mib", "peak_reserved_mib", "start_allocated_mib", "engine_cache_mib",
               "graph_pool_mib", "footprint_mib")
    help = {
        **dict.fromkeys(("peak_allocated_mib", "peak_reserved_mib"),
                        "`torch.cuda.max_memory_allocated` / `max_memory_reserved` during a call (reset before each), max "
                        "over calls: process-wide, every loaded model and every engine's caches included; empty on the "
                        "CPU, where PyTorch keeps no such counter"),
        "start_allocated_mib": "`torch.cuda.memory_allocated` when the call starts (weights of every loaded model, the "
                               "draft included, and caches the engines keep): `peak_allocated_mib` − this is the "
                               "call's own working memory (near 0 for CUDA-graph engines, whose activations live in "
                               "the graph pool)",
        "engine_cache_mib": "KV caches and buffers the row's engine keeps between calls (`fast`, `hf_compiled`; 0 for "
                            "engines that allocate per call)",
        "graph_pool_mib": "the CUDA-graph pool (captured graphs' activations), process-wide: shared by every compiling "
                          "engine of the run; empty on the CPU",
        "footprint_mib": "what the row alone needs, to compare engines like with like: the weights of the models it "
                         "runs + `engine_cache_mib` + `graph_pool_mib` (compiling engines) + the call's own peak "
                         "(`peak_allocated_mib` − `start_allocated_mib`); the memory chart's figure; empty on the CPU",
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
        out = {
            "peak_allocated_mib": max(m.allocated_mib for m in memories),
            "peak_reserved_mib": max(m.reserved_mib for m in memories),
            "start_allocated_mib": max(m.start_mib for m in memories),
            "engine_cache_mib": float("nan"), "graph_pool_mib": float("nan"), "footprint_mib": float("nan"),
        }
        engine = getattr(ctx, "engine", None)
        held = getattr(engine, "held_bytes", None)
        out["engine_cache_mib"] = held() / MIB if held is not None else 0.0
        device = memories[0].device if memories else None
        if device is None or device.type != "cuda":
            return out
        compiles = getattr(engine, "compile", False)
        out["graph_pool_mib"] = graph_pool_bytes(device) / MIB
        own = max(m.allocated_mib - m.start_mib for m in memories)
        out["footprint_mib"] = (row_weight_bytes(ctx, row) / MIB + out["engine_cache_mib"]
                                + (out["graph_pool_mib"] if compiles else 0.0) + own)
        return out


def row_weight_bytes(ctx, row) -> int:
    """The weights of the models this row runs: the target, and the draft when its method drafts with one."""
    from decoding import METHODS
    from metrics.bandwidth import weight_bytes

    models = ctx.models
    total = weight_bytes(models.target)
    method = METHODS.get(row.get("method")) if row is not None else None
    if models.draft is not None and method is not None and method.needs_draft:
        total += weight_bytes(models.draft)
    return total


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()

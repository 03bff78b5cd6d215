"""What torch compiled, and when: dynamo's and the CUDA-graph trees' own counters, read around each measured call.

A compiling engine compiles in its warm-up (timed into `compile_s`, kept out of the figures). A compile, recompile,
graph break or CUDA-graph recording inside a measured call means that call's time includes work that is not
decoding: the call is noted and the row marked `unstable` (scenarios/per_call.py). The counters are process-wide, so
they are read just around each call, where nothing else runs."""
from __future__ import annotations

import sys

FIELDS = ("compiles", "graphs", "graph_breaks", "cudagraph_skips", "cudagraph_records")


def snapshot() -> dict[str, int]:
    """torch's counters now: dynamo's frame compiles (a recompile is one more), graphs, graph breaks; inductor's
    CUDA-graph skips; the CUDA graphs the trees have recorded (re-records included). Zero for what torch has not
    loaded: nothing of torch._dynamo is imported here that a run did not already import."""
    out = dict.fromkeys(FIELDS, 0)
    utils = sys.modules.get("torch._dynamo.utils")
    if utils is not None:
        counters = utils.counters
        out["compiles"] = int(counters["frames"]["total"])
        out["graphs"] = int(counters["stats"]["unique_graphs"])
        out["graph_breaks"] = int(sum(counters["graph_break"].values()))
        out["cudagraph_skips"] = int(counters["inductor"]["cudagraph_skips"])
    out["cudagraph_records"] = cudagraph_records()
    return out


def cudagraph_records() -> int:
    """CUDA graphs recorded so far by the cudagraph trees of every device (each node of a tree is one recording; a
    re-record adds a node), plus the unexpected re-records that count toward the fall-back-to-eager limit."""
    trees = sys.modules.get("torch._inductor.cudagraph_trees")
    if trees is None:
        return 0
    import torch

    if not torch._C._is_key_in_tls("tree_manager_containers"):  # as reset_cudagraph_trees looks: none made yet
        return 0
    total = 0
    for container in list(trees.get_obj(trees.local, "tree_manager_containers").values()):
        manager = getattr(container, "tree_manager", None)
        if manager is None:
            continue
        stack = [n for nodes in manager.roots.values() for n in nodes]
        while stack:
            node = stack.pop()
            total += 1
            stack.extend(c for children in node.children.values() for c in children)
        total += sum(sum(per.values()) for per in manager.num_rerecord.values())
    return total


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in FIELDS}


def dirty(counts: dict[str, int]) -> bool:
    """Whether a measured call compiled, recompiled, broke a graph or recorded a CUDA graph."""
    return any(counts[k] for k in ("compiles", "graphs", "graph_breaks", "cudagraph_records"))


def describe(counts: dict[str, int]) -> str:
    counts = dict(counts, compiles=max(counts["compiles"], counts["graphs"]))
    parts = [f"{counts[k]} {label}" for k, label in (
        ("compiles", "compile(s)/recompile(s)"), ("graphs", "new graph(s)"), ("graph_breaks", "graph break(s)"),
        ("cudagraph_records", "CUDA-graph recording(s)"), ("cudagraph_skips", "CUDA-graph skip(s)")) if counts[k]]
    return ", ".join(parts)


class CompileCounters:
    """Tracker: torch's compile counters before and after one call (read outside the timer: CallTimer sits inside).
    Columns only for engines that compile (`compile_seconds`); empty for the others."""

    columns = ("compiled_graphs", "graph_breaks", "cudagraph_skips", "measured_compiles",
               "measured_cudagraph_records")
    help = {
        "compiled_graphs": "graphs dynamo compiled in the row's warm-up (what `compile_s` paid for); compiling "
                           "engines only (`fast`, `hf_compiled`), empty for the others",
        "graph_breaks": "graph breaks in the row's warm-up and measured calls: each splits a compiled step into "
                        "several graphs with eager Python between them",
        "cudagraph_skips": "compiled graphs inductor ran without CUDA graphs, warm-up and measured calls "
                           "(TORCH_LOGS=perf_hints says why)",
        "measured_compiles": "dynamo compiles and recompiles inside measured calls; above 0 the call's time includes "
                             "compilation: the row is noted and marked `unstable`",
        "measured_cudagraph_records": "CUDA graphs recorded or re-recorded inside measured calls (new buffer "
                                      "addresses or shapes); above 0 the row is noted and marked `unstable`",
    }

    def __init__(self, device=None, stop_event=None):
        self.counts = dict.fromkeys(FIELDS, 0)
        self._before: dict[str, int] | None = None

    def __enter__(self) -> "CompileCounters":
        self._before = snapshot()
        return self

    def __exit__(self, *exc) -> None:
        if self._before is not None:
            self.counts = delta(self._before, snapshot())

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        empty = dict.fromkeys(CompileCounters.columns, float("nan"))
        engine = getattr(ctx, "engine", None)
        if engine is None or not hasattr(engine, "compile_seconds"):
            return empty
        counters = [c for call in calls for c in call.trackers if isinstance(c, CompileCounters)]
        total = {k: sum(c.counts[k] for c in counters) for k in FIELDS}
        row = row or {}

        def warm(column):  # the warm-up's counts, which per_call.prepare wrote into the row
            value = row.get(column, 0)
            return value if value == value else 0

        out = {
            "compiled_graphs": warm("compiled_graphs"),
            "graph_breaks": warm("graph_breaks") + total["graph_breaks"],
            "cudagraph_skips": warm("cudagraph_skips") + total["cudagraph_skips"],
            # A fullgraph compile adds a graph without passing dynamo's frame counter: count whichever moved more.
            "measured_compiles": max(total["compiles"], total["graphs"]),
            "measured_cudagraph_records": total["cudagraph_records"],
        }
        if dirty(total):
            out["unstable"] = True  # CallTimer set it from the interval; a compile in a call is reason enough
        return out

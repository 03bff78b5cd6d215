"""Where a decode step's time goes: a torch.profiler trace of a few decode steps of one engine, and its table.

Used by `benchmarks/fast_engine.py --profile` (after the runner's rows, outside every measured call; the engine is made
from the run's config, so it compiles with the run's options), and importable on its own:

    ids, mask = random_prompt(models, 128)
    trace = profile_decode(engine, models, ids, mask, steps=20, path=Path("fast.json"))   # Chrome trace JSON
    table = profile_table(trace, 20, weight_bytes(models.target), copy_bandwidth)
    print(profile_markdown("fast, Qwen3-4B", table))

The trace starts at the first new token (the DECODE_RANGE range, so the prefill is not in it); open it in
https://ui.perfetto.dev or chrome://tracing. The table, per decode step:
  kernel time by kind  GEMV/GEMM, attention, norms, rotary, sampling, copies, other (kernel names matched by
                       substrings: see KINDS), and as a share of all kernel time;
  idle gaps            time the GPU ran no kernel between the first and last kernel of the window;
  bytes                the weight bytes a batch-1 step must read, against what the step achieves: GB/s over the wall
                       step time and over the GEMV/GEMM kernel time alone, and their share of the copy bandwidth.
On the CPU the table is made of the aten operators' self times instead of kernels.
"""
from __future__ import annotations

import csv
import gc
import json
import re
import traceback
from pathlib import Path

import torch

from decoding.types import NullProbe, Request


def short(model_id: str) -> str:
    return model_id.rstrip("/").split("/")[-1]


def fmt(value, digits=1) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(rows: list[dict], columns: list[tuple[str, str, int]]) -> str:
    """A markdown table of `rows`; columns are (key, title, digits of a float)."""
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(key, ""), digits) for key, _, digits in columns) + " |")
    return "\n".join(lines)


def random_prompt(models, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt of `length` random token ids (below Qwen3's special tokens) and its attention mask."""
    vocab = models.target.config.get_text_config().vocab_size
    high = min(vocab, 151643)
    ids = torch.randint(0, high, (1, length), generator=torch.Generator().manual_seed(seed)).to(models.device)
    return ids, torch.ones_like(ids)


DECODE_RANGE = "decode_steps"  # the profiler range that holds the decode steps of the profiled call
# Kernel kinds, tried in order: a kernel goes to the first kind that one of its name's substrings or tokens (the name
# split at every character that is not a letter or digit) matches. Inductor names its kernels after the aten ops it
# fused (triton_red_fused_add_mean_mul_pow_rsqrt_0 is a residual add and an RMSNorm); cuBLAS on Hopper names its
# GEMMs nvjet_*. A fused kernel counts once, under its first kind: attention before GEMM (cutlass fmha), GEMM before
# norms (a norm folded into a matmul's prologue), rotary before copies (rotary fused with the KV-cache write).
KINDS = (
    ("GEMV/GEMM", ("gemm", "gemv", "nvjet", "cublas", "xmma", "splitkreduce", "matmul", "triton_tem"),
     ("mm", "addmm", "bmm", "linear", "dot")),
    ("attention", ("flash", "fmha", "attention", "attn", "sdpa", "flex_"), ()),
    ("norms", ("rmsnorm", "rms_norm", "layer_norm", "layernorm", "rsqrt"), ("norm", "mean", "pow", "var")),
    ("rotary", ("rotary", "rope"), ("cos", "sin", "neg", "rotate")),
    ("sampling", ("argmax", "softmax", "topk", "multinomial", "exponential", "cumsum", "philox", "sort"),
     ("uniform",)),
    ("copies", ("copy", "memcpy", "memset", "index_put", "indexput", "index_copy", "scatter", "fill", "catarray",
                "clone", "contiguous"), ("cat",)),
)
KIND_ORDER = ("GEMV/GEMM", "attention", "norms", "rotary", "sampling", "copies", "other")
CLASSIFY_ORDER = ("attention", "GEMV/GEMM", "norms", "rotary", "sampling", "copies")
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def kernel_kind(name: str) -> str:
    lower = name.lower()
    tokens = set(re.split(r"[^a-z0-9]+", lower))
    kinds = {kind: (subs, toks) for kind, subs, toks in KINDS}
    for kind in CLASSIFY_ORDER:
        subs, toks = kinds[kind]
        if any(s in lower for s in subs) or tokens & set(toks):
            return kind
    return "other"


def decode_window(events: list[dict]) -> tuple[float, float]:
    """(start, end) in µs of the DECODE_RANGE range (host side) of a Chrome trace's events."""
    ranges = [e for e in events if e.get("name") == DECODE_RANGE and e.get("cat") == "user_annotation"]
    if not ranges:
        raise ValueError(f"no '{DECODE_RANGE}' range in the trace: the engine never reported its first token")
    r = ranges[-1]
    return float(r["ts"]), float(r["ts"]) + float(r["dur"])


def self_times(ops: list[dict]) -> list[dict]:
    """CPU operators with their self time as `dur` (their time minus that of the operators they call: aten::linear
    holds aten::mm, which holds aten::empty), so that nested operators count once and where the work is done."""
    out = []
    by_thread: dict = {}
    for e in ops:
        by_thread.setdefault(e.get("tid"), []).append(e)
    for thread in by_thread.values():
        thread.sort(key=lambda e: (float(e["ts"]), -float(e.get("dur", 0))))
        stack: list[dict] = []  # the open operators, innermost last
        for e in thread:
            ts, dur = float(e["ts"]), float(e.get("dur", 0))
            while stack and ts >= stack[-1]["end"]:
                stack.pop()
            if stack:
                stack[-1]["dur"] -= dur
            item = {"name": e.get("name", ""), "ts": ts, "dur": dur, "end": ts + dur}
            stack.append(item)
            out.append(item)
    for item in out:
        item["dur"] = max(item["dur"], 0.0)
    return out


def profile_table(trace: dict, steps: int, weight_bytes_per_step: float, copy_bw: float) -> dict:
    """Time by kind, idle gaps and bandwidth of the decode steps in a Chrome trace (torch.profiler's export).

    Device kernels (and device copies and memsets) when the trace has any, else the CPU's aten operators by self
    time. Every time is µs per decode step. The kinds' times add up to `kernel_us`; `busy_us` is their union
    (streams may overlap), `idle_us` the gaps between them, and busy + idle fit in the step's wall time `step_us`."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
    start, end = decode_window(events)
    device = [e for e in events if e.get("cat") in DEVICE_CATEGORIES]
    source = "device kernels" if device else "CPU operators (self time)"
    if not device:
        device = self_times([e for e in events if e.get("cat") == "cpu_op" and start <= float(e["ts"]) < end])
    kernels = sorted((e for e in device if start <= float(e["ts"]) < end), key=lambda e: float(e["ts"]))
    kinds = {k: {"kind": k, "kernels": 0, "us": 0.0} for k in KIND_ORDER}
    for e in kernels:
        kind = kinds[kernel_kind(e.get("name", ""))]
        kind["kernels"] += 1
        kind["us"] += float(e.get("dur", 0))
    busy = idle = 0.0
    gaps = 0
    reach = None  # end of the union of the kernels so far
    for e in kernels:
        ts = float(e["ts"])
        dur = float(e["end"]) - ts if "end" in e else float(e.get("dur", 0))  # an operator's span, not its self time
        if reach is not None and ts > reach:
            idle += ts - reach
            gaps += 1
        lo = ts if reach is None else max(ts, reach)
        busy += max(0.0, ts + dur - lo)
        reach = ts + dur if reach is None else max(reach, ts + dur)
    kernel_us = sum(k["us"] for k in kinds.values())
    rows = []
    for k in KIND_ORDER:
        rows.append({"kind": k, "kernels_per_step": kinds[k]["kernels"] / steps, "us_per_step": kinds[k]["us"] / steps,
                     "pct_of_kernel_time": 100 * kinds[k]["us"] / kernel_us if kernel_us else float("nan")})
    step_us = (end - start) / steps
    gemm_us = kinds["GEMV/GEMM"]["us"] / steps
    graph_launches = sum(1 for e in events if e.get("cat") == "cuda_runtime" and "GraphLaunch" in e.get("name", "")
                         and start <= float(e["ts"]) <= end)
    out = {"source": source, "steps": steps, "rows": rows, "kernel_us": kernel_us / steps, "busy_us": busy / steps,
           "idle_us": idle / steps, "gaps_per_step": gaps / steps, "step_us": step_us,
           "graph_launches_per_step": graph_launches / steps, "weight_bytes": weight_bytes_per_step}
    for name, us in (("step", step_us), ("gemm", gemm_us)):
        gbs = weight_bytes_per_step / (us * 1e-6) / 1e9 if us > 0 else float("nan")
        out[f"{name}_gb_s"] = gbs
        out[f"{name}_pct_copy_bw"] = 100 * gbs * 1e9 / copy_bw if copy_bw and gbs == gbs else float("nan")
    return out


def profile_markdown(title: str, table: dict) -> str:
    lines = [f"### {title}", "",
             f"{table['steps']} decode steps, {table['source']}; per step: wall {table['step_us']:,.1f} µs, kernels "
             f"{table['kernel_us']:,.1f} µs (busy {table['busy_us']:,.1f} µs), idle gaps between kernels "
             f"{table['idle_us']:,.1f} µs in {table['gaps_per_step']:,.1f} gaps, "
             f"{table['graph_launches_per_step']:,.2f} CUDA graph launches", "",
             markdown(table["rows"], [("kind", "kind", 0), ("kernels_per_step", "kernels/step", 1),
                                      ("us_per_step", "µs/step", 1), ("pct_of_kernel_time", "% of kernel time", 1)]),
             "",
             f"bytes: {table['weight_bytes'] / 1e6:,.1f} MB of weights per step; achieved "
             f"{fmt(table['step_gb_s'])} GB/s over the wall step ({fmt(table['step_pct_copy_bw'])}% of copy BW), "
             f"{fmt(table['gemm_gb_s'])} GB/s over the GEMV/GEMM kernels alone "
             f"({fmt(table['gemm_pct_copy_bw'])}% of copy BW)"]
    if table["graph_launches_per_step"] and table["kernel_us"] < 0.05 * table["step_us"]:
        lines.append("WARNING: CUDA graphs were launched but almost no kernel time was recorded: this profiler "
                     "build does not trace kernels inside CUDA graphs; rerun with --no-compile for kernel names "
                     "(without graphs)")
    return "\n".join(lines)


class DecodeWindow:
    """A probe that opens the DECODE_RANGE profiler range at the first new token: what follows in the call is decode
    steps. It synchronizes first, so no prefill kernel runs inside the range."""

    traces = False  # a measured call's probe: no per-step token reports

    def __init__(self, device: torch.device):
        self.device = device
        self.range = None

    def first_token(self) -> None:
        if self.range is None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.range = torch.profiler.record_function(DECODE_RANGE)
            self.range.__enter__()

    def should_stop(self) -> bool:
        return False

    def tokens(self, count: int) -> None:
        pass

    def close(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the last steps' kernels end inside the range
        if self.range is not None:
            self.range.__exit__(None, None, None)


def profile_decode(engine, models, ids, mask, steps: int, path: Path) -> dict:
    """One call of steps + 1 new tokens under torch.profiler (after a warm-up call of the same shape); saves the
    Chrome trace at `path` and returns it."""
    request = Request(ids, mask, steps + 1, steps + 1)
    engine.generate(request, NullProbe())
    activities = [torch.profiler.ProfilerActivity.CPU]
    if models.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    window = DecodeWindow(models.device)
    with torch.profiler.profile(activities=activities) as prof:
        try:
            engine.generate(request, window)
        finally:
            window.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(path))
    return json.loads(path.read_text())


def profile_runs(configs: list, engines: list[str], steps: int, prompt_tokens: int, out_dir: Path) -> list:
    """For each config (one model each): its models loaded once, then per engine of `engines` the config runs, a
    trace saved as OUT/profile/<engine>_<model>.json and its table. Returns [(title, table)]; a profile that fails
    is reported and skipped, never losing the others."""
    from engines import make_engine
    from metrics.bandwidth import copy_bandwidth, weight_bytes
    from models.loading import load_models

    profiles, bandwidth = [], None
    for config in configs:
        names = [e for e in engines if e in config.engine]
        if not names:
            continue
        models = load_models(config.model, None, device=config.device, dtype=config.dtype, attention="sdpa",
                             random_weights=config.random_weights)
        if bandwidth is None:  # outside every measured call; a small buffer on the CPU
            cuda = models.device.type == "cuda"
            bandwidth = copy_bandwidth(models.device, 1.0 if cuda else 0.0625, 20 if cuda else 3)
        ids, mask = random_prompt(models, prompt_tokens)
        for name in names:
            title = f"{name}, {short(config.model)}"
            path = out_dir / "profile" / f"{name}_{short(config.model)}.json"
            try:
                trace = profile_decode(make_engine(name, models, config), models, ids, mask, steps, path)
                table = profile_table(trace, steps, weight_bytes(models.target), bandwidth)
            except Exception:
                traceback.print_exc()
                continue
            profiles.append((f"{title} (trace: {path.relative_to(out_dir)})", table))
            print(f"   profiled {title}: {table['step_us']:,.1f} µs per decode step; trace {path}", flush=True)
        del models
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return profiles


def write_profile_csv(path: Path, profiles: list) -> None:
    """One line per profile and kind, then the per-step totals."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["profile", "kind", "kernels_per_step", "us_per_step", "pct_of_kernel_time"])
        for title, table in profiles:
            for r in table["rows"]:
                writer.writerow([title, r["kind"], r["kernels_per_step"], r["us_per_step"], r["pct_of_kernel_time"]])
            for key in ("kernel_us", "busy_us", "idle_us", "step_us"):
                writer.writerow([title, key, "", table[key], ""])

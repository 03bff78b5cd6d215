"""Three engines on one CUDA GPU: transformers' eager `generate`, transformers' own fast path (`hf_compiled`: static
cache + torch.compile) and the fast engine: tokens per second, the memory bandwidth decoding achieves, where a decode
step's time goes (--profile), and what speculative decoding really gains next to what Leviathan et al.'s formula
predicts.

Command (from the repository root, on a CUDA machine; random weights with the shipped Qwen3 configs, so nothing is
downloaded; an estimate, not yet timed with the hf_compiled rows: 5 to 6 minutes on an H100 including compilation,
less with --quick or --skip-speculative):

    python benchmarks/fast_engine.py [--models Qwen/Qwen3-0.6B,Qwen/Qwen3-4B] [--prompt-tokens 128] \\
        [--new-tokens 256] [--num-draft-tokens 4] [--runs 5] [--hf-new-tokens N] [--skip-hf] [--skip-hf-compiled] \\
        [--quick] [--skip-speculative] [--compare-unfused] [--variant LABEL:ENV=VALUE[,ENV=VALUE]]... \\
        [--profile [--profile-steps 20] [--profile-engines fast,hf_compiled]]

Per-change rows. --compare-unfused adds a fast row for the smallest model run through the model's own forward (no
q/k/v and gate/up fusion), in this process. --variant runs the fast standard rows once more in a child process with
the given environment and adds them labelled "standard [LABEL]": a switch that is read when graphs are compiled
(BENCH_FAST_TUNING=0: inductor's defaults instead of gpt-fast's settings) cannot be compared inside one process,
where the compiled graphs are shared. For example
    --variant "no fusion:BENCH_FAST_FUSE=0" --variant "inductor defaults:BENCH_FAST_TUNING=0"
Each variant compiles its models again (about a minute per model on an H100).

--profile records a torch.profiler trace of --profile-steps decode steps per model and engine (after the rows above,
so the graphs are warm; the trace is cut at the first new token, so the prefill is not in it), saves it as Chrome
trace JSON under OUT/profile/ (open it in https://ui.perfetto.dev or chrome://tracing) and prints, per model:
  kernel time by kind  GEMV/GEMM, attention, norms, rotary, sampling, copies, other (kernel names matched by
                       substrings: see KINDS), per decode step and as a share of all kernel time;
  idle gaps            time per step the GPU ran no kernel between the first and last kernel of the window;
  bytes                the weight bytes a batch-1 step must read, against what the step time achieves: GB/s over the
                       wall step time and over the GEMV/GEMM kernel time alone, and their share of the copy bandwidth.
On the CPU (--device cpu) the table is made of the aten operators' self times instead of kernels.

Every call: batch 1, a prompt of random token ids, a fixed output length (min_new_tokens = max_new_tokens), greedy.
`hf` rows run once after a short warm-up (eager decoding is slow and its figure is stable enough at this size);
`hf_compiled` and `fast` rows run once to compile and capture CUDA graphs (reported apart, as "compile s"), then --runs
times: the median is reported with its 95% percentile-bootstrap interval over the runs. Clocks are read after
torch.cuda.synchronize().

Columns of the results table (also written as CSV):
  engine         hf: transformers `generate`, eager, dynamic KV cache; hf_compiled: `generate` with a static KV cache,
                 forward compiled by transformers (torch.compile mode="reduce-overhead"); fast: engines/fast/ (static
                 KV cache, torch.compile mode="reduce-overhead", i.e. CUDA graphs, no host sync per token)
  method         standard (greedy), or speculative with the draft in the next column and k draft tokens per round;
                 "standard (unfused)": the fast engine over the model's own forward (--compare-unfused);
                 "standard [LABEL]": a --variant
  new tokens     tokens generated per call
  tok/s          new tokens / call latency (prefill included)
  decode tok/s   (new tokens - 1) / (latency - TTFT): the decode phase alone; 95% CI over the runs beside it
  TTFT ms        time to the first new token (prefill and the first pick)
  GB/token       bytes of all parameters (tied embeddings counted once): what one batch-1 decode step reads
  weight GB/s    GB/token x decode tok/s: bandwidth the decode phase achieves on weights alone (standard rows)
  % copy BW      weight GB/s / the measured device-to-device copy bandwidth (read + write bytes counted)
  roofline tok/s copy bandwidth / GB per token: the batch-1 ceiling set by memory bandwidth
  accept         accepted / drafted draft tokens (speculative rows)
  speedup        decode tok/s / fast standard decode tok/s on the same target (speculative rows)
  compile s      hf_compiled and fast: compile + CUDA-graph capture in the warm-up call, excluded from the timings

The second table compares speculative decoding with the prediction of Leviathan et al. (2023): with acceptance rate
a, k draft tokens per round and c = draft step time / target step time (measured: the fast standard ms/token of
the smallest model over the largest), the expected speedup is (1 - a^(k+1)) / ((1 - a) (k c + 1)). Random weights
make an independent draft agree almost never (a ~ 0: the row shows the overhead); a draft equal to the target
agrees almost always (c = 1: the row shows what verifying k+1 tokens in one forward costs). Real acceptance rates
need real weights; the a = 0.6 / 0.7 / 0.8 rows are predictions, labelled so.

Output: the tables on stdout, and fast_engine.md / fast_engine.csv / fast_engine_predictions.csv (and profile/,
profile.csv with --profile) in $OUT (if set) or --out-dir; the files are rewritten after every row, so a run cut short
keeps the rows it finished.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights from shipped configs: never reach for the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from models.loading import load_models  # noqa: E402
from decoding.types import NullProbe, Request  # noqa: E402
from engines.fast import FastEngine  # noqa: E402
from engines.hf import HFEngine  # noqa: E402
from engines.hf_compiled import HFCompiledEngine  # noqa: E402
from metrics.bandwidth import copy_bandwidth, weight_bytes  # noqa: E402
from metrics.stats import bootstrap_ci  # noqa: E402
from metrics.timing import CallTimer  # noqa: E402

COLUMNS = ["engine", "method", "model", "draft", "k", "new_tokens", "runs", "tok_s", "decode_tok_s",
           "decode_tok_s_ci_low", "decode_tok_s_ci_high", "ms_per_token", "ttft_ms", "weight_gb_per_token",
           "weight_gb_s", "pct_copy_bw", "roofline_tok_s", "drafted", "accepted", "acceptance", "verify_steps",
           "speedup_vs_fast_standard", "compile_s", "first_call_s", "notes"]
ENGINE_ORDER = ("hf", "hf_compiled", "fast")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(engine, request: Request) -> dict:
    with CallTimer(engine.models.device) as timer:  # the runner's timer: synchronized clocks, TTFT probe
        generation = engine.generate(request, timer)
    n = sum(generation.new_tokens)
    if n != request.max_new_tokens:
        raise RuntimeError(f"{engine.name} returned {n} new tokens, asked for {request.max_new_tokens}")
    ttft = timer.ttft_s if timer.ttft_s == timer.ttft_s else timer.latency_s
    return {"latency": timer.latency_s, "ttft": ttft, "generation": generation}


def measure(engine, request: Request, runs: int) -> dict:
    """Median latency and TTFT over `runs` calls, the decode speed's bootstrap interval over the calls, and the token
    counts of the last one."""
    calls = [timed(engine, request) for _ in range(runs)]
    latency = statistics.median(c["latency"] for c in calls)
    ttft = statistics.median(c["ttft"] for c in calls)
    g = calls[-1]["generation"]
    n = request.max_new_tokens
    decode_s = latency - ttft
    row = {"new_tokens": n, "runs": runs, "tok_s": n / latency, "ttft_ms": 1e3 * ttft,
           "decode_tok_s": (n - 1) / decode_s if n > 1 and decode_s > 0 else float("nan"),
           "ms_per_token": 1e3 * decode_s / (n - 1) if n > 1 else float("nan")}
    if n > 1:
        per_call = [[(n - 1) / (c["latency"] - c["ttft"])] for c in calls if c["latency"] > c["ttft"]]
        row["decode_tok_s_ci_low"], row["decode_tok_s_ci_high"] = bootstrap_ci(per_call)
    if g.drafted:
        row.update(drafted=g.drafted, accepted=g.accepted, acceptance=g.accepted / g.drafted,
                   verify_steps=g.verify_steps)
    if g.notes:
        row["notes"] = "; ".join(g.notes)
    return row


def short(model_id: str) -> str:
    return model_id.rstrip("/").split("/")[-1]


def random_prompt(models, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    vocab = models.target.config.get_text_config().vocab_size
    high = min(vocab, 151643)  # below Qwen3's special tokens
    ids = torch.randint(0, high, (1, length), generator=torch.Generator().manual_seed(seed)).to(models.device)
    return ids, torch.ones_like(ids)


def leviathan(a: float, k: int, c: float) -> float:
    """Expected speedup of speculative decoding (Leviathan et al. 2023, eq. in section 3.4)."""
    tokens_per_round = (k + 1) if a >= 1 else (1 - a ** (k + 1)) / (1 - a)
    return tokens_per_round / (k * c + 1)


def fmt(value, digits=1) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(rows: list[dict], columns: list[tuple[str, str, int]]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(key, ""), digits) for key, _, digits in columns) + " |")
    return "\n".join(lines)


RESULT_COLUMNS = [("engine", "engine", 0), ("method", "method", 0), ("model", "model", 0), ("draft", "draft", 0),
                  ("k", "k", 0), ("new_tokens", "new tokens", 0), ("tok_s", "tok/s", 1),
                  ("decode_tok_s", "decode tok/s", 1), ("decode_ci", "95% CI", 0),
                  ("ms_per_token", "ms/token", 3), ("ttft_ms", "TTFT ms", 1),
                  ("weight_gb_per_token", "GB/token", 2), ("weight_gb_s", "weight GB/s", 0),
                  ("pct_copy_bw", "% copy BW", 1), ("roofline_tok_s", "roofline tok/s", 0),
                  ("acceptance", "accept", 2), ("speedup_vs_fast_standard", "speedup", 2),
                  ("compile_s", "compile s", 1), ("notes", "notes", 0)]


def with_ci(row: dict) -> dict:
    low, high = row.get("decode_tok_s_ci_low"), row.get("decode_tok_s_ci_high")
    if isinstance(low, float) and low == low and isinstance(high, float) and high == high:
        return {**row, "decode_ci": f"{low:,.1f}-{high:,.1f}"}
    return row


# -- profile: where a decode step's time goes ----------------------------------------------------------------------

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

    Device kernels (and device copies and memsets) when the trace has any, else the CPU's aten operators by self time. Every
    time is µs per decode step. The kinds' times add up to `kernel_us`; `busy_us` is their union (streams may
    overlap), `idle_us` the gaps between them, and busy + idle fit in the step's wall time `step_us`."""
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
                     "build does not trace kernels inside CUDA graphs; rerun with BENCH_FAST_COMPILE=0 for kernel "
                     "names (without graphs)")
    return "\n".join(lines)


class DecodeWindow:
    """A probe that opens the DECODE_RANGE profiler range at the first new token: what follows in the call is decode
    steps. It synchronizes first, so no prefill kernel runs inside the range."""

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


# -- per-change rows in child processes ----------------------------------------------------------------------------


def parse_variant(text: str) -> tuple[str, dict]:
    """'LABEL:ENV=VALUE[,ENV=VALUE]' -> (LABEL, {ENV: VALUE})."""
    label, sep, assignments = text.partition(":")
    env = dict(a.split("=", 1) for a in assignments.split(",") if "=" in a)
    if not sep or not label.strip() or not env:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: use LABEL:ENV=VALUE[,ENV=VALUE]")
    return label.strip(), env


def run_variant(label: str, env: dict, args, out_dir: Path) -> list[dict]:
    """The fast standard rows of this benchmark, rerun in a child process with `env` added."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_") or "variant"
    child_out = out_dir / f"variant_{slug}"
    command = [sys.executable, str(Path(__file__).resolve()), "--only-fast-standard", "--models", args.models,
               "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens),
               "--runs", str(args.runs), "--device", args.device, "--out-dir", str(child_out)]
    done = subprocess.run(command, env={**os.environ, **env}, cwd=ROOT)
    path = child_out / "fast_engine.csv"
    if not path.exists():
        raise RuntimeError(f"variant {label!r} wrote no results (exit code {done.returncode})")
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("engine") != "fast" or row.get("method") != "standard":
                continue
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value) if key not in ("engine", "method", "model", "draft", "notes") else value
                except ValueError:
                    parsed[key] = value
            setting = ", ".join(f"{k}={v}" for k, v in env.items())
            parsed.update(method=f"standard [{label}]",
                          notes="; ".join(filter(None, [setting, parsed.get("notes") or ""])))
            rows.append(parsed)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="Qwen/Qwen3-0.6B,Qwen/Qwen3-4B",
                        help="comma-separated, smallest first: the first drafts for the last")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--hf-new-tokens", type=int, default=None, help="new tokens of the eager hf rows "
                        "(default: --new-tokens; eager 4B runs at ~10-25 tok/s)")
    parser.add_argument("--num-draft-tokens", "-k", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-hf", action="store_true", help="no eager hf rows")
    parser.add_argument("--skip-hf-compiled", action="store_true", help="no hf_compiled rows (saves their compile, "
                        "about a minute per model on an H100)")
    parser.add_argument("--skip-speculative", action="store_true", help="no speculative rows (saves the compile of "
                        "the verify graphs, about a minute on an H100)")
    parser.add_argument("--compare-unfused", action="store_true", help="also run the smallest model through the "
                        "model's own forward (no fused projections), for an A/B in one run")
    parser.add_argument("--variant", action="append", type=parse_variant, default=[], metavar="LABEL:ENV=VALUE",
                        help="rerun the fast standard rows in a child process with this environment (repeatable)")
    parser.add_argument("--only-fast-standard", action="store_true", help=argparse.SUPPRESS)  # a --variant's child
    parser.add_argument("--profile", action="store_true", help="trace --profile-steps decode steps per model and "
                        "engine with torch.profiler: Chrome trace JSON under OUT/profile/ and a time-by-kind table")
    parser.add_argument("--profile-steps", type=int, default=20)
    parser.add_argument("--profile-engines", default="fast,hf_compiled",
                        help="engines --profile traces (of hf, hf_compiled, fast)")
    parser.add_argument("--quick", action="store_true", help="64 new tokens (32 for hf), 1 run: a smoke test")
    parser.add_argument("--out-dir", default=os.environ.get("OUT") or "/tmp/fast_engine_bench")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of this script with tiny models "
                        "(--models tiny/draft,tiny/target), nothing compiled, figures meaningless")
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.runs = min(args.new_tokens, 64), 1
        args.hf_new_tokens = args.hf_new_tokens or 32
    if args.only_fast_standard:
        args.skip_hf = args.skip_hf_compiled = args.skip_speculative = True
        args.profile, args.compare_unfused, args.variant = False, False, []
    hf_new = args.hf_new_tokens or args.new_tokens
    k = args.num_draft_tokens
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: this benchmark measures GPU decoding (the fast engine compiles only on CUDA); "
              "--device cpu runs a smoke test of the script")
        return 2
    profile_engines = [e.strip() for e in args.profile_engines.split(",") if e.strip()]
    if args.profile and set(profile_engines) - set(ENGINE_ORDER):
        print(f"--profile-engines: use some of {', '.join(ENGINE_ORDER)}")
        return 2
    dtype = "bfloat16" if args.device == "cuda" else "float32"

    import transformers

    started = time.perf_counter()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (smoke test)"
    header = (f"{device_name}; torch {torch.__version__}; transformers {transformers.__version__}; "
              f"{dtype}, random weights, batch 1, {args.prompt_tokens}-token random prompt, greedy, fixed length; "
              f"BENCH_FAST_COMPILE={os.environ.get('BENCH_FAST_COMPILE', '1')}, "
              f"BENCH_FAST_FUSE={os.environ.get('BENCH_FAST_FUSE', '1')}, "
              f"BENCH_FAST_TUNING={os.environ.get('BENCH_FAST_TUNING', '1')}")
    print(header, flush=True)
    bandwidth = copy_bandwidth(torch.device(args.device), 1.0 if args.device == "cuda" else 0.0625,
                               20 if args.device == "cuda" else 3)
    print(f"device-to-device copy bandwidth (read+write): {bandwidth / 1e12:.2f} TB/s", flush=True)

    model_ids = [m.strip() for m in args.models.split(",") if m.strip()]
    loaded = {}
    for mid in model_ids:
        t = time.perf_counter()
        loaded[mid] = load_models(mid, None, device=args.device, dtype=dtype, random_weights=True, attention="sdpa")
        print(f"loaded {mid} (random weights) in {time.perf_counter() - t:.1f} s", flush=True)

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    predictions: list[dict] = []
    profiles: list[tuple[str, dict]] = []  # (title, table)
    engines: dict[tuple[str, str], object] = {}  # (engine name, model id) -> the engine its standard row measured
    notes = [header, f"device-to-device copy bandwidth (read+write counted): {bandwidth / 1e12:.2f} TB/s",
             f"hf_compiled and fast rows: {args.new_tokens} new tokens, median of {args.runs} runs after a "
             f"compile/warm-up call; 95% CI: percentile bootstrap over the runs",
             (f"hf rows: {hf_new} new tokens, 1 run after a 4-token warm-up" if not args.skip_hf else "hf rows skipped")]

    def save(final: bool = False) -> None:
        """Rewrite the output files with what exists so far: a run cut short keeps its finished rows."""
        order = {mid: i for i, mid in enumerate(short(m) for m in model_ids)}
        shown = sorted(rows, key=lambda r: (r.get("method", "").startswith("speculative"),
                                            order.get(r.get("model"), 99),
                                            ENGINE_ORDER.index(r["engine"]) if r.get("engine") in ENGINE_ORDER else 9))
        prediction_md = markdown(predictions, [("what", "what", 0), ("draft", "draft", 0), ("a", "acceptance a", 3),
                                               ("k", "k", 0), ("c", "c = draft/target step", 3),
                                               ("speedup", "speedup", 2)])
        extra = [] if final else [f"(partial: {len(rows)} rows so far)"]
        parts = ["# Fast engine benchmark", "", *[f"- {n}" for n in notes + extra], "", "## Results", "",
                 markdown([with_ci(r) for r in shown], RESULT_COLUMNS), "",
                 "## Speculative decoding: Leviathan et al. prediction vs measured", "", prediction_md, ""]
        if profiles:
            parts += ["## Profile: where a decode step's time goes", ""]
            for title, table in profiles:
                parts += [profile_markdown(title, table), ""]
        (out_dir / "fast_engine.md").write_text("\n".join(parts))
        with open(out_dir / "fast_engine.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(shown)
        with open(out_dir / "fast_engine_predictions.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["what", "draft", "a", "k", "c", "speedup"])
            writer.writeheader()
            writer.writerows(predictions)
        if profiles:
            with open(out_dir / "profile.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["profile", "kind", "kernels_per_step", "us_per_step", "pct_of_kernel_time"])
                for title, table in profiles:
                    for r in table["rows"]:
                        writer.writerow([title, r["kind"], r["kernels_per_step"], r["us_per_step"],
                                         r["pct_of_kernel_time"]])
                    for key in ("kernel_us", "busy_us", "idle_us", "step_us"):
                        writer.writerow([title, key, "", table[key], ""])

    def run_row(base: dict, body) -> dict:
        row = dict(base)
        t = time.perf_counter()
        try:
            row.update(body())
        except Exception as error:  # one failing row must not lose the others
            row["notes"] = f"FAILED: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
            traceback.print_exc()
        rows.append(row)
        print(f"  {row.get('engine')} {row.get('method')} {row.get('model')} {row.get('draft') or ''}: "
              f"{fmt(row.get('tok_s'))} tok/s, decode {fmt(row.get('decode_tok_s'))} tok/s "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
        save()
        return row

    def bandwidth_columns(models, row: dict) -> dict:
        gb = weight_bytes(models.target) / 1e9
        out = {"weight_gb_per_token": gb, "roofline_tok_s": bandwidth / (gb * 1e9)}
        if row.get("decode_tok_s") == row.get("decode_tok_s") and row.get("decode_tok_s"):
            out["weight_gb_s"] = gb * row["decode_tok_s"]
            out["pct_copy_bw"] = 100 * out["weight_gb_s"] * 1e9 / bandwidth
        return out

    def compiled_row(engine, models, request: Request) -> dict:
        t = time.perf_counter()
        timed(engine, request)  # compiles and captures the graphs
        first = time.perf_counter() - t
        row = measure(engine, request, args.runs)
        row.update(bandwidth_columns(models, row), compile_s=engine.compile_seconds, first_call_s=first)
        return row

    def profile(name: str, mid: str) -> None:
        """Where the decode steps' time goes on the engine the row just measured (its graphs are warm). Right after
        the row, so that a run cut short keeps the profiles of the rows it finished."""
        engine = engines.get((name, mid))
        if not args.profile or name not in profile_engines or engine is None:
            return
        models = loaded[mid]
        ids, mask = random_prompt(models, args.prompt_tokens)
        title = f"{name}, {short(mid)}"
        path = out_dir / "profile" / f"{name}_{short(mid)}.json"
        try:
            trace = profile_decode(engine, models, ids, mask, args.profile_steps, path)
            table = profile_table(trace, args.profile_steps, weight_bytes(models.target), bandwidth)
        except Exception:  # a profile that fails must not lose the rows
            traceback.print_exc()
            return
        profiles.append((f"{title} (trace: {path.relative_to(out_dir)})", table))
        print(profile_markdown(title, table), flush=True)
        save()

    # 1. fast engine, standard greedy, per model; first, so that a run cut short has it.
    standard: dict[str, dict] = {}
    for mid, models in loaded.items():
        ids, mask = random_prompt(models, args.prompt_tokens)
        engine = engines[("fast", mid)] = FastEngine(models)
        standard[mid] = run_row({"engine": "fast", "method": "standard", "model": short(mid)},
                                lambda e=engine, m=models, i=ids, a=mask: compiled_row(
                                    e, m, Request(i, a, args.new_tokens, args.new_tokens)))
        profile("fast", mid)
        if args.compare_unfused and mid == model_ids[0]:
            run_row({"engine": "fast", "method": "standard (unfused)", "model": short(mid)},
                    lambda m=models, i=ids, a=mask: compiled_row(
                        FastEngine(m, fuse=False), m, Request(i, a, args.new_tokens, args.new_tokens)))

    # 2. transformers generate, static cache, forward compiled by transformers: what a user tries first.
    if not args.skip_hf_compiled:
        for mid, models in loaded.items():
            ids, mask = random_prompt(models, args.prompt_tokens)
            engine = engines[("hf_compiled", mid)] = HFCompiledEngine(models)
            run_row({"engine": "hf_compiled", "method": "standard", "model": short(mid)},
                    lambda e=engine, m=models, i=ids, a=mask: compiled_row(
                        e, m, Request(i, a, args.new_tokens, args.new_tokens)))
            profile("hf_compiled", mid)

    # 3. transformers generate, eager, dynamic cache.
    if not args.skip_hf:
        for mid, models in loaded.items():
            ids, mask = random_prompt(models, args.prompt_tokens)
            engine = engines[("hf", mid)] = HFEngine(models)

            def hf_body(models=models, engine=engine, ids=ids, mask=mask):
                engine.generate(Request(ids, mask, 4, 4), NullProbe())  # warm-up: kernels, allocator
                row = measure(engine, Request(ids, mask, hf_new, hf_new), 1)
                row.update(bandwidth_columns(models, row))
                return row

            run_row({"engine": "hf", "method": "standard", "model": short(mid)}, hf_body)
            profile("hf", mid)

    # 4. the per-change variants, each in its own process (its graphs compiled with its own settings).
    for label, env in args.variant:
        print(f"== variant {label}: {env}", flush=True)
        try:
            rows.extend(run_variant(label, env, args, out_dir))
        except Exception as error:
            rows.append({"engine": "fast", "method": f"standard [{label}]", "notes": f"FAILED: {error}"})
        save()

    # 5. fast speculative on the largest model: a draft equal to the target, and the smallest model as draft.
    target_id = model_ids[-1]
    big = loaded[target_id]
    drafts = [(f"{short(target_id)} (itself)", big.target, 1.0)]
    c_measured = None
    if len(model_ids) > 1:
        small_ms, big_ms = standard[model_ids[0]].get("ms_per_token"), standard[target_id].get("ms_per_token")
        if small_ms and big_ms and small_ms == small_ms and big_ms == big_ms:
            c_measured = small_ms / big_ms
        drafts.append((f"{short(model_ids[0])} (independent random)", loaded[model_ids[0]].target, c_measured))
    if args.skip_speculative:
        drafts = []
    ids, mask = random_prompt(big, args.prompt_tokens)
    spec_rows = []
    for draft_name, draft_model, c in drafts:

        def spec_body(draft_model=draft_model):
            engine = FastEngine(dataclasses.replace(big, draft=draft_model))
            request = Request(ids, mask, args.new_tokens, args.new_tokens, use_draft=True, num_draft_tokens=k)
            t = time.perf_counter()
            timed(engine, request)
            first = time.perf_counter() - t
            row = measure(engine, request, args.runs)
            row.update(compile_s=engine.compile_seconds, first_call_s=first)
            base = standard[target_id].get("decode_tok_s")
            if base and base == base and row.get("decode_tok_s"):
                row["speedup_vs_fast_standard"] = row["decode_tok_s"] / base
            return row

        row = run_row({"engine": "fast", "method": "speculative", "model": short(target_id), "draft": draft_name,
                       "k": k}, spec_body)
        spec_rows.append((row, c))

    # 6. Leviathan et al.'s prediction next to the measurements.
    if c_measured is not None and not args.only_fast_standard:
        for a in (0.6, 0.7, 0.8):
            predictions.append({"what": "prediction", "draft": f"{short(model_ids[0])} (real weights, assumed a)",
                                "a": a, "k": k, "c": c_measured, "speedup": leviathan(a, k, c_measured)})
    for row, c in spec_rows:
        a = row.get("acceptance")
        if a is not None and c is not None:
            predictions.append({"what": "prediction at the measured acceptance", "draft": row["draft"], "a": a,
                                "k": k, "c": c, "speedup": leviathan(a, k, c)})
        if row.get("speedup_vs_fast_standard") is not None:
            predictions.append({"what": "measured (fast speculative / fast standard, decode tok/s)",
                                "draft": row["draft"], "a": a, "k": k, "c": c,
                                "speedup": row["speedup_vs_fast_standard"]})
    if c_measured is not None:
        notes.append(f"draft/target step time ratio c = {short(model_ids[0])} / {short(target_id)} fast ms/token "
                     f"= {c_measured:.3f}")

    try:
        from torch._dynamo.utils import counters

        breaks = sum(counters["graph_break"].values())
        notes.append(f"torch.compile: {breaks} graph breaks"
                     + (f" ({', '.join(list(counters['graph_break'])[:3])})" if breaks else ""))
        # Inductor counts graphs it could not run as CUDA graphs (TORCH_LOGS=perf_hints says why): must be 0.
        notes.append(f"CUDA graphs skipped: {counters['inductor'].get('cudagraph_skips', 0)}")
    except Exception:  # diagnostics only
        pass
    notes.append(f"total benchmark time {time.perf_counter() - started:.0f} s")
    save(final=True)
    print()
    print((out_dir / "fast_engine.md").read_text(), flush=True)
    print(f"wrote {out_dir / 'fast_engine.md'}, fast_engine.csv and fast_engine_predictions.csv"
          + (f"; profiles in {out_dir / 'profile'}, profile.csv" if profiles else ""), flush=True)
    return 0 if all("FAILED" not in str(r.get("notes", "")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

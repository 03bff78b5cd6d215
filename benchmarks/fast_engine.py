"""The fast engine against transformers' eager `generate` on one CUDA GPU: tokens per second, the memory bandwidth
decoding achieves, and what speculative decoding really gains next to what Leviathan et al.'s formula predicts.

Command (from the repository root, on a CUDA machine; random weights with the shipped Qwen3 configs, so nothing is
downloaded; about 3 to 4 minutes on an H100 including compilation, about 1.5 with --quick):

    python benchmarks/fast_engine.py [--models Qwen/Qwen3-0.6B,Qwen/Qwen3-4B] [--prompt-tokens 128] \\
        [--new-tokens 256] [--num-draft-tokens 4] [--runs 3] [--hf-new-tokens N] [--skip-hf] [--quick] \\
        [--skip-speculative] [--compare-unfused]

--compare-unfused adds a fast row for the smallest model run through the model's own forward (no q/k/v and gate/up
fusion: what BENCH_FAST_FUSE=0 does), so the effect of FusedForward shows in the same run (about +40 s on an H100).
BENCH_FAST_TUNING=0 (environment) compiles with inductor's defaults instead of gpt-fast's settings; compare two runs.

Every call: batch 1, a prompt of random token ids, a fixed output length (min_new_tokens = max_new_tokens), greedy.
`hf` rows run once after a short warm-up (eager decoding is slow and its figure is stable enough at this size);
`fast` rows run once to compile and capture CUDA graphs (reported apart, as "compile s"), then --runs times: the
median is reported. Clocks are read after torch.cuda.synchronize().

Columns of the results table (also written as CSV):
  engine         hf: transformers `generate`, eager, dynamic KV cache; fast: engines/fast/ (static KV cache,
                 torch.compile mode="reduce-overhead", i.e. CUDA graphs, no host sync per token)
  method         standard (greedy), or speculative with the draft in the next column and k draft tokens per round;
                 "standard (unfused)": the fast engine over the model's own forward (--compare-unfused)
  new tokens     tokens generated per call
  tok/s          new tokens / call latency (prefill included)
  decode tok/s   (new tokens - 1) / (latency - TTFT): the decode phase alone
  TTFT ms        time to the first new token (prefill and the first pick)
  GB/token       bytes of all parameters (tied embeddings counted once): what one batch-1 decode step reads
  weight GB/s    GB/token x decode tok/s: bandwidth the decode phase achieves on weights alone (standard rows)
  % copy BW      weight GB/s / the measured device-to-device copy bandwidth (read + write bytes counted)
  roofline tok/s copy bandwidth / GB per token: the batch-1 ceiling set by memory bandwidth
  accept         accepted / drafted draft tokens (speculative rows)
  speedup        decode tok/s / fast standard decode tok/s on the same target (speculative rows)
  compile s      fast engine: compile + CUDA-graph capture in the warm-up call, excluded from the timings

The second table compares speculative decoding with the prediction of Leviathan et al. (2023): with acceptance rate
a, k draft tokens per round and c = draft step time / target step time (measured: the fast standard ms/token of
the smallest model over the largest), the expected speedup is (1 - a^(k+1)) / ((1 - a) (k c + 1)). Random weights
make an independent draft agree almost never (a ~ 0: the row shows the overhead); a draft equal to the target
agrees almost always (c = 1: the row shows what verifying k+1 tokens in one forward costs). Real acceptance rates
need real weights; the a = 0.6 / 0.7 / 0.8 rows are predictions, labelled so.

Output: the tables on stdout, and fast_engine.md / fast_engine.csv in $OUT (if set) or --out-dir.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights from shipped configs: never reach for the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from bench.models import load_models  # noqa: E402
from decoding.types import NullProbe, Request  # noqa: E402
from engines.fast import FastEngine  # noqa: E402
from engines.hf import HFEngine  # noqa: E402
from metrics.timing import CallTimer  # noqa: E402

COLUMNS = ["engine", "method", "model", "draft", "k", "new_tokens", "runs", "tok_s", "decode_tok_s", "ms_per_token",
           "ttft_ms", "weight_gb_per_token", "weight_gb_s", "pct_copy_bw", "roofline_tok_s", "drafted", "accepted",
           "acceptance", "verify_steps", "speedup_vs_fast_standard", "compile_s", "first_call_s", "notes"]


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
    """Median latency and TTFT over `runs` calls, and the token counts of the last one."""
    calls = [timed(engine, request) for _ in range(runs)]
    latency = statistics.median(c["latency"] for c in calls)
    ttft = statistics.median(c["ttft"] for c in calls)
    g = calls[-1]["generation"]
    n = request.max_new_tokens
    decode_s = latency - ttft
    row = {"new_tokens": n, "runs": runs, "tok_s": n / latency, "ttft_ms": 1e3 * ttft,
           "decode_tok_s": (n - 1) / decode_s if n > 1 and decode_s > 0 else float("nan"),
           "ms_per_token": 1e3 * decode_s / (n - 1) if n > 1 else float("nan")}
    if g.drafted:
        row.update(drafted=g.drafted, accepted=g.accepted, acceptance=g.accepted / g.drafted,
                   verify_steps=g.verify_steps)
    if g.notes:
        row["notes"] = "; ".join(g.notes)
    return row


def copy_bandwidth(device: str, gib: float = 1.0, reps: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s, reads and writes both counted."""
    n = int(gib * 2**30)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    sync()
    seconds = time.perf_counter() - start
    del src, dst
    if device == "cuda":
        torch.cuda.empty_cache()
    return 2 * n * reps / seconds


def weight_bytes(model) -> int:
    # parameters() yields a tied embedding / lm_head matrix once, which is what a decode step reads once.
    return sum(p.numel() * p.element_size() for p in model.parameters())


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
                  ("decode_tok_s", "decode tok/s", 1), ("ms_per_token", "ms/token", 3), ("ttft_ms", "TTFT ms", 1),
                  ("weight_gb_per_token", "GB/token", 2), ("weight_gb_s", "weight GB/s", 0),
                  ("pct_copy_bw", "% copy BW", 1), ("roofline_tok_s", "roofline tok/s", 0),
                  ("acceptance", "accept", 2), ("speedup_vs_fast_standard", "speedup", 2),
                  ("compile_s", "compile s", 1), ("notes", "notes", 0)]


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
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-hf", action="store_true", help="no eager hf rows")
    parser.add_argument("--skip-speculative", action="store_true", help="no speculative rows (saves the compile of "
                        "the verify graphs, about a minute on an H100)")
    parser.add_argument("--compare-unfused", action="store_true", help="also run the smallest model through the "
                        "model's own forward (no fused projections), for an A/B in one run")
    parser.add_argument("--quick", action="store_true", help="64 new tokens (32 for hf), 1 run: a smoke test")
    parser.add_argument("--out-dir", default=os.environ.get("OUT") or "/tmp/fast_engine_bench")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of this script with tiny models "
                        "(--models tiny/draft,tiny/target), nothing compiled, figures meaningless")
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.runs = min(args.new_tokens, 64), 1
        args.hf_new_tokens = args.hf_new_tokens or 32
    hf_new = args.hf_new_tokens or args.new_tokens
    k = args.num_draft_tokens
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: this benchmark measures GPU decoding (the fast engine compiles only on CUDA); "
              "--device cpu runs a smoke test of the script")
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
    bandwidth = copy_bandwidth(args.device, 1.0 if args.device == "cuda" else 0.0625, 20 if args.device == "cuda" else 3)
    print(f"device-to-device copy bandwidth (read+write): {bandwidth / 1e12:.2f} TB/s", flush=True)

    model_ids = [m.strip() for m in args.models.split(",") if m.strip()]
    loaded = {}
    for mid in model_ids:
        t = time.perf_counter()
        loaded[mid] = load_models(mid, None, device=args.device, dtype=dtype, random_weights=True, attention="sdpa")
        print(f"loaded {mid} (random weights) in {time.perf_counter() - t:.1f} s", flush=True)

    rows: list[dict] = []

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
        return row

    def bandwidth_columns(models, row: dict) -> dict:
        gb = weight_bytes(models.target) / 1e9
        out = {"weight_gb_per_token": gb, "roofline_tok_s": bandwidth / (gb * 1e9)}
        if row.get("decode_tok_s") == row.get("decode_tok_s") and row.get("decode_tok_s"):
            out["weight_gb_s"] = gb * row["decode_tok_s"]
            out["pct_copy_bw"] = 100 * out["weight_gb_s"] * 1e9 / bandwidth
        return out

    # 1. transformers generate, eager, dynamic cache.
    if not args.skip_hf:
        for mid, models in loaded.items():
            ids, mask = random_prompt(models, args.prompt_tokens)
            engine = HFEngine(models)

            def hf_body(models=models, engine=engine, ids=ids, mask=mask):
                engine.generate(Request(ids, mask, 4, 4), NullProbe())  # warm-up: kernels, allocator
                row = measure(engine, Request(ids, mask, hf_new, hf_new), 1)
                row.update(bandwidth_columns(models, row))
                return row

            run_row({"engine": "hf", "method": "standard", "model": short(mid)}, hf_body)

    # 2. fast engine, standard greedy, per model.
    standard: dict[str, dict] = {}
    for mid, models in loaded.items():
        ids, mask = random_prompt(models, args.prompt_tokens)

        def fast_body(models=models, ids=ids, mask=mask, fuse=None):
            engine = FastEngine(models, fuse=fuse)
            request = Request(ids, mask, args.new_tokens, args.new_tokens)
            t = time.perf_counter()
            timed(engine, request)  # compiles and captures the graphs
            first = time.perf_counter() - t
            row = measure(engine, request, args.runs)
            row.update(bandwidth_columns(models, row), compile_s=engine.compile_seconds, first_call_s=first)
            return row

        standard[mid] = run_row({"engine": "fast", "method": "standard", "model": short(mid)}, fast_body)
        if args.compare_unfused and mid == model_ids[0]:
            run_row({"engine": "fast", "method": "standard (unfused)", "model": short(mid)},
                    lambda body=fast_body: body(fuse=False))

    # 3. fast speculative on the largest model: a draft equal to the target, and the smallest model as draft.
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

    # 4. Leviathan et al.'s prediction next to the measurements.
    predictions = []
    if c_measured is not None:
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

    results_md = markdown(rows, RESULT_COLUMNS)
    prediction_md = markdown(predictions, [("what", "what", 0), ("draft", "draft", 0), ("a", "acceptance a", 3),
                                           ("k", "k", 0), ("c", "c = draft/target step", 3),
                                           ("speedup", "speedup", 2)])
    notes = [header, f"device-to-device copy bandwidth (read+write counted): {bandwidth / 1e12:.2f} TB/s",
             f"fast rows: {args.new_tokens} new tokens, median of {args.runs} runs after a compile/warm-up call",
             (f"hf rows: {hf_new} new tokens, 1 run after a 4-token warm-up" if not args.skip_hf else "hf rows skipped")]
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
    report = "\n".join(["# Fast engine benchmark", "", *[f"- {n}" for n in notes], "", "## Results", "",
                        results_md, "", "## Speculative decoding: Leviathan et al. prediction vs measured", "",
                        prediction_md, ""])
    print()
    print(report, flush=True)

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fast_engine.md").write_text(report)
    with open(out_dir / "fast_engine.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(out_dir / "fast_engine_predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["what", "draft", "a", "k", "c", "speedup"])
        writer.writeheader()
        writer.writerows(predictions)
    print(f"wrote {out_dir / 'fast_engine.md'}, fast_engine.csv and fast_engine_predictions.csv", flush=True)
    return 0 if all("FAILED" not in str(r.get("notes", "")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

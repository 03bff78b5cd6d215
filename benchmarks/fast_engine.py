"""Three engines on one GPU, through the runner: transformers' eager `generate` (hf), transformers' own fast path
(hf_compiled: static cache + torch.compile) and the fast engine, decoding standard, speculative, prompt lookup and
batched. Per row: tok/s with its 95% interval, the share of the copy bandwidth decoding reaches, compile time (kept
out of the figures) and, for speculative rows, the draft/target step-time ratio c and Leviathan et al.'s prediction.

    python benchmarks/fast_engine.py [--models Qwen/Qwen3-0.6B,Qwen/Qwen3-4B | tiny] [--engines hf,hf_compiled,fast]
        [--methods standard,speculative,prompt_lookup,batched] [--batch-sizes 1,8,32] [--prompt-tokens 128]
        [--new-tokens 256] [--num-draft-tokens 4] [--runs 5] [--skip-hf] [--skip-hf-compiled] [--skip-speculative]
        [--quick] [--variant "LABEL:key=value[,key=value]"]... [--profile [--profile-steps 20]
        [--profile-engines fast,hf_compiled]] [--random-weights] [--device auto|cuda|cpu] [--out-dir DIR]

Every figure is a runner row (bench/runner.py), as for every other consumer: one runner run per model (random weights
with the shipped Qwen3 configs, nothing downloaded), smallest first, its rows measured interleaved, each median with
its 95% bootstrap interval over --runs repetitions of one prompt cut or repeated to --prompt-tokens tokens (greedy, a
fixed length, batch 1 but for the batched rows). Only the last model runs the methods that need a draft model, with
the first model as its draft (itself when it is alone); `standard` always runs, the baseline of the paired speedups.
`--models tiny` is the trained tiny pair (tiny/draft, tiny/target) with its own weights: a CPU smoke test.

--variant "LABEL:key=value,..." runs every model once more, in this process, with these config keys changed (engine
`fast` unless it sets `engine`; a list keeps its commas: methods=standard,batched). The compiler is reset before every
runner run (dynamo's graphs; inductor's settings as they were at start), so each run compiles its own graphs under its
own options, which its rows record in `engine_options`. Each variant compiles its models again. For example
    --variant "no fusion:fast_fuse=false" --variant "inductor defaults:fast_tuning=false"
    --variant "synced rounds:fast_nosync=false,methods=speculative" --variant "eager:compile=false"

--profile: after the runs, benchmarks/profile_decode.py traces --profile-steps decode steps per model and engine
(--profile-engines) with torch.profiler, outside every measured call, and adds its time-by-kind tables.

Output, in --out-dir (default $OUT, else /tmp/fast_engine_bench): the table on stdout and in fast_engine.md,
rewritten after every runner run; the rows in runs.csv (the runner's results file, appended: run_id tells invocations
apart; `python app.py --results OUT/runs.csv` shows them); profile/*.json and profile.csv with --profile. SIGTERM or
Ctrl-C stops like the dashboard's Stop: every row keeps its whole repetitions and the table of what finished is
written (exit code 130).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the project, and profile_decode.py beside this script
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights from shipped configs: never reach for the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.cli import convert  # noqa: E402
from bench.config import Config, ConfigError  # noqa: E402
from decoding import BASELINE, METHODS  # noqa: E402
from decoding.options import Kind  # noqa: E402
from metrics.prediction import constant_rate_tokens_per_round  # noqa: E402
from models.tiny import is_tiny  # noqa: E402
from profile_decode import markdown, profile_markdown, profile_runs, short, write_profile_csv  # noqa: E402

ENGINES = ("hf", "hf_compiled", "fast")
TINY = ("tiny/draft", "tiny/target")
# One prompt, cut or repeated to --prompt-tokens: its repeated sentence gives prompt lookup something to copy.
PROMPT = ("Summarise the following and quote its key sentence: The mitochondria is the powerhouse of the cell. It "
          "produces ATP through oxidative phosphorylation, and the mitochondria is the powerhouse of the cell.")
ASSUMED = (0.6, 0.7, 0.8)  # acceptance rates real weights might reach: predictions, never measurements
BOOLS = {"true": True, "false": False}
COLUMNS = [("engine", "engine", 0), ("method", "method", 0), ("model", "model", 0), ("setting", "setting", 0),
           ("variant", "variant", 0), ("status", "status", 0), ("tok_s", "tok/s", 1), ("ci", "95% CI", 0),
           ("agg", "agg tok/s", 1), ("ttft", "TTFT ms", 1), ("tpot", "TPOT ms", 2), ("bw", "% copy BW", 1),
           ("copy", "copy GB/s", 0), ("accept", "accept", 2), ("speedup", "speedup", 2), ("c", "c", 3),
           ("predicted", "predicted", 2), ("compile", "compile s", 1)]


def listed(cast=str):
    return lambda text: [cast(x.strip()) for x in text.split(",") if x.strip()]


def parse_variant(text: str) -> tuple[str, dict]:
    """'LABEL:key=value[,key=value]' -> (LABEL, {key: value}), each value read as its config flag reads it; a piece
    without '=' continues the list before it (methods=standard,batched)."""
    label, sep, rest = text.partition(":")
    pairs, key = {}, None
    for piece in filter(None, (p.strip() for p in rest.split(","))):
        if "=" in piece:
            key, value = (x.strip() for x in piece.split("=", 1))
            pairs[key] = value
        elif key:
            pairs[key] += "," + piece
    known = {f.name: f for f in fields(Config)}
    try:
        if not sep or not label.strip() or not pairs:
            raise ValueError("use LABEL:key=value[,key=value]")
        if unknown := sorted(set(pairs) - set(known)):
            raise ValueError(f"unknown config key {', '.join(unknown)}")
        if bad := [k for k, v in pairs.items() if known[k].metadata["type"] == Kind("bool") and v.lower() not in BOOLS]:
            raise ValueError(f"{', '.join(bad)}: use true or false")
        return label.strip(), {k: BOOLS[v.lower()] if known[k].metadata["type"] == Kind("bool") else convert(known[k], v)
                               for k, v in pairs.items()}
    except (ValueError, ConfigError) as e:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: {e}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="Qwen/Qwen3-0.6B,Qwen/Qwen3-4B",
                   help="comma-separated, smallest first: the first drafts for the last; tiny: tiny/draft,tiny/target")
    p.add_argument("--engines", type=listed(), default=list(ENGINES), help="of hf, hf_compiled, fast")
    p.add_argument("--methods", type=listed(), default=["standard", "speculative", "prompt_lookup", "batched"])
    p.add_argument("--batch-sizes", type=listed(int), default=[1, 8, 32], help="of the batched rows")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--num-draft-tokens", "-k", type=int, default=4)
    p.add_argument("--runs", type=int, default=5, help="measured repetitions per row, after one warm-up call")
    p.add_argument("--skip-hf", action="store_true", help="no eager hf rows")
    p.add_argument("--skip-hf-compiled", action="store_true", help="no hf_compiled rows (saves their compiles)")
    p.add_argument("--skip-speculative", action="store_true", help="no rows that need a draft model")
    p.add_argument("--quick", action="store_true", help="a smoke test: at most 64 new tokens, 1 run, batches <= 8")
    p.add_argument("--variant", action="append", type=parse_variant, default=[], metavar="LABEL:key=value",
                   help="run every model once more with these config keys changed (repeatable)")
    p.add_argument("--random-weights", action=argparse.BooleanOptionalAction, default=None,
                   help="default: random weights, but the tiny models' own")
    p.add_argument("--profile", action="store_true", help="trace decode steps per model and engine with "
                   "torch.profiler (benchmarks/profile_decode.py): traces under OUT/profile/, time-by-kind tables")
    p.add_argument("--profile-steps", type=int, default=20)
    p.add_argument("--profile-engines", type=listed(), default=["fast", "hf_compiled"])
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--out-dir", default=os.environ.get("OUT") or "/tmp/fast_engine_bench")
    return p


def configs(args, model_ids: list[str], overrides: dict, label: str, results: Path) -> list[Config]:
    """One Config per model; raises ConfigError, naming the key, before anything loads."""
    out = []
    for mid in model_ids:
        last = mid == model_ids[-1]
        data = dict(model=mid, draft_model=model_ids[0] if last else None, engine=args.engines, methods=args.methods,
                    prompts=[PROMPT], prompt_length=args.prompt_tokens, chat_template=False,
                    max_new_tokens=args.new_tokens, batch_sizes=args.batch_sizes, speculative_modes=["greedy"],
                    num_draft_tokens=args.num_draft_tokens, device=args.device, random_weights=args.random_weights,
                    warmup=1, repetitions=args.runs, name="fast_engine" + (f" [{label}]" if label else ""),
                    tags="fast_engine", results=str(results))
        data.update({"engine": ["fast"]} if label else {}, **overrides)
        drafting = [m for m in data["methods"] if m in METHODS and METHODS[m].needs_draft]
        data["methods"] = [m for m in data["methods"] if last or m not in drafting]
        if data["methods"] and BASELINE not in data["methods"]:  # every speedup is paired against it, per run
            data["methods"] = [BASELINE, *data["methods"]]
        if data["methods"]:
            out.append(Config.from_dict(data))
    return out


def fresh_compiler(inductor_settings: bytes) -> None:
    """Every runner run compiles its own graphs: the fast engine's compiled wrappers live for the process, so without
    this a later run would replay the graphs of the runs before it (and inductor's settings go back to the start's,
    whatever a run changed)."""
    import torch
    import torch._inductor.config

    torch._dynamo.reset()
    torch._inductor.config.load_config(inductor_settings)


def number(row: dict, key: str, scale: float = 1.0):
    value = row.get(key)
    return value * scale if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value else None


def times(row: dict, key: str) -> str:
    return "n/a" if (value := number(row, key)) is None else f"{value:.2f}x"


def display(row: dict) -> dict:
    low, high = number(row, "tokens_per_s_per_sequence_ci_low"), number(row, "tokens_per_s_per_sequence_ci_high")
    return {"engine": row["engine"], "method": row["method"], "model": short(row["model"]), "setting": row["setting"],
            "variant": row["variant"], "status": row["status"],
            "tok_s": number(row, "tokens_per_s_per_sequence_median"),
            "ci": f"{low:,.1f}-{high:,.1f}" if low is not None and high is not None else "",
            "agg": number(row, "aggregate_tokens_per_s_median"), "ttft": number(row, "ttft_ms_median"),
            "tpot": number(row, "tpot_ms_median"), "bw": number(row, "mbu", 100),
            "copy": number(row, "copy_bandwidth_gbs"),
            "accept": number(row, "acceptance_rate"), "speedup": number(row, "speedup_vs_standard"),
            "c": number(row, "draft_step_ratio"), "predicted": number(row, "predicted_speedup"),
            "compile": number(row, "compile_s")}


def report(rows: list[dict], profiles: list, notes: list[str]) -> str:
    parts = ["# Fast engine benchmark", "", *[f"- {n}" for n in notes], "", "## Results", "",
             markdown([display(r) for r in rows], COLUMNS), ""]
    failed = [f"- {r['engine']} {r['method']} {r['setting']} {short(r['model'])}: {r['status']}: {r['error']}"
              for r in rows if r["status"] != "ok"]
    parts += ["Rows that failed:", "", *failed, ""] if failed else []
    predictions = []
    for r in rows:  # rows whose draft is a model: c > 0
        c, k = number(r, "draft_step_ratio"), number(r, "num_draft_tokens")
        if c and k:
            at = ", ".join(f"{a}: {constant_rate_tokens_per_round(a, int(k)) / (k * c + 1):.2f}x" for a in ASSUMED)
            what = f"{r['engine']} {short(r['model'])}, draft model {short(r['draft_model'])}, {r['setting']}" + \
                (f" [{r['variant']}]" if r["variant"] else "")
            predictions.append(f"- {what}: c = {c:.3f}; measured {times(r, 'speedup_vs_standard')}, predicted at the "
                               f"measured acceptance {times(r, 'predicted_speedup')}, at an assumed one {at}")
    if predictions:
        parts += ["## Speculative decoding: Leviathan et al.'s prediction", "",
                  "(1 - a^(k+1)) / ((1 - a)(k c + 1)), c = draft step time / target step time timed after the row; "
                  "with random weights a draft agrees almost never; the assumed rates are predictions only.", "",
                  *predictions, ""]
    if profiles:
        parts += ["## Profile: where a decode step's time goes", ""]
        parts += [part for title, table in profiles for part in (profile_markdown(title, table), "")]
    return "\n".join(parts)


def header(rows: list[dict], args, model_ids: list[str]) -> list[str]:
    import torch
    from torch._dynamo.utils import counters

    r = rows[0] if rows else {}
    notes = [f"{r.get('device_name', '?')}; torch {r.get('torch_version', '?')}; transformers "
             f"{r.get('transformers_version', '?')}; {r.get('dtype', '?')}",
             f"models {', '.join(model_ids)} ({'random' if args.random_weights else 'their own'} weights), one "
             f"{args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, greedy, fixed length; {args.runs} "
             f"repetition(s) per row after a warm-up call, the rows of a run measured interleaved; 95% CI: percentile "
             f"bootstrap over the calls; speedup: paired against the same run and engine's standard row"]
    if r.get("device") == "cpu":
        notes.append("CPU: nothing is compiled and there is no copy bandwidth; a smoke test, figures meaningless")
    if torch.cuda.is_available():  # diagnostics read outside every measured call
        breaks = counters["graph_break"]
        notes.append(f"torch.compile: {sum(breaks.values())} graph breaks {list(breaks)[:3] or ''}; CUDA graphs "
                     f"skipped: {counters['inductor'].get('cudagraph_skips', 0)} (must be 0; TORCH_LOGS=perf_hints)")
    return notes


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        args.new_tokens, args.runs = min(args.new_tokens, 64), 1
        args.batch_sizes = [b for b in args.batch_sizes if b <= 8] or [1]
    skipped = {"hf": args.skip_hf, "hf_compiled": args.skip_hf_compiled}
    args.engines = [e for e in args.engines if not skipped.get(e)]
    args.methods = [m for m in args.methods if not (args.skip_speculative and m in METHODS and METHODS[m].needs_draft)]
    model_ids = list(TINY) if args.models.strip() == "tiny" else listed()(args.models)
    if args.random_weights is None:
        args.random_weights = not all(is_tiny(m) for m in model_ids)
    out_dir = Path(args.out_dir)
    try:
        if args.profile and set(args.profile_engines) - set(ENGINES):
            raise ConfigError(f"--profile-engines: use some of {', '.join(ENGINES)}")
        plans = [(label, c) for label, overrides in [("", {})] + args.variant
                 for c in configs(args, model_ids, overrides, label, out_dir / "runs.csv")]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import torch._inductor.config

    from bench.runner import Progress, RowDone, Stopped, run
    from store.files import StoreError

    settings, rows, profiles, stop = torch._inductor.config.save_config(), [], [], threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("stopping: keeping every row's whole repetitions (again to abort at once)", file=sys.stderr, flush=True)

    def save() -> str:
        text = report(rows, profiles, header(rows, args, model_ids))
        (out_dir / "fast_engine.md").write_text(text)
        if profiles:
            write_profile_csv(out_dir / "profile.csv", profiles)
        return text

    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    try:
        for label, config in plans:
            if stop.is_set():
                break
            fresh_compiler(settings)
            print(f"== {short(config.model)}{f' [{label}]' if label else ''}: {', '.join(config.engine)} x "
                  f"{', '.join(config.methods)}", flush=True)
            said = None
            try:
                for event in run(config, stop):
                    if isinstance(event, RowDone):
                        rows.append(dict(event.row, variant=label))
                    elif isinstance(event, Progress) and event.message != said:
                        print(f"   {(said := event.message)}", file=sys.stderr, flush=True)
            except Stopped:
                break
            finally:
                save()
        if args.profile and not stop.is_set():
            fresh_compiler(settings)
            profiles = profile_runs([c for label, c in plans if not label], args.profile_engines, args.profile_steps,
                                    args.prompt_tokens, out_dir)
    except KeyboardInterrupt:
        stop.set()
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("\n" + save(), flush=True)
    print(f"wrote {out_dir / 'fast_engine.md'}; rows appended to {out_dir / 'runs.csv'}"
          + (f"; profiles in {out_dir / 'profile'}, profile.csv" if profiles else ""), flush=True)
    if stop.is_set():
        print(f"stopped: {len(rows)} rows with their whole repetitions kept", file=sys.stderr)
        return 130
    return 0 if rows and all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

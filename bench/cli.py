"""Command line: `python app.py --preset tiny` runs headless; `python app.py` starts the dashboard."""
from __future__ import annotations

import argparse
import os
import sys
import threading

from bench.config import Config, ConfigError, default_of, field_help, preset_names, preset_path, read_json

# flag -> (config key, parser). Lists are comma separated.
def comma(kind):
    def convert(text):
        return [kind(x.strip()) for x in text.split(",") if x.strip()]
    convert.__name__ = f"a comma-separated list of {'integers' if kind is int else 'names'}"
    return convert


OVERRIDES = {
    "methods": ("methods", comma(str)), "model": ("model", str), "draft_model": ("draft_model", str),
    "max_new_tokens": ("max_new_tokens", int), "results": ("results", str), "engine": ("engine", comma(str)),
    "device": ("device", str), "dtype": ("dtype", str), "quantization": ("quantization", comma(str)),
    "attention": ("attention", comma(str)), "batch_sizes": ("batch_sizes", comma(int)),
    "repetitions": ("repetitions", int), "warmup": ("warmup", int), "seed": ("seed", int),
    "prompt": ("prompts", None), "completions": ("completions_per_prompt", int),
    "num_draft_tokens": ("num_draft_tokens", int),
}


def parser() -> argparse.ArgumentParser:
    keys = "\n".join(f"  {k:<26} {h} ({allowed}; default {default_of(Config.__dataclass_fields__[k])!r})"
                     for k, (h, allowed) in field_help().items())
    p = argparse.ArgumentParser(
        prog="app.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare LLM decoding methods (greedy, nucleus, beam search, batched, speculative, prompt lookup) "
                    "on speed, latency and memory. With --preset or --config: a headless run; without: the dashboard.",
        epilog=f"presets: {', '.join(preset_names())}\n\nconfig keys (presets and --config files use these):\n{keys}")
    p.add_argument("--preset", help="run a preset from presets/ headless")
    p.add_argument("--config", help="run a JSON config file headless (same keys as a preset)")
    p.add_argument("--methods", help="comma-separated methods, e.g. standard,speculative")
    p.add_argument("--model", help="target model id or folder")
    p.add_argument("--draft-model", help="draft model id or folder ('' for none)")
    p.add_argument("--max-new-tokens", help="new tokens per sequence")
    p.add_argument("--results", help="CSV to append rows to (outputs.jsonl goes beside it)")
    p.add_argument("--engine", help="hf, fast, or hf,fast to compare")
    p.add_argument("--device", help="auto, cuda or cpu")
    p.add_argument("--dtype", help="auto, bfloat16, float16 or float32")
    p.add_argument("--quantization", help="none, bnb-4bit, bnb-8bit (comma list sweeps)")
    p.add_argument("--attention", help="eager, sdpa, flash_attention_2 (comma list sweeps)")
    p.add_argument("--batch-sizes", help="comma-separated batch sizes for the batched method")
    p.add_argument("--repetitions", help="measured repetitions per row")
    p.add_argument("--warmup", help="warm-up calls per row")
    p.add_argument("--seed", help="seed")
    p.add_argument("--prompt", action="append", help="a prompt (repeat for several); replaces the preset's")
    p.add_argument("--completions", help="completions per prompt")
    p.add_argument("--num-draft-tokens", help="k for speculative decoding")
    p.add_argument("--random-weights", action="store_true", default=None, help="random weights from the model config")
    p.add_argument("--host", default="127.0.0.1", help="dashboard host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="dashboard port (default 7860)")
    p.add_argument("--share", action="store_true", help="dashboard: public share link (needs --auth)")
    p.add_argument("--auth", help="dashboard login USER:PASSWORD (or env BENCH_AUTH)")
    return p


def config_dict(args) -> dict:
    data: dict = {}
    if args.preset:
        data.update(read_json(preset_path(args.preset)))
    if args.config:
        data.update(read_json(args.config))
    for flag, (key, convert) in OVERRIDES.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if key == "prompts":
            data[key] = value
            continue
        try:
            data[key] = convert(value)
        except ValueError:
            raise ConfigError(f"flag --{flag.replace('_', '-')} got {value!r}: expected {'an integer' if convert is int else convert.__name__} "
                              f"(see config key '{key}' in --help)")
    if args.random_weights:
        data["random_weights"] = True
    return data


def headless(config: Config) -> int:
    from tqdm import tqdm

    from bench.report import table
    from bench.runner import Progress, RowDone, Stopped, run, total_rows

    rows = []
    bar = tqdm(total=total_rows(config), unit="row", file=sys.stderr, dynamic_ncols=True)
    try:
        for event in run(config):
            if isinstance(event, Progress):
                bar.set_description(event.message[:70])
            elif isinstance(event, RowDone):
                rows.append(event.row)
                bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: {len(rows)} finished rows kept in {config.results}", file=sys.stderr)
        return 130
    bar.close()
    print(table(rows))
    print(f"\n{len(rows)} rows appended to {config.results}; texts in "
          f"{os.path.join(os.path.dirname(config.results) or '.', 'outputs.jsonl')}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if not args.preset and not args.config:
            from bench.dashboard import launch_from_args

            return launch_from_args(args)
        config = Config.from_dict(config_dict(args))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return headless(config)

"""Retrains the shipped tiny pair (models/tiny/): the command around models/tiny/train.py, whose docstring says what
it does. It lives here, above the layers, because the acceptance figures it records are counted on the benchmark's
own fast engine, exactly as the runner counts them.

    python scripts/train_tiny.py                   # rewrites models/tiny/ (13-17 min, one CPU core)
    python scripts/train_tiny.py --smoke --out DIR # seconds: tiny shapes, a few files and steps (the tests run it)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, when run as a script

from models.tiny import train as train_module  # noqa: E402
from models.tiny.train import Settings, default_out, smoke, train  # noqa: E402


def decode_counts(models, prompts: list[str], new_tokens: int, *, k: int = 4, lookup: int = 0) -> dict:
    """Greedy speculative decoding (k drafts) or prompt lookup (lookup > 0) on the benchmark's fast engine, one prompt
    at a time and a forced length, as the runner counts it: drafted, accepted, and the acceptance rate."""
    from decoding.types import NullProbe, Request
    from engines.fast import FastEngine

    engine = FastEngine(models)
    drafted = accepted = 0
    for prompt in prompts:
        x = models.tokenizer([prompt], return_tensors="pt")
        request = Request(x.input_ids, x.attention_mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                          use_draft=not lookup, num_draft_tokens=k, prompt_lookup_num_tokens=lookup)
        g = engine.generate(request, NullProbe())
        drafted, accepted = drafted + g.drafts.drafted, accepted + g.drafts.accepted
    return dict(drafted=drafted, accepted=accepted, acceptance=round(accepted / drafted, 4) if drafted else None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/train_tiny.py", description=train_module.__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(default_out()), help="folder for target/, draft/ and the records "
                   "(default: the shipped models/tiny)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, a few files and steps: checks the script runs")
    p.add_argument("--steps", type=int, help="target steps (default 1500)")
    p.add_argument("--draft-steps", type=int, help="draft steps (default 600)")
    p.add_argument("--draft-objective", choices=("distilled", "data"),
                   help="distilled (default): the target's distribution on its own continuations; data: the text")
    p.add_argument("--draft-layers", type=int, help="the draft's layers (default 2)")
    p.add_argument("--target-from", help="a folder with a trained target/ (and its tokenizer): train only the draft")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other setting of Settings (JSON value)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default 1: faster than 2 on a shared machine)")
    args = p.parse_args(argv)
    s = smoke(args.out) if args.smoke else Settings(out=args.out)
    for key in ("steps", "draft_steps", "draft_objective", "target_from", "seed", "threads"):
        if getattr(args, key) is not None:
            setattr(s, key, getattr(args, key))
    for item in args.set or []:
        key, _, value = item.partition("=")
        if key not in {f.name for f in dataclasses.fields(Settings)}:
            p.error(f"--set {item}: no setting '{key}'")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        setattr(s, key, value)
    if args.draft_layers:
        s.draft = dict(s.draft, num_hidden_layers=args.draft_layers)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train(s, decode_counts, log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

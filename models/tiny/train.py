"""Training the shipped tiny pair (`tiny/target`, `tiny/draft`) on the Python standard library.

    python scripts/train_tiny.py                  # the shipped pair: rewrites models/tiny/ (13-17 min, one CPU core)
    python scripts/train_tiny.py --out DIR        # anywhere else
    python scripts/train_tiny.py --smoke --out DIR    # seconds: tiny shapes, a few files and steps (the tests run it)
    python scripts/train_tiny.py --target-from models/tiny --draft-objective data --out DIR   # only a draft

Corpus: every `.py` file of the running interpreter's standard library (`sysconfig.get_paths()["stdlib"]`), code and
docstrings as written, without the test suites, IDLE, lib2to3, turtledemo, the codec tables, pydoc's topic dump and
site-packages. Split BY FILE: a file is held out when the sha256 of its relative path, read as a number, is 0
modulo 10 (about a tenth of the files, the same ones on every machine); nothing of a held-out file is seen by the
tokenizer or the models.

One byte-level BPE tokenizer (the `tokenizers` library, GPT-2 style pre-tokenization, 4096 tokens) is trained on
the training files and shared by both models. `<|endoftext|>` separates files and is the EOS; `<|pad|>` pads. Both
models are Qwen3 (`Qwen3ForCausalLM`), trained in float32 from fixed seeds and shipped in float16.

1. The target (4 layers, d = 256) learns the next token of random training windows (cross-entropy, AdamW, warm-up
   and cosine decay).
2. The draft (2 layers, d = 128) is distilled from the finished target: it learns the target's whole next-token
   distribution (KL divergence to the target's softmax) on sequences of training text followed by the target's own
   greedy continuation of it, the states in which it will draft. `--draft-objective data` trains it on the text
   instead (cross-entropy, same steps and tokens); distillation is the default because its drafts are accepted far
   more often (the figures are in the README).

Written beside the models: `training.json` (settings, corpus, timings, final figures), `curve.csv` (the training
curve of both phases) and `checksums.sha256` (sha256 of every shipped file, `sha256sum -c` format; the tests verify
it). The figures are measured on what ships: the float16 files, loaded in float32 as the benchmark loads them.

The corpus, tokenizer and windows are corpus.py's, the models, losses and held-out figures learning.py's, the shipped
files and checksums shipping.py's; `train` runs the two phases and records them. Acceptance is counted as the runner
counts it, on the benchmark's fast engine, which lies above this layer: the command (scripts/train_tiny.py) hands
`train` that count.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from models.tiny.corpus import (
    HELDOUT_MODULUS,
    encode,
    eval_windows,
    heldout_snippets,
    read_split,
    sample_batch,
    sample_windows,
    stdlib_root,
    tiny_prompts,
    train_tokenizer,
)
from models.tiny.learning import agreement, ce_loss, heldout_loss, kd_loss, lr_at, make_model, optimizer
from models.tiny.shipping import SHIPPED_FILES, save, write_checksums


@dataclasses.dataclass
class Settings:
    out: str
    seed: int = 0
    threads: int = 1  # on a shared machine one thread is faster: OpenMP threads wait for each other at every op
    vocab_size: int = 4096
    seq_len: int = 256
    batch_size: int = 4
    steps: int = 1500  # target steps
    draft_steps: int = 600
    draft_objective: str = "distilled"  # or "data": the next token of the text, to compare
    draft_batch: int = 8
    draft_prefix: int = 96  # training text before the target's continuation
    draft_new: int = 64  # tokens of the target's greedy continuation
    generate_batch: int = 64  # continuations made per target generate call
    generate_reuse: int = 2  # each continuation is learnt from this many times (in a new order each time)
    target_from: str = ""  # a folder with a trained target/: train only the draft
    lr: float = 3e-3
    draft_lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.1
    log_every: int = 10
    eval_every: int = 100
    eval_windows: int = 64  # held-out windows of seq_len tokens for the final perplexity
    curve_eval_windows: int = 8  # held-out windows evaluated along the curve
    max_files: int = 0  # 0: all files (the smoke test uses a few)
    snippets: int = 8  # held-out snippets for the acceptance figures
    new_tokens: int = 32
    target: dict = dataclasses.field(default_factory=lambda: dict(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        intermediate_size=768))
    draft: dict = dataclasses.field(default_factory=lambda: dict(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=64,
        intermediate_size=384))


def smoke(out: str) -> Settings:
    """Seconds instead of minutes: the same code path with tiny shapes, a few files and steps."""
    return Settings(out=out, vocab_size=320, seq_len=64, batch_size=2, steps=3, draft_steps=3, draft_batch=2,
                    draft_prefix=16, draft_new=8, generate_batch=4, warmup_steps=1, log_every=1, eval_every=2,
                    eval_windows=2, curve_eval_windows=1, max_files=6, snippets=2, new_tokens=8,
                    target=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                head_dim=16, intermediate_size=64),
                    draft=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
                               head_dim=16, intermediate_size=32))


# -- the figures the benchmark reports ---------------------------------------------------------------------------------


def load_pair(folder: Path, draft: str = "draft"):
    """The saved pair as the benchmark loads it (float32 on the CPU)."""
    from models.loading import load_models

    return load_models(str(folder / "target"), str(folder / draft), device="cpu", dtype="float32")


# -- the run ----------------------------------------------------------------------------------------------------------


def target_continuations(target, stream, generator, n: int, prefix: int, new: int, pad_token_id: int):
    """n sequences of `prefix` tokens of training text followed by the target's greedy continuation of `new` tokens:
    the states the draft meets when it drafts for the target (its loops and habits included)."""
    import torch

    prompts = sample_windows(stream, n, prefix, generator)
    with torch.inference_mode():
        out = target.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new,
                              min_new_tokens=new, do_sample=False, pad_token_id=pad_token_id)
    return out.clone()


def train(s: Settings, count, log=print) -> dict:
    """count(models, prompts, new_tokens, lookup=0) -> {drafted, accepted, acceptance}: greedy speculative decoding
    (k = 4) or prompt lookup as the benchmark counts it (scripts/train_tiny.py passes the fast engine's)."""
    import torch

    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    started = time.perf_counter()
    out = Path(s.out)

    train_files, heldout_files = read_split(s.max_files)
    t0 = time.perf_counter()
    if s.target_from:  # draft experiments: keep a trained target and its tokenizer
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(Path(s.target_from) / "target")
        target = AutoModelForCausalLM.from_pretrained(Path(s.target_from) / "target", dtype=torch.float32)
    else:
        tokenizer = train_tokenizer([t for _, t in train_files], s.vocab_size)
        target = make_model(s.target, tokenizer, s.seed)
    tokenizer_s = time.perf_counter() - t0
    stream = encode(tokenizer, [t for _, t in train_files])
    held = encode(tokenizer, [t for _, t in heldout_files])
    corpus = dict(
        stdlib=portable(stdlib_root(), Path(sys.base_prefix), "<python prefix>"), python=platform.python_version(),
        train_files=len(train_files),
        heldout_files=len(heldout_files), train_bytes=sum(len(t.encode()) for _, t in train_files),
        heldout_bytes=sum(len(t.encode()) for _, t in heldout_files), train_tokens=len(stream),
        heldout_tokens=len(held), split=f"held out: sha256(relative path) % {HELDOUT_MODULUS} == 0")
    log(f"corpus: {corpus['train_files']} train files ({corpus['train_tokens']:,} tokens), "
        f"{corpus['heldout_files']} held-out files ({corpus['heldout_tokens']:,} tokens); "
        f"tokenizer of {len(tokenizer)} tokens in {tokenizer_s:.1f} s")

    generator = torch.Generator().manual_seed(s.seed)
    curve_windows = eval_windows(held, s.seq_len, s.curve_eval_windows)
    curve: list[dict] = []
    t_train = time.perf_counter()

    def update(model, opt, loss, lr: float) -> None:
        for group in opt.param_groups:
            group["lr"] = lr
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def record(phase: str, step: int, last: int, tokens: int, lr: float, losses: list[float], model) -> None:
        row = dict(phase=phase, step=step, tokens=tokens, elapsed_s=round(time.perf_counter() - t_train, 1),
                   lr=round(lr, 6), train_loss=round(sum(losses) / len(losses), 4), heldout_loss="")
        if step % s.eval_every == 0 or step == last:
            row["heldout_loss"] = round(heldout_loss(model, curve_windows), 4)
        curve.append(row)
        log(" ".join(f"{k}={v}" for k, v in row.items() if v != ""))
        losses.clear()

    # Phase 1: the target learns the next token of the text.
    losses: list[float] = []
    target.train()
    opt = optimizer(target, s.lr, s.weight_decay)
    steps = 0 if s.target_from else s.steps
    for step in range(1, steps + 1):
        x, y = sample_batch(stream, s.batch_size, s.seq_len, generator)
        lr = lr_at(step - 1, steps, s.lr, s.warmup_steps)
        loss = ce_loss(target(input_ids=x).logits, y)
        update(target, opt, loss, lr)
        losses.append(float(loss.detach()))
        if step % s.log_every == 0 or step == steps:
            record("target", step, steps, step * s.batch_size * s.seq_len, lr, losses, target)
    del opt
    # The draft learns from the target as shipped (float16 weights), with its own random stream: a draft trained with
    # --target-from on the shipped target is the same draft as the one a full run makes.
    target.eval().requires_grad_(False).to(torch.float16).to(torch.float32)
    generator = torch.Generator().manual_seed(s.seed + 1)
    target_s = time.perf_counter() - t_train

    # Phase 2: the draft. "distilled": it learns the target's whole next-token distribution (KL divergence to the
    # target's softmax) on training text followed by the target's own greedy continuation of it. "data": it learns
    # the next token of plain training windows of the same length instead (kept to compare the two).
    draft = make_model(s.draft, tokenizer, s.seed + 1).train()
    opt = optimizer(draft, s.draft_lr, s.weight_decay)
    pool = None
    length = s.draft_prefix + s.draft_new
    for step in range(1, s.draft_steps + 1):
        lr = lr_at(step - 1, s.draft_steps, s.draft_lr, s.warmup_steps)
        if s.draft_objective == "distilled":
            if pool is None or len(pool) < s.draft_batch:
                made = target_continuations(target, stream, generator, s.generate_batch, s.draft_prefix,
                                            s.draft_new, tokenizer.pad_token_id)
                pool = torch.cat([made[torch.randperm(len(made), generator=generator)]
                                  for _ in range(s.generate_reuse)])
            x, pool = pool[:s.draft_batch], pool[s.draft_batch:]
            with torch.inference_mode():
                teacher = target(input_ids=x).logits.clone()
            loss = kd_loss(draft(input_ids=x).logits, teacher)
        else:
            x, y = sample_batch(stream, s.draft_batch, length, generator)
            loss = ce_loss(draft(input_ids=x).logits, y)
        update(draft, opt, loss, lr)
        losses.append(float(loss.detach()))
        if step % s.log_every == 0 or step == s.draft_steps:
            record(f"draft ({s.draft_objective})", step, s.draft_steps, step * s.draft_batch * length, lr, losses,
                   draft)
    draft.eval()
    train_s = time.perf_counter() - t_train

    # Ship, then measure what was shipped: float16 weights, loaded as the benchmark loads them.
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out))
    save(target, tokenizer, staging / "target")
    save(draft, tokenizer, staging / "draft")
    for name in ("target", "draft"):
        shutil.rmtree(out / name, ignore_errors=True)
        os.replace(staging / name, out / name)
    shutil.rmtree(staging, ignore_errors=True)
    models = load_pair(out)
    windows = eval_windows(held, s.seq_len, s.eval_windows)
    snippets = heldout_snippets(heldout_files, s.snippets)
    prompts = tiny_prompts()
    figures = dict(
        heldout_eval_tokens=int(windows[:, 1:].numel()),
        heldout_ppl_target=round(math.exp(heldout_loss(models.target, windows)), 3),
        heldout_ppl_draft=round(math.exp(heldout_loss(models.draft, windows)), 3),
        heldout_argmax_agreement=round(agreement(models.target, models.draft, windows), 4),
        k=4, new_tokens=s.new_tokens,
        acceptance_preset_prompts=count(models, prompts, s.new_tokens),
        acceptance_heldout_snippets=count(models, snippets, s.new_tokens),
        prompt_lookup_preset_prompts=[count(models, [p], s.new_tokens, lookup=10) for p in prompts],
        params_target=sum(p.numel() for p in models.target.parameters()),
        params_draft=sum(p.numel() for p in models.draft.parameters()),
        shipped_bytes=sum((out / n / f).stat().st_size for n in ("target", "draft") for f in SHIPPED_FILES),
    )
    eval_s = time.perf_counter() - t0

    report = dict(
        settings=dataclasses.asdict(s) | {"out": portable(Path(s.out), Path(__file__).resolve().parents[2], ".")},
        corpus=corpus, figures=figures,
        timings=dict(tokenizer_s=round(tokenizer_s, 1), target_s=round(target_s, 1),
                     draft_s=round(train_s - target_s, 1), eval_s=round(eval_s, 1),
                     total_s=round(time.perf_counter() - started, 1), threads=s.threads,
                     cpu=cpu_name(), torch=torch.__version__),
        command="python scripts/train_tiny.py" + ("" if Path(s.out) == default_out() else f" --out {s.out}"),
    )
    with open(out / "curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(curve[0]))
        writer.writeheader()
        writer.writerows(curve)
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    write_checksums(out)
    log(f"held-out perplexity: target {figures['heldout_ppl_target']}, draft {figures['heldout_ppl_draft']}; "
        f"greedy acceptance at k=4: preset prompts {figures['acceptance_preset_prompts']['acceptance']}, "
        f"held-out snippets {figures['acceptance_heldout_snippets']['acceptance']}; "
        f"{figures['shipped_bytes'] / 1e6:.1f} MB shipped; {report['timings']['total_s']:.0f} s in all")
    return report


def portable(path: Path, root: Path, name: str) -> str:
    """A path for the record, without this machine's layout in it: relative to `root`, shown as `name`."""
    try:
        return str(Path(name) / path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_out() -> Path:
    from models.tiny import TRAINED_ROOT

    return TRAINED_ROOT

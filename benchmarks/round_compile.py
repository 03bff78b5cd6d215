"""What the no-sync speculative round costs to compile, in both structures, with inductor (on the CPU too):

- unrolled: the whole round as one graph per k (k draft forwards + the verify: (k + 1) x layers of decoder code);
- pieces (what the fast engine compiles): the draft's first step, its next step (one graph for every k) and the
  verify (one graph per k), replayed in order.

    python benchmarks/round_compile.py [--models tiny-random/draft,tiny-random/target] [-k 1,4] [--device auto]
        [--skip-unrolled]

Prints the compile time of each graph (its first call, compile included) and checks that the
compiled round writes exactly the tokens and counts of the plain one, which equals the synced round (tests). The
times are printed, never asserted: they depend on the machine and on inductor's cache (TORCHINDUCTOR_CACHE_DIR)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def setup(models, k: int, device):
    import torch

    from engines.fast.cache import StaticKVCache
    from engines.fast.model import make_forward, vocab_size
    from engines.fast.rounds import DraftBuffers, RoundState
    from engines.fast.sampling import make_rules

    ids = torch.tensor([[5, 6, 7, 5, 6, 8, 9, 10]], device=device)
    L = ids.shape[1]
    rules = make_rules(do_sample=False, temperature=1.0, top_p=1.0, top_k=0, eos_token_ids=models.eos_token_ids,
                       vocab_size=vocab_size(models.target), prompt_len=L, min_new_tokens=24, device=device)
    caches = [StaticKVCache(m, 1, 128) for m in (models.target, models.draft)]
    for c in caches:
        c.begin_request(torch.ones_like(ids))
    caches[0].tokens[:, :L] = ids
    caches[0].tokens[:, L] = 7
    state = RoundState.new(128, device)
    state.begin(L, 24, 24, models.pad_token_id, torch.tensor([7], device=device),
                torch.tensor([False], device=device), rules)
    buffers = DraftBuffers.new(k, vocab_size(models.target), False, device)
    return (make_forward(models.target, True), make_forward(models.draft, True), caches, state, rules, buffers)


def timed(fn) -> float:
    from metrics.timing import synchronize

    synchronize(DEVICE[0])
    start = time.perf_counter()
    fn()
    synchronize(DEVICE[0])
    return time.perf_counter() - start


DEVICE: list = []


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny-random/draft,tiny-random/target", help="draft,target")
    p.add_argument("-k", default="1,4", help="draft tokens per round, comma-separated")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--skip-unrolled", action="store_true", help="only the pieces (the unrolled graph is slow)")
    args = p.parse_args(argv)

    import torch

    from engines.fast.engine import compiled
    from engines.fast.rounds import draft_first, draft_next, speculative_round, verify_drafted
    from engines.fast.sampling import rejection_accept
    from engines.fast.steps import compile_options
    from models.loading import load_models

    draft_id, target_id = args.models.split(",")
    models = load_models(target_id, draft_id, device=args.device, dtype="float32")
    DEVICE.append(models.device)
    cuda = models.device.type == "cuda"
    options = tuple(sorted(compile_options(cuda, True).items()))
    layers = {"target": models.target.config.num_hidden_layers, "draft": models.draft.config.num_hidden_layers}
    print(f"{target_id} ({layers['target']} layers) drafted by {draft_id} ({layers['draft']} layers) on "
          f"{models.device}, torch {torch.__version__}; inductor options {dict(options)}")
    print(f"{'structure':<10} {'k':>2} {'graph':<12} {'decoder layers':>14} {'compile s':>9}  same as plain")
    torch._dynamo.reset()
    with torch.no_grad():
        for k in [int(x) for x in args.k.split(",")]:
            target, draft, caches, state, rules, buffers = setup(models, k, models.device)
            speculative_round(target, caches[0], draft, caches[1], state, rules, rejection_accept, k, buffers)
            want = (caches[0].tokens.clone(), state.snapshot())
            pieces = [("draft_first", draft_first, layers["draft"]), ("draft_next", draft_next, layers["draft"]),
                      ("verify", verify_drafted, layers["target"])]
            fns = {name: compiled(fn, options) for name, fn, _ in pieces}
            target, draft, caches, state, rules, buffers = setup(models, k, models.device)
            seconds = {}

            def run_pieces():
                for name, call in (("draft_first", lambda: fns["draft_first"](draft, caches[1], caches[0].tokens,
                                                                                state, rules, buffers)),
                                   *[("draft_next", lambda: fns["draft_next"](draft, caches[1], rules, buffers))]
                                   * (k - 1),
                                   ("verify", lambda: fns["verify"](target, caches[0], state, rules,
                                                                    rejection_accept, buffers, k))):
                    if cuda:
                        torch.compiler.cudagraph_mark_step_begin()
                    seconds.setdefault(name, timed(call))

            run_pieces()
            same = torch.equal(caches[0].tokens, want[0]) and torch.equal(state.snapshot(), want[1])
            for name, _, n in pieces:
                if name in seconds:
                    print(f"{'pieces':<10} {k:>2} {name:<12} {n:>14} {seconds[name]:>9.1f}  {same}", flush=True)
            if not args.skip_unrolled:
                target, draft, caches, state, rules, buffers = setup(models, k, models.device)
                whole = torch.compile(speculative_round, fullgraph=True, dynamic=False, options=dict(options) or None)
                s = timed(lambda: whole(target, caches[0], draft, caches[1], state, rules, rejection_accept, k,
                                        buffers))
                same = torch.equal(caches[0].tokens, want[0]) and torch.equal(state.snapshot(), want[1])
                n = k * layers["draft"] + layers["target"]
                print(f"{'unrolled':<10} {k:>2} {'round':<12} {n:>14} {s:>9.1f}  {same}", flush=True)
    print("pieces: draft_first and draft_next compile once for every k (a second k reuses them); verify once per k")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The single steps of the `fast` engine (`forward`, `decode_step`, `verify`: what gets compiled) and the inductor
options they compile with. Whether and how they are compiled is the engine's options (`compile`, `fast_tuning`; engines/).
See docs/fast_engine.md."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from engines.fast.cache import StaticKVCache
from engines.fast.sampling import AcceptFn, Rules, natural_eos, next_token, next_token_probs


TUNING = {  # gpt-fast's inductor settings, per compiled function (torch.compile options), never process-wide
    # coordinate-descent tuning of the generated Triton kernels' launch configs: the small norm/rope/argmax kernels
    # of a batch-1 step gain from it; it costs compile time
    "coordinate_descent_tuning": True,
    "triton.unique_kernel_names": True,  # descriptive kernel names in profiles
}


def compile_options(cuda: bool, tuning: bool) -> dict:
    """The inductor options a fast-engine step compiles with: CUDA graphs on CUDA (what mode="reduce-overhead"
    sets), gpt-fast's tuning when asked. Passed to torch.compile for these functions only, so another engine in the
    same process (hf_compiled, what a user gets) compiles with its own settings."""
    import torch._inductor.config as config

    options = {"triton.cudagraphs": True} if cuda else {}
    if tuning:
        options.update(TUNING)
    known = set(config.get_config_copy())
    return {k: v for k, v in options.items() if k in known}


def describe_options(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "inductor defaults"


# `decode_step` and `verify` are what gets compiled: they read and advance `cache.pos` on the device, so a
# replayed graph needs no input from the host.


def forward(fwd, cache: StaticKVCache, tokens: torch.Tensor, position_ids=None, last_only: bool = False):
    """Run tokens (B, S) at slots pos..pos+S-1; return float32 logits (B, S or 1, V) and the slots they predict from."""
    S = tokens.shape[1]
    slots = cache.pos + torch.arange(S, device=tokens.device)  # (S,)
    if position_ids is None:
        position_ids = slots[None, :] - cache.pad[:, None]  # (B, S)
    # Attend to real prompt tokens and to slots up to the query's own; later slots are stale or empty. A query
    # always sees its own slot, so no row is all-masked (a pad query of the prompt would otherwise give NaNs that
    # its masked keys/values carry into real rows: 0 * NaN).
    query = slots[None, :, None]  # (1, S, 1)
    earlier = cache.valid[:, None, :] & (cache.slot_ids[None, None, :] <= query)  # (B, S, max_len)
    allowed = earlier | (cache.slot_ids == query)  # (B, S, max_len)
    logits = fwd(cache, tokens, position_ids, allowed[:, None], last_only)
    return logits.float(), (slots[-1:] if last_only else slots)


def decode_step(fwd, cache: StaticKVCache, rules: Rules, want_probs: bool, want_eos: bool = False):
    """One new token per row, all on the device: the token at slot pos (cache.tokens) runs at slot pos, its
    successor is written at slot pos + 1, and pos advances. Returns the distribution the token was drawn from
    (B, V) when want_probs (speculative sampling's drafts need it); when want_eos, whether the step's unforced
    choice was EOS (B,) bool (a prompt-lookup round without drafts, when the length is forced); else nothing: a
    greedy step has no outputs to copy out of the CUDA graph."""
    token = cache.tokens.index_select(1, cache.pos.view(1))  # (B, 1)
    logits, slots = forward(fwd, cache, token)
    nxt, probs = next_token(logits, slots, rules)  # (B,), (B, V) or None
    nxt_slot = (cache.pos + 1).clamp(max=cache.max_len - 1).view(1)  # the clamp only guards the warm-up
    cache.tokens.index_copy_(1, nxt_slot, nxt[:, None])
    cache.pos.add_(1)
    if want_eos:
        return natural_eos(logits[:, -1], rules)
    return probs if want_probs else None


def verify(fwd, cache: StaticKVCache, tokens: torch.Tensor, draft_probs, n_real: torch.Tensor, rules: Rules,
           accept_fn: AcceptFn):
    """One target forward over [current token, k drafts] (1, k+1) at slots pos..pos+k; returns (n accepted, next,
    whether the target's unforced choice at each of the k + 1 positions was EOS (k+1,) bool).

    draft_probs (1, k, V) are the draft model's distributions; None means deterministic drafts (greedy draft model,
    prompt lookup), i.e. one-hot distributions."""
    logits, slots = forward(fwd, cache, tokens)
    p = next_token_probs(logits, slots, rules)  # (1, k+1, V)
    drafts = tokens[:, 1:]  # (1, k)
    if draft_probs is None:
        draft_probs = torch.zeros_like(p[:, 1:]).scatter_(-1, drafts[..., None], 1.0)  # (1, k, V)
    n, nxt = accept_fn(drafts, draft_probs, p, n_real)
    return n, nxt, natural_eos(logits[0], rules)


def prefill_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """position_ids (B, L) as `generate` computes them for a left-padded prompt (pad slots get 1; they are masked)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


@dataclass(frozen=True)
class RoundSteps:
    """The no-sync round's pieces (rounds.py), each compiled on its own: a draft model's first and next draft steps
    (one graph each, whatever k), its verify (one graph per k), and a prompt-lookup round (one graph per k)."""

    draft_first: Callable
    draft_next: Callable
    verify: Callable
    lookup: Callable


@dataclass(frozen=True)
class Steps:
    """`decode_step`, `verify` and the no-sync round as one engine runs them (compiled or plain), with what verify
    needs besides a model. The loops call them through `run`, never directly, so compiled and plain steps behave the
    same to them."""

    decode: Callable  # decode_step or its compiled wrapper
    verify: Callable  # verify or its compiled wrapper
    accept_fn: AcceptFn  # the speculative acceptance rule; swappable for tests and variants
    # () long: drafts really offered in a round; on the device, so a cropped last round needs no new graph
    n_real: torch.Tensor
    graphs: bool  # compiled: every call replays a CUDA graph
    round: RoundSteps | None = None  # the no-sync round's pieces, compiled or plain

    def run(self, fn, *args):
        """Call a step; after a graph replay clone its outputs, which the next replay would overwrite in place."""
        if not self.graphs:
            return fn(*args)
        torch.compiler.cudagraph_mark_step_begin()
        out = fn(*args)
        if isinstance(out, torch.Tensor):
            return out.clone()
        if isinstance(out, tuple):
            return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in out)
        return out

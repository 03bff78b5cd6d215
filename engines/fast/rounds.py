"""The speculative round with no host sync: k draft steps (a draft model's, or prompt lookup's n-gram match) and the
target's verify forward, all of device tensors. On CUDA they are compiled in pieces (the draft's first step, its
next step, the verify; a lookup round whole), replayed in order with no host read between them, so the compile time
is bounded by one draft step and one verify whatever k. What a round accepted never reaches the host: the positions,
the next input token, the output and the counts move by tensor ops on the static buffers of `RoundState`,
`DraftBuffers` and the caches. See docs/fast_engine.md ("Speculative rounds without a host sync")."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import torch

from engines.fast.cache import StaticKVCache
from engines.fast.sampling import (
    AcceptFn,
    Rules,
    greedy_accept,
    mask_eos,
    natural_eos,
    next_token,
    next_token_probs,
    one_hot,
)
from engines.fast.steps import forward

NO_EOS = 2 ** 62  # natural_eos before any: larger than every index, so the first one is the minimum
MAX_NGRAM = 2  # prompt lookup matches the last 2 tokens, then the last 1 (transformers' default)


@dataclass(frozen=True)
class RoundState:
    """A no-sync speculative call on the device: the request's limits, where the output stands, and what every
    round did, in fixed buffers (static addresses: a CUDA graph reads and writes them in place). One per target
    cache, refilled by `begin` for each request."""

    prompt_len: torch.Tensor  # () long: L, the slot of new token 0
    max_new: torch.Tensor  # () long
    min_new: torch.Tensor  # () long: EOS may end the run from this new-token index on
    may_stop: torch.Tensor  # () bool: EOS ends the run (min_new < max_new)
    track: torch.Tensor  # () bool: a forced length, whose first natural EOS is noted (metrics/drafts.py)
    pad_token: torch.Tensor  # () long: fills prompt-lookup drafts past the offered ones
    n_new: torch.Tensor  # () long: new tokens at slots L.. so far, the prefill's included
    done: torch.Tensor  # () bool: an EOS ended the run
    natural_eos: torch.Tensor  # () long: first new-token index whose unforced choice was EOS; NO_EOS: none
    target_forwards: torch.Tensor  # () long: the prefill and every active round
    drafted_all: torch.Tensor  # () long: every draft offered
    rounds: torch.Tensor  # () long: active rounds recorded (with or without drafts: count_rounds skips the latter)
    starts: torch.Tensor  # (R,) long: metrics.drafts.Round of each recorded round, field by field
    offered: torch.Tensor  # (R,) long
    accepted: torch.Tensor  # (R,) long

    @classmethod
    def new(cls, capacity: int, device) -> "RoundState":
        """capacity: the most rounds a call can have; each active round writes at least one token, so the cache
        length bounds it."""
        flags = ("may_stop", "track", "done")
        per_round = ("starts", "offered", "accepted")
        state = cls(**{f.name: torch.zeros(capacity if f.name in per_round else (), device=device,
                                           dtype=torch.bool if f.name in flags else torch.long)
                       for f in fields(cls)})
        for f in fields(cls):
            torch._dynamo.mark_static_address(getattr(state, f.name))
        return state

    def begin(self, prompt_len: int, max_new: int, min_new: int, pad_token: int, first: torch.Tensor,
              first_natural_eos: torch.Tensor, rules: Rules) -> None:
        """A new request whose prefill chose `first` (1,), its unforced choice EOS or not (1,) bool. In place and
        on the device: nothing is read back."""
        for name, value in (("prompt_len", prompt_len), ("max_new", max_new), ("min_new", min_new),
                            ("may_stop", min_new < max_new), ("track", min_new > 0), ("pad_token", pad_token),
                            ("n_new", 1), ("target_forwards", 1), ("drafted_all", 0), ("rounds", 0),
                            ("natural_eos", NO_EOS)):
            getattr(self, name).fill_(value)
        # The prefill's token may already end the run, or be the first natural EOS.
        self.done.copy_(self.may_stop & rules.eos_mask[first].reshape(()))
        self.natural_eos.masked_fill_(self.track & first_natural_eos.reshape(()), 0)

    def snapshot(self) -> torch.Tensor:
        """Everything the Generation's counts need, in one device copy (the next request refills these buffers):
        (4 + 3R,) rounds, natural_eos, target_forwards, drafted_all, then starts, offered, accepted."""
        return torch.cat([torch.stack([self.rounds, self.natural_eos, self.target_forwards, self.drafted_all]),
                          self.starts, self.offered, self.accepted])


class Outcome(NamedTuple):
    """What one round proposed and what the target made of it, all on the device: what `keep` writes into the
    buffers."""

    pos: torch.Tensor  # () long: slot of the round's first token, the last kept one
    drafts: torch.Tensor  # (k,) long: the drafts verified (past `offered`, fillers)
    offered: torch.Tensor  # () long: drafts that count; 0 for an inactive round
    active: torch.Tensor  # () bool: the run had not ended when the round began
    n: torch.Tensor  # () long: drafts the target accepted
    nxt: torch.Tensor  # (1,) long: the target's own token after them
    natural: torch.Tensor  # (k+1,) bool: whether the target's unforced choice at each position was EOS


def speculative_round(target_fwd, target_cache: StaticKVCache, draft_fwd, draft_cache: StaticKVCache | None,
                      state: RoundState, rules: Rules, accept_fn: AcceptFn, k: int,
                      buffers: "DraftBuffers | None" = None) -> None:
    """One round from the last kept token (slot L + n_new - 1): up to k drafts (the draft model's when draft_fwd is
    given, else prompt lookup's), one target forward over [token, drafts], and the round's kept tokens written at
    the next slots of target_cache.tokens, all on the device. A round after the run ended (max_new_tokens written,
    or EOS) still computes, at fixed shapes, but changes nothing that is read: it is cropped to nothing.

    A round near the end offers only the drafts the budget leaves room for, as `speculative_decode` does; with
    none left (one token to go, or no n-gram match) it is the target's plain step, not a round (metrics/drafts.py).

    The pieces a compiled engine captures apart (`draft_first`, `draft_next`, `verify_drafted`, `lookup_round`), in
    the order it replays them: a graph of one draft step and one of the verify, never one of k unrolled draft
    forwards plus the verify, whose compile time grows with k."""
    if draft_fwd is None:
        lookup_round(target_fwd, target_cache, state, rules, accept_fn, k)
        return
    if buffers is None:
        buffers = DraftBuffers.new(k, rules.eos_mask.shape[0], rules.do_sample, target_cache.tokens.device)
    draft_first(draft_fwd, draft_cache, target_cache.tokens, state, rules, buffers)
    for _ in range(k - 1):
        draft_next(draft_fwd, draft_cache, rules, buffers)
    verify_drafted(target_fwd, target_cache, state, rules, accept_fn, buffers, k)


DRAFT_SLOTS = 16  # drafts one set of buffers holds: the draft steps' graphs serve every k up to it


@dataclass(frozen=True)
class DraftBuffers:
    """The drafts of the round in flight, written in place by the draft steps and read by the verify (static
    addresses: each piece is its own CUDA graph, and they meet only in these buffers)."""

    tokens: torch.Tensor  # (1, K) long
    probs: torch.Tensor  # (1, K, V) float32 when sampling, else (1, 1, 1): greedy drafts are one-hot
    index: torch.Tensor  # () long: the index the next draft step writes

    @classmethod
    def new(cls, k: int, vocab: int, sampling: bool, device) -> "DraftBuffers":
        slots = max(DRAFT_SLOTS, k)
        buffers = cls(torch.zeros(1, slots, dtype=torch.long, device=device),
                      torch.zeros((1, slots, vocab) if sampling else (1, 1, 1), device=device),
                      torch.zeros((), dtype=torch.long, device=device))
        for t in (buffers.tokens, buffers.probs, buffers.index):
            torch._dynamo.mark_static_address(t)
        return buffers


def draft_first(fwd, cache: StaticKVCache, seq: torch.Tensor, state: RoundState, rules: Rules,
                buffers: DraftBuffers) -> None:
    """The round's first draft, after the token at slot pos of seq (1, max_len), the kept sequence.

    It runs two tokens, at slots pos - 1 and pos: after a round that accepted every draft the draft model has not run
    its last one (now at slot pos - 1), and only the device knows whether that happened. The extra query row costs
    almost nothing in a weight-bound step, where a conditional extra step would cost a step; after any other round
    it rewrites the keys and values already there."""
    pos = state.prompt_len + state.n_new - 1  # ()
    cache.pos.copy_(pos - 1)
    tokens = seq.index_select(1, torch.stack([pos - 1, pos]))  # (1, 2)
    write_draft(fwd, cache, tokens, rules, buffers, torch.zeros_like(buffers.index))
    cache.pos.copy_(pos + 1)
    buffers.index.fill_(1)


def draft_next(fwd, cache: StaticKVCache, rules: Rules, buffers: DraftBuffers) -> None:
    """The next draft after the last one written (at slot cache.pos); the same graph for every index and k."""
    token = buffers.tokens.index_select(1, (buffers.index - 1).view(1))  # (1, 1)
    write_draft(fwd, cache, token, rules, buffers, buffers.index)
    cache.pos.add_(1)
    buffers.index.add_(1)


def write_draft(fwd, cache: StaticKVCache, tokens: torch.Tensor, rules: Rules, buffers: DraftBuffers,
                index: torch.Tensor) -> None:
    logits, slots = forward(fwd, cache, tokens, last_only=True)  # (1, 1, V)
    nxt, q = next_token(logits, slots, rules)  # (1,), (1, V) or None
    buffers.tokens.index_copy_(1, index.view(1), nxt[:, None])
    if q is not None:
        buffers.probs.index_copy_(1, index.view(1), q[:, None])


def verify_drafted(target_fwd, target_cache: StaticKVCache, state: RoundState, rules: Rules, accept_fn: AcceptFn,
                   buffers: DraftBuffers, k: int) -> None:
    """The target's verify of the k drafts in `buffers`, and the round's outcome into the buffers (one graph per k)."""
    active, pos, room = round_start(state, k)
    drafts = buffers.tokens[:, :k]  # (1, k)
    q = buffers.probs[:, :k] if rules.do_sample else None  # (1, k, V)
    verify_and_keep(target_fwd, target_cache, state, rules, accept_fn, pos, active, drafts, q, room)


def lookup_round(target_fwd, target_cache: StaticKVCache, state: RoundState, rules: Rules, accept_fn: AcceptFn,
                 k: int) -> None:
    """A prompt-lookup round: the n-gram match on the device and the verify, one graph per k."""
    active, pos, room = round_start(state, k)
    drafts, offered = lookup_drafts(target_cache.tokens[0], target_cache.pad[0], pos, room, rules.eos_mask,
                                    state.pad_token, k)
    verify_and_keep(target_fwd, target_cache, state, rules, accept_fn, pos, active, drafts, None, offered)


def round_start(state: RoundState, k: int):
    """(whether the run had not ended, the slot of the last kept token, the drafts the budget leaves room for)."""
    active = (state.n_new < state.max_new) & ~state.done  # ()
    pos = state.prompt_len + state.n_new - 1  # () slot of the last kept token, not in the caches yet
    room = (state.max_new - state.n_new - 1).clamp(min=0, max=k)  # () never write past max_new_tokens
    return active, pos, room


def verify_and_keep(target_fwd, target_cache: StaticKVCache, state: RoundState, rules: Rules, accept_fn: AcceptFn,
                    pos, active, drafts, q, offered) -> None:
    seq = target_cache.tokens  # (1, max_len)
    offered = torch.where(active, offered, 0)  # ()
    target_cache.pos.copy_(pos)
    tokens = torch.cat([seq.index_select(1, pos.view(1)), drafts], dim=1)  # (1, k+1)
    n, nxt, natural = verify_round(target_fwd, target_cache, tokens, q, offered, rules, accept_fn)
    keep(state, seq, Outcome(pos, drafts[0], offered, active, n[0], nxt, natural), rules)


def verify_round(fwd, cache: StaticKVCache, tokens: torch.Tensor, draft_probs, n_real: torch.Tensor, rules: Rules,
                 accept_fn: AcceptFn):
    """`steps.verify`, with greedy acceptance as the matching prefix of ids (no one-hot distributions). Returns
    (n accepted (1,), next token (1,), whether the target's unforced choice at each position was EOS (k+1,))."""
    logits, slots = forward(fwd, cache, tokens)  # (1, k+1, V)
    drafts = tokens[:, 1:]  # (1, k)
    if rules.do_sample:
        p = next_token_probs(logits, slots, rules)  # (1, k+1, V)
        q = one_hot(drafts, p.shape[-1]) if draft_probs is None else draft_probs  # (1, k, V)
        n, nxt = accept_fn(drafts, q, p, n_real)
    else:
        n, nxt = greedy_accept(drafts, mask_eos(logits, slots, rules).argmax(dim=-1), n_real)
    return n, nxt, natural_eos(logits[0], rules)


def keep(state: RoundState, seq: torch.Tensor, outcome: Outcome, rules: Rules) -> None:
    """The round's outcome into the buffers (seq: the target cache's tokens, (1, max_len)), as `speculative_decode`
    does it on the host: the accepted drafts and the target's token after them, cut at an EOS that may end the run
    (`cut_at_eos`), the Round record, the first natural EOS. Only an active round moves n_new and the counts; what an
    inactive one writes lies past the output."""
    pos, drafts, offered, active, n, nxt, natural = outcome
    k = drafts.shape[0]  # a static shape: no read of the device
    i = torch.arange(k + 1, device=seq.device)  # (k+1,)
    out = torch.where(i < n, torch.cat([drafts, nxt]), nxt)  # (k+1,) past index n a filler, overwritten later
    eos = rules.eos_mask[out] & (i <= n) & (state.n_new + i >= state.min_new) & state.may_stop  # (k+1,)
    cut = (~eos).long().cumprod(dim=0).sum()  # () index of the first EOS that ends the run; k + 1: none
    produced = torch.minimum(n + 1, cut + 1)  # ()
    kept = torch.minimum(n, produced - 1)  # () a round cut at EOS accepted only the drafts up to it
    flags = natural & (i < produced) & state.track  # (k+1,)
    first_natural = (~flags).long().cumprod(dim=0).sum()  # () k + 1: none
    seq.index_copy_(1, (pos + 1 + i).clamp(max=seq.shape[1] - 1), out[None])
    r = state.rounds.clamp(max=state.starts.shape[0] - 1).view(1)  # (1,) an inactive round's record is not counted
    state.starts.index_copy_(0, r, state.n_new.view(1))
    state.offered.index_copy_(0, r, offered.view(1))
    state.accepted.index_copy_(0, r, kept.view(1))
    found = active & (first_natural <= k)
    state.natural_eos.copy_(torch.where(found, torch.minimum(state.natural_eos, state.n_new + first_natural),
                                        state.natural_eos))
    state.done.logical_or_(active & (cut <= k))
    step = active.long()  # ()
    state.rounds.add_(step)
    state.target_forwards.add_(step)
    state.drafted_all.add_(offered)
    state.n_new.add_(produced * step)


def lookup_drafts(tokens: torch.Tensor, start: torch.Tensor, pos: torch.Tensor, room: torch.Tensor,
                  eos_mask: torch.Tensor, pad_token: torch.Tensor, k: int):
    """`loops.prompt_lookup_candidates` over the sequence's slots (tokens (M,): the real tokens are slots
    start..pos, the prompt's after its left padding, then the new ones): the continuation of the earliest earlier
    occurrence of the last MAX_NGRAM tokens (then fewer), at most `room` long, cut before any EOS. Returns the
    drafts (1, k), pad_token past the offered ones, and how many are offered ()."""
    M = tokens.shape[0]
    s = torch.arange(M, device=tokens.device)  # (M,) where an earlier occurrence may start
    end = pos + 1  # ()
    cont = torch.zeros((), dtype=torch.long, device=tokens.device)  # () slot its continuation starts at
    found = torch.zeros((), dtype=torch.bool, device=tokens.device)
    for n in range(MAX_NGRAM, 0, -1):
        match = (s >= start) & (s + n < end)  # (M,) inside the sequence, and before the last n tokens themselves
        for i in range(n):
            last = tokens.index_select(0, (end - n + i).clamp(min=0).view(1))  # (1,)
            match = match & (tokens.index_select(0, (s + i).clamp(max=M - 1)) == last)
        take = match.any() & ~found  # a longer n-gram that matched wins, even if its continuation is cut to none
        cont = torch.where(take, match.long().argmax() + n, cont)  # argmax: the earliest
        found = found | take
    j = torch.arange(k, device=tokens.device)  # (k,)
    candidates = tokens.index_select(0, (cont + j).clamp(max=M - 1))  # (k,) past the sequence's end: stale
    before_eos = (~eos_mask[candidates]).long().cumprod(dim=0).sum()  # ()
    offered = torch.where(found, torch.minimum(torch.minimum(room, end - cont), before_eos), 0)  # ()
    return torch.where(j < offered, candidates, pad_token)[None], offered

"""The decode loops of the `fast` engine, top to bottom: prefill, one token, n tokens, speculative rounds. They drive
model-and-cache pairs (`Model`) and drafters (`Drafter`); engine.py compiles and warms up the steps before they run.
See docs/fast_engine.md."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from decoding.types import Probe, Request, tokens_exist
from engines.fast.cache import StaticKVCache
from engines.fast.model import Forward
from engines.fast.rounds import NO_EOS, DraftBuffers, RoundState
from engines.fast.sampling import Rules, natural_eos, next_token
from engines.fast.steps import Steps, forward, prefill_positions
from metrics.drafts import Round

CHECK_EVERY = 8  # decode steps between polls of the probe and, when EOS may end the run, EOS checks (host syncs)


@dataclass(frozen=True)
class Model:
    """A model-and-cache pair: the forward that runs one model, the static cache it reads and writes, and the
    engine's steps (compiled or plain) that drive the two."""

    forward: Forward
    cache: StaticKVCache
    steps: Steps

    @property
    def device(self) -> torch.device:
        return self.cache.pos.device


def prefill_logits(model: Model, req: Request) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt in one eager forward from slot 0 (its shape changes per request, so it is not compiled); returns
    the last position's logits (B, 1, V) and its slot."""
    model.cache.pos.fill_(0)  # the warm-up steps moved it
    return forward(model.forward, model.cache, req.input_ids, prefill_positions(req.attention_mask), last_only=True)


def prefill(model: Model, req: Request, rules: Rules) -> torch.Tensor:
    """The prompt's forward; returns the first new token of each row (B,)."""
    return next_token(*prefill_logits(model, req), rules)[0]


def decode_one_token(model: Model, rules: Rules, want_probs: bool = False, want_eos: bool = False):
    """One step of every row on the device: the token at slot pos goes in, its successor lands at pos + 1, pos
    advances. Returns the distribution (B, V) the successor was drawn from when want_probs, whether its unforced
    choice was EOS (B,) when want_eos, else None."""
    return model.steps.run(model.steps.decode, model.forward, model.cache, rules, want_probs, want_eos)


def decode_n_tokens(model: Model, req: Request, probe: Probe, rules: Rules, eos: torch.Tensor) -> torch.Tensor:
    """Steps until max_new_tokens exist after the prefill's token (slot L + i holds new token i), the probe says
    stop, or every row has emitted EOS (eos: (E,) ids). Returns the new tokens (B, n).

    The host only replays the step: it reads the device every CHECK_EVERY steps, and then only to poll the probe
    and, when EOS may end the run, to look for it."""
    L = req.input_ids.shape[1]
    tokens = model.cache.tokens  # (B, max_len)
    may_stop = req.min_new_tokens < req.max_new_tokens
    n = 1
    while n < req.max_new_tokens:
        if n % CHECK_EVERY == 0:
            if probe.should_stop():
                break
            if may_stop and n > req.min_new_tokens and torch.isin(tokens[:, L:L + n], eos).any(dim=1).all().item():
                break
        decode_one_token(model, rules)
        n += 1
        tokens_exist(probe, n)
    return tokens[:, L:L + n].clone()


def decode(model: Model, req: Request, probe: Probe, rules: Rules, eos: torch.Tensor) -> torch.Tensor:
    """Standard, nucleus and batched decoding: prefill, then one step per token. Returns the new tokens (B, n)."""
    L = req.input_ids.shape[1]
    torch.manual_seed(req.seed)
    first = prefill(model, req, rules)  # (B,)
    model.cache.tokens[:, L] = first
    model.cache.pos.fill_(L)  # the slot of the token the first step feeds
    mark_first_token(probe, model)
    return decode_n_tokens(model, req, probe, rules, eos)


def mark_first_token(probe: Probe, model: Model) -> None:
    """Tell the probe once the prefill's token exists: TTFT ends here."""
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)  # the one sync: the first token really exists now
    probe.first_token()
    tokens_exist(probe, 1)


# -- speculative decoding -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """One round's proposal. Always k tokens wide, so one verify graph serves every round; the first `offered`
    are real, the rest is padding that verify never accepts."""

    tokens: torch.Tensor  # (1, k)
    probs: torch.Tensor | None  # (1, k, V) the distributions they were drawn from; None: deterministic (one-hot)
    offered: int


class Drafter:
    """Proposes up to k tokens per round for the target to verify in one forward."""

    k: int
    always_drafts = False  # False: propose may return None mid-run, and the target then takes a plain step

    def start(self, req: Request) -> None:
        """Called once after the target's prefill."""

    def propose(self, new: list[int], token: torch.Tensor, pos: int, room: int) -> Draft | None:
        """Up to `room` drafts to follow `token` (1, 1), the last accepted token at slot `pos`; `new` is every token
        generated so far. None: nothing worth verifying (the round becomes an ordinary target step)."""
        raise NotImplementedError

    def verified(self, n_accepted: int, pos: int) -> None:
        """Told how many drafts of the round from slot `pos` the target accepted."""


class ModelDrafter(Drafter):
    """Drafts with a draft model's compiled decode step, k steps per round."""

    always_drafts = True

    def __init__(self, model: Model, k: int, rules: Rules):
        self.model, self.k, self.rules = model, k, rules
        self.forwards = 0  # every draft forward really run (MBU counts what is read, not what is offered)

    def start(self, req: Request) -> None:
        prefill(self.model, req, self.rules)
        self.forwards += 1

    def propose(self, new, token, pos, room) -> Draft:
        cache, sampling = self.model.cache, self.rules.do_sample
        cache.tokens[:, pos:pos + 1] = token
        cache.pos.fill_(pos)
        # Always k steps, even when fewer are offered: a cropped round reuses the graphs of a full one.
        probs = [decode_one_token(self.model, self.rules, sampling) for _ in range(self.k)]
        self.forwards += self.k
        q = torch.stack(probs, dim=1) if sampling else None  # (1, k, V); greedy drafts are one-hot
        return Draft(cache.tokens[:, pos + 1:pos + 1 + self.k].clone(), q, room)

    def verified(self, n_accepted, pos) -> None:
        if n_accepted == self.k:
            # The draft model never ran its own last draft (already at slot pos + k of its token buffer), and the
            # next round starts after it: feed it now. Rejected drafts need nothing: the next round's pos overwrites.
            self.model.cache.pos.fill_(pos + self.k)
            decode_one_token(self.model, self.rules)
            self.forwards += 1


class PromptLookupDrafter(Drafter):
    """Drafts by copying from the prompt and the output (transformers' prompt lookup), on the host."""

    def __init__(self, req: Request, k: int, eos_ids: set[int], pad_token_id: int, device: torch.device):
        self.k, self.eos_ids, self.pad_token_id, self.device = k, eos_ids, pad_token_id, device
        self.prompt = [t for t, keep in zip(req.input_ids[0].tolist(), req.attention_mask[0].tolist()) if keep]

    def propose(self, new, token, pos, room) -> Draft | None:
        candidates = prompt_lookup_candidates(self.prompt + new, room, self.eos_ids)
        if not candidates:
            return None
        padded = candidates + [self.pad_token_id] * (self.k - len(candidates))
        return Draft(torch.tensor([padded], device=self.device), None, len(candidates))  # (1, k)


def prompt_lookup_candidates(tokens: list[int], num_tokens: int, eos_token_ids, max_ngram: int = 2) -> list[int]:
    """transformers' PromptLookupCandidateGenerator: the continuation of the earliest earlier occurrence of the last
    n-gram (n = max_ngram down to 1), at most num_tokens long, cut before any EOS."""
    length = len(tokens)
    for n in range(min(max_ngram, length - 1), 0, -1):
        tail = tokens[-n:]
        for start in range(length - n):
            if tokens[start:start + n] == tail and start + n < length:
                chosen = tokens[start + n:min(start + n + num_tokens, length)]
                for i, t in enumerate(chosen):
                    if t in eos_token_ids:
                        chosen = chosen[:i]
                        break
                return chosen
    return []


@dataclass
class DraftLog:
    """What a speculative call did; engine.py turns it into the Generation's counts (metrics/drafts.py)."""

    rounds: list[Round] = field(default_factory=list)  # target forwards that verified at least one draft
    natural_eos: int | None = None  # forced length: first new-token index whose unforced choice was EOS
    target_forwards: int = 0  # every target forward, the prefill and plain steps included
    drafted_all: int = 0

    @classmethod
    def from_snapshot(cls, packed: torch.Tensor) -> "DraftLog":
        """The log of a no-sync call, from `RoundState.snapshot`: the call's one read of its counts."""
        values = packed.tolist()
        n, natural, target_forwards, drafted_all = values[:4]
        R = (len(values) - 4) // 3
        starts, offered, accepted = values[4:4 + n], values[4 + R:4 + R + n], values[4 + 2 * R:4 + 2 * R + n]
        return cls([Round(*r) for r in zip(starts, offered, accepted)], None if natural == NO_EOS else natural,
                   target_forwards, drafted_all)


def decode_from(model: Model, token: torch.Tensor, pos: int, rules: Rules, want_eos: bool = False):
    """Place `token` (1, 1) at slot `pos` and run one step; returns the next token (1, 1), and when want_eos whether
    its unforced choice was EOS (1,) bool, else None."""
    model.cache.tokens[:, pos:pos + 1] = token
    model.cache.pos.fill_(pos)
    eos = decode_one_token(model, rules, want_eos=want_eos)
    return model.cache.tokens[:, pos + 1:pos + 2].clone(), eos


def verify_drafts(target: Model, token: torch.Tensor, pos: int, draft: Draft, rules: Rules):
    """Verify [token, drafts] in one target forward from slot `pos`. Returns how many drafts were accepted, the
    round's new tokens (the accepted drafts, then the target's own), that last token on the device (1,), and for
    each of the k + 1 positions whether the target's unforced choice there was EOS.

    A rejected draft is rolled back by not moving past it: the next round starts at the slot after the last
    accepted token, so its keys/values are masked (later slots) and then overwritten."""
    steps = target.steps
    target.cache.pos.fill_(pos)
    steps.n_real.fill_(draft.offered)
    tokens = torch.cat([token, draft.tokens], dim=1)  # (1, k+1)
    n_acc, nxt, eos = steps.run(steps.verify, target.forward, target.cache, tokens, draft.probs, steps.n_real, rules,
                                steps.accept_fn)  # (1,), (1,), (k+1,)
    k = draft.tokens.shape[1]
    n_acc, nxt_id, *rest = torch.cat([n_acc, nxt, draft.tokens[0], eos.long()]).tolist()  # the round's one host sync
    return n_acc, rest[:n_acc] + [nxt_id], nxt, rest[k:]


def speculative_decode(target: Model, drafter: Drafter, req: Request, probe: Probe, rules: Rules,
                       eos_ids: set[int]) -> tuple[torch.Tensor, DraftLog]:
    """Speculative decoding and prompt lookup (batch 1): each round the drafter proposes up to k tokens, the target
    verifies them in one forward, and the accepted prefix plus the target's own next token are kept. One host
    sync per round, to learn how many were accepted. Returns the new tokens (1, n) and what the rounds did.

    With a forced length (min_new_tokens > 0) it also notes the first token where the target's own choice was EOS,
    from the logits it computes anyway, so acceptance can be counted before it (metrics/drafts.py)."""
    L = req.input_ids.shape[1]
    torch.manual_seed(req.seed)
    logits, slots = prefill_logits(target, req)
    token = next_token(logits, slots, rules)[0]  # (1,)
    track = req.min_new_tokens > 0
    drafter.start(req)
    mark_first_token(probe, target)
    log = DraftLog(target_forwards=1)
    first = torch.cat([token, natural_eos(logits[:, -1], rules).long()]).tolist() if track else [int(token.item())]
    new = first[:1]
    if track and first[1]:
        log.natural_eos = 0
    # Only a drafter that may skip rounds mid-run needs plain steps that tell where EOS was natural; a model drafter
    # takes a plain step only for the very last token, after which no round is left to count.
    plain_eos = track and not drafter.always_drafts
    may_stop = req.min_new_tokens < req.max_new_tokens
    token = token.view(1, 1)
    while len(new) < req.max_new_tokens:
        if probe.should_stop() or (may_stop and new[-1] in eos_ids):
            break
        pos = L + len(new) - 1  # slot of `token`, the last accepted token, not yet in the caches
        room = min(drafter.k, req.max_new_tokens - len(new) - 1)  # never produce more than max_new_tokens
        draft = drafter.propose(new, token, pos, room) if room > 0 else None
        if draft is None:  # nothing to verify: an ordinary target step, not a round
            nxt, eos = decode_from(target, token, pos, rules, want_eos=plain_eos)  # (1, 1), (1,) or None
            if eos is None:
                produced, flags = [int(nxt.item())], [0]
            else:
                nxt_id, flag = torch.cat([nxt.view(1), eos.long()]).tolist()
                produced, flags = [nxt_id], [flag]
        else:
            n_acc, produced, nxt, flags = verify_drafts(target, token, pos, draft, rules)
            drafter.verified(n_acc, pos)
        if may_stop:
            produced = cut_at_eos(produced, eos_ids, req.min_new_tokens - len(new))
        if draft is not None:
            # A round cut at EOS accepted only the drafts up to it (transformers counts the same way).
            log.rounds.append(Round(len(new), draft.offered, min(n_acc, len(produced) - 1)))
            log.drafted_all += draft.offered
        if track and log.natural_eos is None and any(flags[:len(produced)]):
            log.natural_eos = len(new) + flags.index(1)
        log.target_forwards += 1
        new += produced
        tokens_exist(probe, len(new))
        token = nxt.view(1, 1)
    sequences = torch.tensor([new[:req.max_new_tokens]], dtype=torch.long, device=target.device)  # (1, n)
    return sequences, log


def cut_at_eos(tokens: list[int], eos_ids: set[int], allowed_from: int) -> list[int]:
    """Keep tokens up to and including the first EOS at index >= allowed_from (earlier ones were masked anyway)."""
    for i, t in enumerate(tokens):
        if t in eos_ids and i >= allowed_from:
            return tokens[:i + 1]
    return tokens


# -- speculative decoding without a host sync per round -------------------------------------------------------------


def run_round(target: Model, draft: Model | None, state: RoundState, rules: Rules, k: int,
              buffers: DraftBuffers | None) -> None:
    """One no-sync round as its pieces (rounds.py), each a graph replay when compiled: no host read in between."""
    steps, pieces = target.steps, target.steps.round
    if draft is None:
        steps.run(pieces.lookup, target.forward, target.cache, state, rules, steps.accept_fn, k)
        return
    steps.run(pieces.draft_first, draft.forward, draft.cache, target.cache.tokens, state, rules, buffers)
    for _ in range(k - 1):
        steps.run(pieces.draft_next, draft.forward, draft.cache, rules, buffers)
    steps.run(pieces.verify, target.forward, target.cache, state, rules, steps.accept_fn, buffers, k)


def speculative_decode_nosync(target: Model, draft: Model | None, state: RoundState, k: int, req: Request,
                              probe: Probe, rules: Rules, pad_token_id: int, buffers: DraftBuffers | None = None,
                              launched_out: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`speculative_decode` with every round on the device (rounds.py): the draft model's steps (or prompt lookup,
    when draft is None) and the verify forward are one replay, and what it accepted stays there. The host launches
    rounds and reads how many tokens exist (and whether an EOS ended the run) once per batch of up to CHECK_EVERY
    rounds, when it also polls the probe. Returns the new tokens (1, n) and the rounds' records, still on the device
    (`RoundState.snapshot`, read by `DraftLog.from_snapshot` once the clock has stopped). launched_out, when given,
    gets the rounds launched (those after the run ended included: they read the weights too)."""
    L = req.input_ids.shape[1]
    torch.manual_seed(req.seed)
    logits, slots = prefill_logits(target, req)
    first = next_token(logits, slots, rules)[0]  # (1,)
    # The rounds read the whole sequence from the target's token buffer: prompt lookup searches it, and the draft
    # model's first step of a round re-feeds the token before the last.
    target.cache.tokens[:, :L] = req.input_ids
    target.cache.tokens[:, L] = first
    if draft is not None:
        prefill_logits(draft, req)  # its keys and values of the prompt; its tokens come from the rounds
    state.begin(L, req.max_new_tokens, req.min_new_tokens, pad_token_id, first, natural_eos(logits[:, -1], rules),
                rules)
    mark_first_token(probe, target)
    n, launched = 1, 0
    while n < req.max_new_tokens and not probe.should_stop():
        # A traced call reads the device after every round, to time it; a measured one only per batch of rounds.
        batch = 1 if getattr(probe, "traces", False) else rounds_before_check(req.max_new_tokens - n, k,
                                                           (n - 1) / launched if launched else None)
        for _ in range(batch):
            run_round(target, draft, state, rules, k, buffers)
            launched += 1
        n, done = torch.stack([state.n_new, state.done.long()]).tolist()  # the host's one read per batch of rounds
        tokens_exist(probe, min(n, req.max_new_tokens))
        if done:
            break
    if launched_out is not None:
        launched_out.append(launched)
    return target.cache.tokens[:, L:L + n].clone(), state.snapshot()


def rounds_before_check(remaining: int, k: int, tokens_per_round: float | None) -> int:
    """How many rounds to launch before the host reads the device again: CHECK_EVERY, fewer near the end. A round
    launched after max_new_tokens exist changes nothing but costs a whole round, so near the end the host launches
    about as many as the tokens per round so far predict, and never fewer than the remaining tokens surely need
    (every round makes at most k + 1)."""
    surely = -(-remaining // (k + 1))
    likely = int(remaining / tokens_per_round) if tokens_per_round else surely
    return max(1, min(CHECK_EVERY, max(surely, likely)))

"""The `fast` engine: our own decode loop over the transformers model modules, in the style of gpt-fast.

Why: in eager `generate` every token pays the same host overhead (Python, kernel launches, a host sync), so a
0.6B model decodes barely faster than a 4B one and a draft model cannot help (see /work/shared/ANCHORS.md). Here
decoding runs near the memory-bandwidth limit:

- a static KV cache (`StaticKVCache`): fixed-shape buffers, written in place at a slot given by a device tensor;
- prefill once (eager), then a single-token decode step that, on CUDA, is compiled with
  `torch.compile(mode="reduce-overhead")`, i.e. replayed as a CUDA graph;
- sampling inside the step (engines.fast_sampling), no host sync per token: EOS is checked every few steps only
  when it may end the run, and the probe is polled every few steps;
- speculative decoding and prompt lookup verify k drafts in one fixed-shape target forward; a rejected draft is
  rolled back by moving the cache position, never by copying (stale slots are masked, then overwritten).

Slots and positions. Row b of a left-padded batch of prompt length L keeps token t at cache slot t for the prompt
and L + i for new token i; all rows share slots, so one `pos` tensor says where the next forward writes. Its RoPE
position is `slot - pad[b]` (the attention mask's real-token count, as `generate` computes position_ids), and a 4-D
mask hides the pad slots of the prompt and every slot after the query (stale or not yet written).

On the CPU nothing is compiled, so the same code is testable there. BENCH_FAST_COMPILE=0 disables compilation on
CUDA for debugging. `compile_seconds` accumulates the time spent compiling and capturing CUDA graphs (the warm-up
of each new graph), which the runner should report apart from the run time.
"""
from __future__ import annotations

import inspect
import itertools
import os
import time

import torch
from transformers import Cache

from decoding.types import Generation, Probe, Request, UnsupportedSetting
from engines.fast_sampling import AcceptFn, Rules, make_rules, next_token_probs, rejection_accept, sample
from engines.hf import count_new_tokens

CHECK_EVERY = 8  # decode steps between polls of the probe and, when EOS may end the run, EOS checks (host syncs)
CACHE_ROUND = 128  # cache lengths are rounded up so that similar requests share one compiled graph
WARMUP_CALLS = 3  # compile + warm-up run, CUDA graph capture, first replay
_COMPILED: dict[str, object] = {}  # one torch.compile wrapper per function, shared by all engines (dynamo keeps
# a graph per model, shape and variant under each; sharing it avoids tracing the same model twice)
_SERIAL = itertools.count()


def compile_enabled() -> bool:
    return os.environ.get("BENCH_FAST_COMPILE", "1").lower() not in ("0", "false", "no")


class StaticKVCache(Cache):
    """Keys and values of every layer in fixed (B, kv_heads, max_len, head_dim) buffers, plus the slot layout of
    the current request. The model's attention layers call `update`, which writes at slots pos..pos+S-1.

    It subclasses transformers' Cache only so that isinstance checks pass; it keeps no `layers`."""

    def __init__(self, model, batch: int, max_len: int):
        try:
            super().__init__(layers=[])
        except TypeError:  # a transformers version whose Cache takes other arguments: nothing of it is used
            self.layers = []
        config = model.config.get_text_config()
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        device, dtype = model.device, model.dtype
        shape = (batch, config.num_key_value_heads, max_len, head_dim)
        self.k_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.v_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.batch, self.max_len, self.dtype = batch, max_len, dtype
        self.kwarg = cache_kwarg(model)  # looked up here: inspect has no place inside a compiled graph
        self.serial = next(_SERIAL)  # names this cache's buffers in the warm-up bookkeeping
        self.pos = torch.zeros((), dtype=torch.long, device=device)  # slot of the first token of the next forward
        self.valid = torch.ones(batch, max_len, dtype=torch.bool, device=device)  # False at prompt padding
        self.pad = torch.zeros(batch, dtype=torch.long, device=device)  # pad tokens per row: position = slot - pad
        self.slot_ids = torch.arange(max_len, device=device)
        # Fixed addresses: CUDA graphs read and write these buffers in place instead of copying them in.
        for t in (*self.k_cache, *self.v_cache, self.pos, self.valid, self.pad, self.slot_ids):
            torch._dynamo.mark_static_address(t)

    def begin_request(self, attention_mask: torch.Tensor) -> None:
        """Lay out a new left-padded prompt; in place, so the buffers keep their addresses."""
        L = attention_mask.shape[1]
        self.valid.fill_(True)
        self.valid[:, :L] = attention_mask.bool()
        self.pad.copy_(L - attention_mask.long().sum(dim=1))
        self.pos.fill_(0)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        slots = self.pos + torch.arange(key_states.shape[2], device=key_states.device)
        self.k_cache[layer_idx].index_copy_(2, slots, key_states)
        self.v_cache[layer_idx].index_copy_(2, slots, value_states)
        return self.k_cache[layer_idx], self.v_cache[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        # Only consulted by transformers when position_ids are missing; we always pass them.
        return 0

    def get_max_length(self) -> int:
        return self.max_len


def cache_kwarg(model) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); pass whichever this version takes."""
    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


# ----------------------------------------------------------------------------------------------------------------
# The model calls. `decode_one` and `verify` are what gets compiled; they read `cache.pos` on the device.


def forward(model, cache: StaticKVCache, tokens: torch.Tensor, position_ids=None, last_only: bool = False):
    """Run tokens (B, S) at slots pos..pos+S-1; return float32 logits (B, S or 1, V) and the slots they predict from."""
    S = tokens.shape[1]
    slots = cache.pos + torch.arange(S, device=tokens.device)
    if position_ids is None:
        position_ids = slots[None, :] - cache.pad[:, None]
    # Attend to real prompt tokens and to slots up to the query's own; later slots are stale or empty.
    allowed = cache.valid[:, None, :] & (cache.slot_ids[None, None, :] <= slots[None, :, None])
    mask = torch.zeros(allowed.shape, dtype=cache.dtype, device=tokens.device)
    mask = mask.masked_fill(~allowed, torch.finfo(cache.dtype).min)[:, None]  # additive: works for sdpa and eager
    out = model(input_ids=tokens, attention_mask=mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1 if last_only else 0, **{cache.kwarg: cache})
    return out.logits.float(), (slots[-1:] if last_only else slots)


def decode_one(model, cache: StaticKVCache, token: torch.Tensor, rules: Rules):
    """One new token per row: token (B, 1) at slot pos -> (next token (B,), the distribution it was drawn from
    (B, V), which speculative sampling needs; None when greedy)."""
    logits, slots = forward(model, cache, token)
    probs = next_token_probs(logits, slots, rules)[:, -1]
    if not rules.do_sample:
        return probs.argmax(dim=-1), None  # one-hot: its argmax is the greedy token
    return sample(probs), probs


def verify(model, cache: StaticKVCache, tokens: torch.Tensor, draft_probs, n_real: torch.Tensor, rules: Rules,
           accept_fn: AcceptFn):
    """One target forward over [current token, k drafts] (1, k+1) at slots pos..pos+k; returns (n accepted, next).

    draft_probs (1, k, V) are the draft model's distributions; None means deterministic drafts (greedy draft model,
    prompt lookup), i.e. one-hot distributions."""
    logits, slots = forward(model, cache, tokens)
    p = next_token_probs(logits, slots, rules)
    drafts = tokens[:, 1:]
    if draft_probs is None:
        draft_probs = torch.zeros_like(p[:, 1:]).scatter_(-1, drafts[..., None], 1.0)
    return accept_fn(drafts, draft_probs, p, n_real)


def column(tokens: torch.Tensor) -> torch.Tensor:
    """A fresh contiguous (B, 1) token input. Compiled graphs specialize on strides, even of size-1 dimensions,
    so a (1, 1) slice of a wider tensor would compile (and capture) the whole model a second time."""
    fresh = torch.empty(tokens.numel(), 1, dtype=tokens.dtype, device=tokens.device)  # clone() keeps odd strides
    return fresh.copy_(tokens.reshape(-1, 1))


def prefill_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """position_ids as `generate` computes them for a left-padded prompt (pad slots get 1; they are masked)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


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


# ----------------------------------------------------------------------------------------------------------------


class FastEngine:
    """FastEngine(models, accept_fn=rejection_accept).generate(request, probe) -> Generation.

    Attributes: `compile_seconds` (compile + CUDA-graph capture so far; 0.0 on the CPU, where nothing is compiled),
    `compile` (whether steps run compiled), `accept_fn` (the speculative acceptance rule, see fast_sampling)."""

    name = "fast"

    def __init__(self, models, accept_fn: AcceptFn = rejection_accept):
        self.models = models
        self.accept_fn = accept_fn  # the speculative acceptance rule; swappable for tests and variants
        self.compile_seconds = 0.0  # compile + CUDA-graph capture so far, apart from run time
        self.notes: list[str] = []
        self.compile = models.device.type == "cuda" and compile_enabled()
        if self.compile and any(is_quantized(m) for m in (models.target, models.draft) if m is not None):
            self.compile = False
            self.notes.append("fast engine: quantized weights, ran without torch.compile / CUDA graphs")
        if self.compile:
            # Each model, batch size and sampling variant is its own graph; the default limit (8) is too low.
            for name in ("recompile_limit", "cache_size_limit"):
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
        self._caches: dict[tuple, StaticKVCache] = {}
        self._warm: set[tuple] = set()
        # Drafts really offered in a verify round: a device scalar, so a cropped last round needs no new graph.
        self._n_real = torch.zeros((), dtype=torch.long, device=models.device)

    # -- public ----------------------------------------------------------------------------------------------

    def generate(self, request: Request, probe: Probe) -> Generation:
        self._check(request)
        m = self.models
        with torch.no_grad():
            if request.max_new_tokens <= 0:
                sequences = request.input_ids.new_full((request.input_ids.shape[0], 0), m.pad_token_id)
                stats = (0, 0, 0)
            elif request.use_draft:
                sequences, stats = self._speculative(request, probe)
            elif request.prompt_lookup_num_tokens > 0:
                sequences, stats = self._speculative(request, probe, lookup=True)
            else:
                sequences, stats = self._decode(request, probe), (0, 0, 0)
        sequences = pad_after_eos(sequences, m.eos_token_ids, m.pad_token_id)
        new_tokens = count_new_tokens(sequences, m.eos_token_ids)
        if request.min_new_tokens < request.max_new_tokens and sequences.shape[1]:
            # EOS may end the run: like generate, the output is as long as the longest row (steps after the last
            # row's EOS were only run because EOS is checked every few steps).
            sequences = sequences[:, :max(new_tokens)]
        drafted, accepted, rounds = stats
        return Generation(sequences, new_tokens, drafted, accepted, rounds, self.name, list(self.notes))

    # -- methods ---------------------------------------------------------------------------------------------

    def _decode(self, req: Request, probe: Probe) -> torch.Tensor:
        """Standard, nucleus and batched: prefill, then one compiled step per token."""
        m = self.models
        B, L = req.input_ids.shape
        rules = self._rules(req, L)
        cache = self._cache("target", m.target, B, L + req.max_new_tokens + 1)
        step = self._fn(decode_one)
        cache.begin_request(req.attention_mask)
        scratch = torch.zeros(B, 1, dtype=torch.long, device=m.device)
        self._warm_up(("decode", id(m.target), cache.serial, rules.signature), step, m.target, cache, scratch, rules)

        out = torch.full((B, req.max_new_tokens), m.pad_token_id, dtype=torch.long, device=m.device)
        eos = torch.tensor(list(m.eos_token_ids), device=m.device)

        torch.manual_seed(req.seed)
        token = self._prefill(m.target, cache, req, rules)
        out[:, 0] = token
        self._first_token(probe)
        may_stop = req.min_new_tokens < req.max_new_tokens
        n = 1
        while n < req.max_new_tokens:
            if n % CHECK_EVERY == 0:
                if probe.should_stop():
                    break
                if may_stop and n > req.min_new_tokens and torch.isin(out[:, :n], eos).any(dim=1).all().item():
                    break
            cache.pos.fill_(L + n - 1)  # slot of the token we feed
            token, _ = self._run(step, m.target, cache, column(token), rules)
            out[:, n] = token
            n += 1
        return out[:, :n]

    def _speculative(self, req: Request, probe: Probe, lookup: bool = False):
        """Draft k tokens (draft model, or n-gram lookup), verify them in one target forward, keep the accepted
        prefix plus the target's own next token. One host sync per round, to learn how many were accepted."""
        m = self.models
        L = req.input_ids.shape[1]
        k = req.prompt_lookup_num_tokens if lookup else req.num_draft_tokens
        if k < 1:
            raise UnsupportedSetting(f"speculative decoding needs at least one draft token per round, got {k}")
        rules = self._rules(req, L)
        need = L + req.max_new_tokens + k + 1
        cache = self._cache("target", m.target, 1, need)
        draft_cache = None if lookup else self._cache("draft", m.draft, 1, need)
        cache.begin_request(req.attention_mask)
        if draft_cache is not None:
            draft_cache.begin_request(req.attention_mask)
        self._warm_up_speculative(cache, draft_cache, k, rules, q_is_none=lookup or not req.do_sample)
        if lookup:  # the n-gram search runs on the host, over the prompt's real tokens and what is generated
            history = [t for t, keep in zip(req.input_ids[0].tolist(), req.attention_mask[0].tolist()) if keep]

        torch.manual_seed(req.seed)
        token = self._prefill(m.target, cache, req, rules)
        if draft_cache is not None:
            self._prefill(m.draft, draft_cache, req, rules)
        self._first_token(probe)
        new = [int(token.item())]
        may_stop = req.min_new_tokens < req.max_new_tokens
        eos_ids = set(m.eos_token_ids)
        drafted = accepted = rounds = 0
        token = token.view(1, 1)
        while len(new) < req.max_new_tokens:
            if probe.should_stop() or (may_stop and new[-1] in eos_ids):
                break
            pos = L + len(new) - 1  # slot of `token`, the last accepted token, not yet in the caches
            offer = min(k, req.max_new_tokens - len(new) - 1)  # never produce more than max_new_tokens
            if lookup:
                candidates = prompt_lookup_candidates(history + new, offer, eos_ids)
                offer = len(candidates)
            if offer == 0:  # nothing to verify: an ordinary target step
                cache.pos.fill_(pos)
                nxt, _ = self._run(self._fn(decode_one), m.target, cache, column(token), rules)
                produced = [int(nxt.item())]
            else:
                if lookup:
                    drafts = torch.tensor([candidates + [m.pad_token_id] * (k - offer)], device=m.device)
                    q = None
                else:
                    drafts, q = self._draft(draft_cache, token, pos, k, rules)
                produced, nxt = self._verify_round(cache, draft_cache, token, drafts, q, offer, pos, rules)
                drafted, accepted, rounds = drafted + offer, accepted + len(produced) - 1, rounds + 1
            if may_stop:
                produced = cut_at_eos(produced, eos_ids, req.min_new_tokens - len(new))
            new += produced
            token = nxt.view(1, 1)
        sequences = torch.tensor([new[:req.max_new_tokens]], dtype=torch.long, device=m.device)
        return sequences, (drafted, accepted, rounds)

    def _draft(self, draft_cache, token, pos, k, rules):
        """k draft tokens from the draft model's compiled decode step, starting from `token` at slot `pos`;
        with their distributions q (1, k, V) when sampling (None when greedy: one-hot)."""
        m = self.models
        tokens, probs = [], []
        for i in range(k):
            draft_cache.pos.fill_(pos + i)
            token, p = self._run(self._fn(decode_one), m.draft, draft_cache, column(token), rules)
            tokens.append(token.view(1, 1))
            probs.append(p)
        q = torch.stack(probs, dim=1) if rules.do_sample else None
        return torch.cat(tokens, dim=1), q

    def _verify_round(self, cache, draft_cache, token, drafts, q, offer, pos, rules):
        """Verify [token, drafts] (the first `offer` drafts are real) in one target forward from slot `pos`.
        Returns the round's new tokens (accepted drafts, then the target's own) and that last token on the device.

        Rejected drafts are rolled back by not advancing past them: the next round starts at the slot after the
        last accepted token, so their keys/values are masked (later slots) and then overwritten."""
        m = self.models
        k = drafts.shape[1]
        cache.pos.fill_(pos)
        self._n_real.fill_(offer)
        n_acc, nxt = self._run(self._fn(verify), m.target, cache, torch.cat([token, drafts], dim=1), q,
                               self._n_real, rules, self.accept_fn)
        n_acc, nxt_id, *draft_ids = torch.cat([n_acc, nxt, drafts[0]]).tolist()  # the round's one host sync
        if draft_cache is not None and n_acc == k:
            # Every draft was accepted, but the draft model never saw its own last draft: feed it now.
            draft_cache.pos.fill_(pos + k)
            self._run(self._fn(decode_one), m.draft, draft_cache, column(drafts[:, -1]), rules)
        return draft_ids[:n_acc] + [nxt_id], nxt

    def _warm_up_speculative(self, cache, draft_cache, k: int, rules: Rules, q_is_none: bool) -> None:
        m = self.models
        if not self.compile:
            return
        zeros = torch.zeros(1, k + 1, dtype=torch.long, device=m.device)
        q = None if q_is_none else torch.zeros(1, k, vocab_size(m.target), device=m.device)
        self._warm_up(("decode", id(m.target), cache.serial, rules.signature), self._fn(decode_one), m.target, cache,
                      column(zeros[:, 0]), rules)
        self._warm_up(("verify", id(m.target), cache.serial, k, rules.signature, q_is_none, self.accept_fn),
                      self._fn(verify), m.target, cache, zeros, q, self._n_real, rules, self.accept_fn)
        if draft_cache is not None:
            self._warm_up(("decode", id(m.draft), draft_cache.serial, rules.signature), self._fn(decode_one),
                          m.draft, draft_cache, column(zeros[:, 0]), rules)

    # -- pieces ----------------------------------------------------------------------------------------------

    def _prefill(self, model, cache: StaticKVCache, req: Request, rules: Rules) -> torch.Tensor:
        """The prompt in one eager forward (its shape changes per request, so it is not compiled); returns the
        first new token (B,)."""
        logits, slots = forward(model, cache, req.input_ids, prefill_positions(req.attention_mask), last_only=True)
        probs = next_token_probs(logits, slots, rules)[:, -1]
        return sample(probs) if rules.do_sample else probs.argmax(dim=-1)

    def _first_token(self, probe: Probe) -> None:
        if self.models.device.type == "cuda":
            torch.cuda.synchronize(self.models.device)  # the one sync: the first token really exists now
        probe.first_token()

    def _rules(self, req: Request, prompt_len: int) -> Rules:
        m = self.models
        return make_rules(do_sample=req.do_sample, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                          eos_token_ids=m.eos_token_ids, vocab_size=vocab_size(m.target), prompt_len=prompt_len,
                          min_new_tokens=req.min_new_tokens, device=m.device)

    def _cache(self, role: str, model, batch: int, length: int) -> StaticKVCache:
        """One cache per role (target, draft: the draft may be the target model itself) and batch size, grown
        (rounded up) only when a request needs more room, so compiled graphs and their buffer addresses are reused."""
        key = (role, id(model), batch)
        cache = self._caches.get(key)
        if cache is None or cache.max_len < length:
            cache = StaticKVCache(model, batch, -(-length // CACHE_ROUND) * CACHE_ROUND)
            self._caches[key] = cache
        return cache

    def _fn(self, fn):
        """The compiled version of fn on CUDA: CUDA graphs (reduce-overhead), static shapes."""
        if not self.compile:
            return fn
        if fn.__name__ not in _COMPILED:
            _COMPILED[fn.__name__] = torch.compile(fn, mode="reduce-overhead", dynamic=False)
        return _COMPILED[fn.__name__]

    def _run(self, fn, *args):
        """Call a (possibly CUDA-graphed) function; clone its outputs, which the next replay would overwrite."""
        if not self.compile:
            return fn(*args)
        torch.compiler.cudagraph_mark_step_begin()
        out = fn(*args)
        return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in out)

    def _warm_up(self, key: tuple, fn, *args) -> None:
        """Compile and capture a graph before the request's prefill, timed into compile_seconds. The scratch calls
        run at slot 0 (begin_request came first), so they write only slots that the prefill and the steps
        overwrite before anything reads them."""
        if not self.compile or key in self._warm:
            return
        torch.cuda.synchronize(self.models.device)
        start = time.perf_counter()
        for _ in range(WARMUP_CALLS):
            self._run(fn, *args)
        torch.cuda.synchronize(self.models.device)
        self.compile_seconds += time.perf_counter() - start
        self._warm.add(key)

    def _check(self, req: Request) -> None:
        m = self.models
        check_model(m.target)
        if req.use_draft and m.draft is not None:
            check_model(m.draft)
        if req.num_beams > 1:
            raise UnsupportedSetting("beam search runs on the hf engine only: set engine 'hf' for beam_search")
        if req.num_return_sequences != 1:
            raise UnsupportedSetting("the fast engine returns one sequence per prompt: use engine 'hf' for "
                                     "num_return_sequences > 1")
        if req.use_draft and req.prompt_lookup_num_tokens > 0:
            raise UnsupportedSetting("choose one drafting method: a draft model or prompt lookup, not both")
        if req.use_draft and m.draft is None:
            raise UnsupportedSetting("speculative decoding needs a draft model: set draft_model")
        if (req.use_draft or req.prompt_lookup_num_tokens > 0) and req.input_ids.shape[0] != 1:
            raise UnsupportedSetting("speculative decoding and prompt lookup on the fast engine run batch size 1 "
                                     f"only, got {req.input_ids.shape[0]}; use 'batched' to measure batching")


# ----------------------------------------------------------------------------------------------------------------


def check_model(model) -> None:
    config = model.config.get_text_config()
    attention = getattr(config, "_attn_implementation", None) or "eager"
    if attention not in ("sdpa", "eager"):
        raise UnsupportedSetting(f"the fast engine passes a 4-D attention mask over its static cache, which attention "
                                 f"'{attention}' does not take: load the model with attention 'sdpa'")
    layer_types = getattr(config, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        raise UnsupportedSetting("the fast engine supports full-attention models only (no sliding-window or "
                                 "linear-attention layers); use engine 'hf'")


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None))


def vocab_size(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def pad_after_eos(sequences: torch.Tensor, eos_token_ids, pad_token_id: int) -> torch.Tensor:
    """What `generate` emits once a row has finished: pad tokens after its first EOS."""
    if sequences.shape[1] == 0:
        return sequences
    is_eos = torch.isin(sequences, torch.tensor(list(eos_token_ids), device=sequences.device)).long()
    after = (is_eos.cumsum(dim=1) - is_eos) > 0
    return sequences.masked_fill(after, pad_token_id)


def cut_at_eos(tokens: list[int], eos_ids: set[int], allowed_from: int) -> list[int]:
    """Keep tokens up to and including the first EOS at index >= allowed_from (earlier ones were masked anyway)."""
    for i, t in enumerate(tokens):
        if t in eos_ids and i >= allowed_from:
            return tokens[:i + 1]
    return tokens

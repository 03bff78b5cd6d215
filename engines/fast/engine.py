"""FastEngine: checks a request, keeps the compiled graphs and their warm-up apart from the timed run, and hands the
request to a loop of loops.py. See docs/fast_engine.md."""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import torch

from decoding.types import DraftStats, Generation, Probe, Request, UnsupportedSetting
from engines.fast.cache import StaticKVCache
from engines.fast.loops import (
    DraftLog,
    Model,
    ModelDrafter,
    PromptLookupDrafter,
    decode,
    decode_one_token,
    prefill,
    speculative_decode,
    speculative_decode_nosync,
)
from engines.fast.model import check_model, is_quantized, make_forward, vocab_size
from engines.fast.rounds import RoundState, speculative_round
from engines.fast.sampling import AcceptFn, Rules, make_rules, rejection_accept
from engines.fast.steps import Steps, decode_step, tune_inductor, verify
from metrics.drafts import draft_stats
from metrics.prediction import seconds_per_step

STEP_RATIO_ROOM = 16  # cache slots step_time_ratio needs after the prompt (its STEPS decode steps and the first token)
CACHE_ROUND = 128  # cache lengths are rounded up so that similar requests share one compiled graph
WARMUP_CALLS = 3  # compile + warm-up run, CUDA graph capture, first replay


@functools.cache
def compiled(fn):
    """fn as CUDA graphs with static shapes. One wrapper per function for the whole process, shared by every engine:
    dynamo keeps a graph per model, shape and variant under it, and a second wrapper would trace every model again."""
    return torch.compile(fn, mode="reduce-overhead", dynamic=False)


class FastEngine:
    """FastEngine(models, accept_fn=rejection_accept, compile=True, fast_fuse=True, fast_tuning=True,
    fast_nosync=True).generate(request, probe) -> Generation. The keyword options are the engine's config keys
    (engines/__init__.py), so every row says which ran.

    Attributes: `compile_seconds` (compile + CUDA-graph capture so far; 0.0 on the CPU, where nothing is compiled),
    `compile` (whether steps run compiled: on CUDA, unquantized, with the `compile` option), `accept_fn` (the
    speculative acceptance rule for sampling, see sampling.py), `fuse` (whether models of a supported layout run
    `FusedForward`), `nosync` (whether speculative decoding and prompt lookup run the no-sync round of rounds.py,
    else one host sync per round)."""

    name = "fast"

    def __init__(self, models, accept_fn: AcceptFn = rejection_accept, compile: bool = True, fast_fuse: bool = True,
                 fast_tuning: bool = True, fast_nosync: bool = True):
        self.models = models
        self.accept_fn = accept_fn
        self.fuse = fast_fuse
        self.nosync = fast_nosync
        self.compile_seconds = 0.0  # reported apart from the run time
        self.notes: list[str] = []
        self.compile = models.device.type == "cuda" and compile
        if self.compile and any(is_quantized(m) for m in (models.target, models.draft) if m is not None):
            self.compile = False
            self.notes.append("fast engine: quantized weights, ran without torch.compile / CUDA graphs")
        step_fn, verify_fn, round_fn = decode_step, verify, speculative_round
        if self.compile:
            # Each model, batch size and sampling variant is its own graph; the default limit (8) is too low.
            for name in ("recompile_limit", "cache_size_limit"):
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
            if fast_tuning:
                tune_inductor()
            # A step, and a whole no-sync round (one graph per k), is then one CUDA-graph replay.
            step_fn, verify_fn, round_fn = compiled(decode_step), compiled(verify), compiled(speculative_round)
        n_real = torch.zeros((), dtype=torch.long, device=models.device)
        torch._dynamo.mark_static_address(n_real)
        self.steps = Steps(step_fn, verify_fn, accept_fn, n_real, graphs=self.compile, round=round_fn)
        self._caches: dict[tuple, StaticKVCache] = {}
        self._round_states: dict[int, RoundState] = {}  # by target cache (serial): its length bounds the rounds
        self._forwards: dict[int, object] = {}
        self._warm: set[tuple] = set()
        self._rules_buffers: Rules | None = None  # one set of rule tensors, refilled per request (see _rules)

    def generate(self, request: Request, probe: Probe) -> Generation:
        self._check(request)
        m = self.models
        drafting = request.use_draft or request.prompt_lookup_num_tokens > 0
        read_log = None
        with torch.no_grad():
            if request.max_new_tokens <= 0:
                sequences = request.input_ids.new_full((request.input_ids.shape[0], 0), m.pad_token_id)
            elif drafting:
                sequences, read_log = self._speculative(request, probe)
            else:
                sequences = self._decode(request, probe)
        sequences = pad_after_eos(sequences, m.eos_token_ids, m.pad_token_id)
        generation = FastGeneration(sequences, m.eos_token_ids, engine=self.name, notes=self.notes)
        if drafting:
            k = request.num_draft_tokens if request.use_draft else request.prompt_lookup_num_tokens
            generation.count_later(lambda: draft_counts(read_log(), k))
        if request.min_new_tokens < request.max_new_tokens and sequences.shape[1]:
            # EOS may end the run: like generate, the output is as long as the longest row (steps after the last
            # row's EOS were only run because EOS is checked every few steps). With a fixed length nothing is
            # counted here, so the call ends without reading the device.
            generation.sequences = sequences[:, :max(generation.new_tokens)]
        return generation

    # -- dispatch: set up and warm up, then run a loop -------------------------------------------------------------

    def _decode(self, req: Request, probe: Probe) -> torch.Tensor:
        m = self.models
        B, L = req.input_ids.shape
        rules = self._rules(req, L)
        target = self._model("target", m.target, B, L + req.max_new_tokens + 1)
        target.cache.begin_request(req.attention_mask)
        self._warm_up_step(target, rules, False)
        eos = torch.tensor(list(m.eos_token_ids), device=m.device)  # (E,)
        return decode(target, req, probe, rules, eos)

    def _speculative(self, req: Request, probe: Probe) -> tuple[torch.Tensor, Callable[[], DraftLog]]:
        """The new tokens, and how to read the rounds' log (for the no-sync round, a read of the device that
        FastGeneration defers until a count is asked for)."""
        m = self.models
        L = req.input_ids.shape[1]
        k = req.num_draft_tokens if req.use_draft else req.prompt_lookup_num_tokens
        if k < 1:
            raise UnsupportedSetting(f"speculative decoding needs at least one draft token per round, got {k}")
        rules = self._rules(req, L)
        need = L + req.max_new_tokens + k + 1  # a round may write k + 1 slots past the last kept token
        target = self._model("target", m.target, 1, need)
        draft = self._model("draft", m.draft, 1, need) if req.use_draft else None
        target.cache.begin_request(req.attention_mask)
        if draft is not None:
            draft.cache.begin_request(req.attention_mask)
        if self.nosync:
            state = self._round_states.get(target.cache.serial)
            if state is None:
                state = self._round_states[target.cache.serial] = RoundState.new(target.cache.max_len, m.device)
            self._warm_up_round(target, draft, state, k, rules, req)
            sequences, packed = speculative_decode_nosync(target, draft, state, k, req, probe, rules, m.pad_token_id)
            return sequences, lambda: DraftLog.from_snapshot(packed)
        eos_ids = set(m.eos_token_ids)
        if draft is not None:
            drafter = ModelDrafter(draft, k, rules)
        else:
            drafter = PromptLookupDrafter(req, k, eos_ids, m.pad_token_id, m.device)
        # The loop's plain steps report natural EOS only for a forced length and a drafter that may skip rounds.
        self._warm_up_speculative(target, draft, k, rules, req.min_new_tokens > 0 and not drafter.always_drafts)
        sequences, log = speculative_decode(target, drafter, req, probe, rules, eos_ids)
        return sequences, lambda: log

    def step_time_ratio(self, inputs, *, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                        top_k: int = 0) -> float:
        """c of the speculative cost model (metrics/prediction.py): the draft's decode step time / the target's, at
        the length of the first prompt of `inputs`, as the speculative loop runs them (compiled steps on a GPU; the
        draft's step returns its distribution when sampling). Timed synchronized, outside any measured call; a graph
        not warm yet is compiled first, into compile_seconds."""
        m = self.models
        if m.draft is None:
            raise UnsupportedSetting("step_time_ratio needs a draft model; prompt lookup drafts cost nothing (c = 0)")
        mask = inputs.attention_mask[:1][:, inputs.attention_mask[0].bool()]
        ids = inputs.input_ids[:1][:, inputs.attention_mask[0].bool()]  # (1, L) the real prompt tokens
        req = Request(ids, mask, max_new_tokens=STEP_RATIO_ROOM, min_new_tokens=0, do_sample=do_sample,
                      temperature=temperature, top_p=top_p, top_k=top_k)
        rules = self._rules(req, ids.shape[1])
        seconds = []
        with torch.no_grad():
            for role, model, want_probs in (("draft", m.draft, do_sample), ("target", m.target, False)):
                runner = self._timing_model(role, model, ids.shape[1] + STEP_RATIO_ROOM + 1)
                runner.cache.begin_request(mask)
                self._warm_up_step(runner, rules, want_probs)
                first = prefill(runner, req, rules)  # (1,)
                runner.cache.tokens[:, ids.shape[1]] = first

                def reset(runner=runner):
                    runner.cache.pos.fill_(ids.shape[1])

                def step(runner=runner, want_probs=want_probs):
                    decode_one_token(runner, rules, want_probs)

                seconds.append(seconds_per_step(step, reset, m.device))
        return seconds[0] / seconds[1]

    # -- compiled graphs: warmed up before the request's prefill, timed into compile_seconds -----------------------

    def _warm_up_step(self, model: Model, rules: Rules, want_probs: bool, want_eos: bool = False) -> None:
        key = ("step", id(model.forward), model.cache.serial, rules.signature, want_probs, want_eos)
        self._warm_up(key, self.steps.decode, model.forward, model.cache, rules, want_probs, want_eos)

    def _warm_up_speculative(self, target: Model, draft: Model | None, k: int, rules: Rules,
                             plain_eos: bool = False) -> None:
        m = self.models
        if not self.compile:
            return
        q_is_none = draft is None or not rules.do_sample  # deterministic drafts: verify builds one-hot q itself
        zeros = torch.zeros(1, k + 1, dtype=torch.long, device=m.device)  # (1, k+1)
        q = None if q_is_none else torch.zeros(1, k, vocab_size(m.target), device=m.device)  # (1, k, V)
        self._warm_up_step(target, rules, False, plain_eos)
        self._warm_up(("verify", id(target.forward), target.cache.serial, k, rules.signature, q_is_none,
                       self.accept_fn), self.steps.verify, target.forward, target.cache, zeros, q, self.steps.n_real,
                      rules, self.accept_fn)
        if draft is not None:
            for want in {False, rules.do_sample}:  # the drafts' steps return their distributions when sampling
                self._warm_up_step(draft, rules, want)

    def _warm_up_round(self, target: Model, draft: Model | None, state: RoundState, k: int, rules: Rules,
                       req: Request) -> None:
        """The no-sync round's graph for this k, drafter, caches and sampling variant. Its scratch rounds start
        at the request's first new slot, which the request's own rounds overwrite (and `begin` refills state)."""
        if not self.compile:
            return
        m = self.models
        key = ("round", id(target.forward), target.cache.serial, None if draft is None else id(draft.forward),
               None if draft is None else draft.cache.serial, k, rules.signature, self.accept_fn)
        first = torch.zeros(1, dtype=torch.long, device=m.device)  # (1,)
        state.begin(req.input_ids.shape[1], req.max_new_tokens, req.min_new_tokens, m.pad_token_id, first,
                    first.bool(), rules)
        self._warm_up(key, self.steps.round, target.forward, target.cache, None if draft is None else draft.forward,
                      None if draft is None else draft.cache, state, rules, self.accept_fn, k)

    def _warm_up(self, key: tuple, fn, *args) -> None:
        """Compile and capture a graph, timed into compile_seconds. The scratch calls run from slot 0
        (begin_request came first; decode steps advance pos, the prefill resets it), so they write only slots that
        the prefill and the steps overwrite before anything reads them."""
        if not self.compile or key in self._warm:
            return
        torch.cuda.synchronize(self.models.device)
        start = time.perf_counter()
        for _ in range(WARMUP_CALLS):
            self.steps.run(fn, *args)
        torch.cuda.synchronize(self.models.device)
        self.compile_seconds += time.perf_counter() - start
        self._warm.add(key)

    # -- state kept across requests, so that compiled graphs and their buffer addresses are reused -----------------

    def _model(self, role: str, model, batch: int, length: int) -> Model:
        return Model(self._forward(model), self._cache(role, model, batch, length), self.steps)

    def _timing_model(self, role: str, model, length: int) -> Model:
        """The requests' own cache when it has room (its graphs are warm), else a scratch one: replacing theirs
        would make the next measured call compile its graphs anew."""
        cache = self._caches.get((role, id(model), 1))
        if cache is None or cache.max_len < length:
            cache = StaticKVCache(model, 1, -(-length // CACHE_ROUND) * CACHE_ROUND)
        return Model(self._forward(model), cache, self.steps)

    def _forward(self, model):
        """The forward a model runs (FusedForward where its layout allows, else its own), one per engine and model."""
        fwd = self._forwards.get(id(model))
        if fwd is None or (fwd.fused and not fwd._valid()):
            fwd = self._forwards[id(model)] = make_forward(model, self.fuse)
        return fwd

    def _cache(self, role: str, model, batch: int, length: int) -> StaticKVCache:
        """One cache per role (target, draft: the draft may be the target model itself) and batch size, grown
        (rounded up) only when a request needs more room."""
        key = (role, id(model), batch)
        cache = self._caches.get(key)
        if cache is None or cache.max_len < length:
            cache = StaticKVCache(model, batch, -(-length // CACHE_ROUND) * CACHE_ROUND)
            self._caches[key] = cache
        return cache

    def _rules(self, req: Request, prompt_len: int) -> Rules:
        """The request's rules, in the same tensors every time: compiled steps read them in place (static
        addresses) instead of having CUDA graphs copy four fresh inputs in at every replay."""
        m = self.models
        fresh = make_rules(do_sample=req.do_sample, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                           eos_token_ids=m.eos_token_ids, vocab_size=vocab_size(m.target), prompt_len=prompt_len,
                           min_new_tokens=req.min_new_tokens, device=m.device)
        tensors = ("temperature", "top_p_cut", "eos_mask", "eos_from_slot")
        if self._rules_buffers is None:
            self._rules_buffers = fresh
            for name in tensors:
                torch._dynamo.mark_static_address(getattr(fresh, name))
        else:
            for name in tensors:
                getattr(self._rules_buffers, name).copy_(getattr(fresh, name))
        return dataclasses.replace(fresh, **{name: getattr(self._rules_buffers, name) for name in tensors})

    def _check(self, req: Request) -> None:
        m = self.models
        check_model(m.target)
        if req.use_draft and m.draft is not None:
            check_model(m.draft)
        if req.num_beams > 1:
            raise UnsupportedSetting("beam search runs on the hf engine only: set engine 'hf' for beam_search")
        if req.logits_options:
            names = ", ".join(name for name, _ in req.logits_options)
            raise UnsupportedSetting(f"the fast engine samples with temperature, top-p and top-k only, not {names}: "
                                     "use engine 'hf'")
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


def draft_counts(log: DraftLog, k: int) -> DraftStats:
    """A drafting call's DraftStats, by the definitions of metrics/drafts.py (the hf engine's too)."""
    return draft_stats(log.rounds, k, log.natural_eos, log.target_forwards, log.drafted_all)


class _DraftsLater:
    """FastGeneration.drafts: set as on any Generation, or by count_later to a read that runs on first access."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        read = obj.__dict__.pop("_read_drafts", None)
        if read is not None:
            obj.__dict__["drafts"] = read()
        return obj.__dict__["drafts"]

    def __set__(self, obj, value):
        obj.__dict__.pop("_read_drafts", None)
        obj.__dict__["drafts"] = value


class FastGeneration(Generation):
    """A Generation whose drafting counts are computed when first read. The no-sync round records its rounds on the
    device; reading them inside generate would be a host sync in the timed call, so they are read once, when the
    runner asks for a count after its clock has stopped (as Generation.new_tokens is counted)."""

    drafts = _DraftsLater()

    def count_later(self, read: Callable[[], DraftStats]) -> None:
        """read() returns the call's DraftStats; it runs at most once, when `drafts` is first read."""
        self.__dict__["_read_drafts"] = read


def pad_after_eos(sequences: torch.Tensor, eos_token_ids, pad_token_id: int) -> torch.Tensor:
    """What `generate` emits once a row has finished: pad tokens after its first EOS."""
    if sequences.shape[1] == 0:
        return sequences
    is_eos = torch.isin(sequences, torch.tensor(list(eos_token_ids), device=sequences.device)).long()  # (B, T)
    after = (is_eos.cumsum(dim=1) - is_eos) > 0
    return sequences.masked_fill(after, pad_token_id)

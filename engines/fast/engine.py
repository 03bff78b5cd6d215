"""FastEngine: checks a request, keeps the compiled graphs and their warm-up apart from the timed run, and hands the
request to a loop of loops.py. See docs/fast_engine.md."""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import torch

from decoding.types import Generation, Probe, Request, UnsupportedSetting
from engines.fast.cache import StaticKVCache
from engines.fast.generation import FastGeneration, draft_counts, pad_after_eos
from engines.fast.loops import (
    DraftLog,
    Model,
    ModelDrafter,
    PromptLookupDrafter,
    decode,
    decode_one_token,
    prefill,
    run_round,
    speculative_decode,
    speculative_decode_nosync,
)
from engines.fast.model import check_model, fusable, is_quantized, make_forward, vocab_size
from engines.fast.rounds import DraftBuffers, RoundState, draft_first, draft_next, lookup_round, verify_drafted
from engines.fast.sampling import AcceptFn, Rules, make_rules, rejection_accept
from engines.fast.steps import RoundSteps, Steps, compile_options, decode_step, describe_options, verify
from metrics.prediction import seconds_per_step
from metrics.timing import synchronize

STEP_RATIO_ROOM = 16  # cache slots step_time_ratio needs after the prompt (its STEPS decode steps and the first token)
CACHE_ROUND = 128  # cache lengths are rounded up so that similar requests share one compiled graph
WARMUP_CALLS = 3  # compile + warm-up run, CUDA graph capture, first replay


@functools.cache
def compiled(fn, options: tuple):
    """fn compiled whole (fullgraph: a graph break on another transformers version fails loudly instead of splitting
    the step) with static shapes and these inductor options (CUDA graphs on CUDA). One wrapper per function and
    options for the whole process, shared by every engine: dynamo keeps a graph per model, shape and variant under
    it, and a second wrapper would trace every model again."""
    return torch.compile(fn, fullgraph=True, dynamic=False, options=dict(options) or None)


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
                 fast_tuning: bool = True, fast_nosync: bool = True, compile_cpu: bool = False):
        self.models = models
        self.accept_fn = accept_fn
        self.fuse = fast_fuse
        self.nosync = fast_nosync
        self.compile_seconds = 0.0  # reported apart from the run time
        self.notes: list[str] = []
        cuda = models.device.type == "cuda"
        # compile_cpu (not a config key: tests and the GPU check's dry run) compiles with inductor on the CPU too,
        # without CUDA graphs, so the compiled paths and their counters run where no GPU is.
        self.compile = compile and (cuda or compile_cpu)
        if self.compile and any(is_quantized(m) for m in (models.target, models.draft) if m is not None):
            self.compile = False
            self.notes.append("fast engine: quantized weights, ran without torch.compile / CUDA graphs")
        step_fn, verify_fn = decode_step, verify
        round_steps = RoundSteps(draft_first, draft_next, verify_drafted, lookup_round)
        self.compile_options: dict = {}
        if self.compile:
            # Each model, batch size and sampling variant is its own graph; the default limit (8) is too low.
            for name in ("recompile_limit", "cache_size_limit"):
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
            # This engine's own inductor options, passed per function: nothing process-wide changes.
            self.compile_options = compile_options(cuda, fast_tuning)
            options = tuple(sorted(self.compile_options.items()))
            step_fn, verify_fn = compiled(decode_step, options), compiled(verify, options)
            # The round's pieces compile apart: a draft step's graph and the verify's, never k draft forwards
            # unrolled into one graph (whose compile time grows with k).
            round_steps = RoundSteps(*(compiled(fn, options) for fn in dataclasses.astuple(round_steps)))
            self.notes.append(f"fast engine: torch.compile fullgraph, {describe_options(self.compile_options)}")
        n_real = torch.zeros((), dtype=torch.long, device=models.device)
        torch._dynamo.mark_static_address(n_real)
        self.steps = Steps(step_fn, verify_fn, accept_fn, n_real, graphs=self.compile, round=round_steps)
        self._caches: dict[tuple, StaticKVCache] = {}
        self._reserved: dict[int, int] = {}  # batch size -> the most slots any row will need (reserve)
        self._round_states: dict[int, RoundState] = {}  # by target cache (serial): its length bounds the rounds
        self._draft_buffers: dict[bool, DraftBuffers] = {}  # by sampling: the no-sync round's drafts
        self._forwards: dict[int, object] = {}
        self._warm: set[tuple] = set()
        self._rules_buffers: Rules | None = None  # one set of rule tensors, refilled per request (see _rules)
        # Fused now, at construction: fusing replaces the q/k/v and gate/up Parameters, and another engine that had
        # captured CUDA graphs on the old ones would re-record them inside its measured calls. The runner builds
        # every engine before any warm-up.
        for role, model in (("target", models.target), ("draft", models.draft)):
            if model is None:
                continue
            self._forward(model)
            why = fusable(model) if self.fuse else None
            if why is not None:
                self.notes.append(f"fast engine: the {role} ran its own forward, not the fused one ({why})")

    def generate(self, request: Request, probe: Probe) -> Generation:
        self._check(request)
        m = self.models
        drafting = request.use_draft or request.prompt_lookup_num_tokens > 0
        read_log, reads = None, {}
        with torch.no_grad():
            if request.max_new_tokens <= 0:
                sequences = request.input_ids.new_full((request.input_ids.shape[0], 0), m.pad_token_id)
            elif drafting:
                sequences, read_log, reads = self._speculative(request, probe)
            else:
                sequences, reads = self._decode(request, probe)
        sequences = pad_after_eos(sequences, m.eos_token_ids, m.pad_token_id)
        generation = FastGeneration(sequences, m.eos_token_ids, engine=self.name, notes=self.notes)
        generation.reads = reads
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

    def _decode(self, req: Request, probe: Probe) -> tuple[torch.Tensor, dict]:
        m = self.models
        B, L = req.input_ids.shape
        rules = self._rules(req, L)
        target = self._model("target", m.target, B, L + req.max_new_tokens + 1)
        target.cache.begin_request(req.attention_mask)
        self._warm_up_step(target, rules, False)
        eos = torch.tensor(list(m.eos_token_ids), device=m.device)  # (E,)
        return decode(target, req, probe, rules, eos), {"target_slots": target.cache.max_len}

    def _speculative(self, req: Request, probe: Probe) -> tuple[torch.Tensor, Callable[[], DraftLog], dict]:
        """The new tokens, how to read the rounds' log (for the no-sync round, a read of the device that
        FastGeneration defers until a count is asked for), and what the call read (`reads`, metrics/bandwidth.py):
        every forward really run, at its caches' full length."""
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
        reads = {"target_slots": target.cache.max_len, "draft_slots": draft.cache.max_len if draft else None}
        if self.nosync:
            state = self._round_states.get(target.cache.serial)
            if state is None:
                state = self._round_states[target.cache.serial] = RoundState.new(target.cache.max_len, m.device)
            buffers = self._buffers(k, rules) if draft is not None else None
            self._warm_up_round(target, draft, state, k, rules, req, buffers)
            launched: list[int] = []
            sequences, packed = speculative_decode_nosync(target, draft, state, k, req, probe, rules, m.pad_token_id,
                                                          buffers, launched)
            # Every launched round ran k draft steps and a verify, the ones after the run ended included.
            reads.update(target_forwards=1 + launched[0], draft_forwards=(1 + k * launched[0]) if draft else 0)
            return sequences, lambda: DraftLog.from_snapshot(packed), reads
        eos_ids = set(m.eos_token_ids)
        if draft is not None:
            drafter = ModelDrafter(draft, k, rules)
        else:
            drafter = PromptLookupDrafter(req, k, eos_ids, m.pad_token_id, m.device)
        # The loop's plain steps report natural EOS only for a forced length and a drafter that may skip rounds.
        self._warm_up_speculative(target, draft, k, rules, req.min_new_tokens > 0 and not drafter.always_drafts)
        sequences, log = speculative_decode(target, drafter, req, probe, rules, eos_ids)
        reads.update(target_forwards=log.target_forwards, draft_forwards=getattr(drafter, "forwards", 0))
        return sequences, lambda: log, reads

    def _buffers(self, k: int, rules: Rules) -> DraftBuffers:
        """The no-sync round's draft buffers for this sampling variant, one set for every k up to its size."""
        buffers = self._draft_buffers.get(rules.do_sample)
        if buffers is None or buffers.tokens.shape[1] < k:
            buffers = self._draft_buffers[rules.do_sample] = DraftBuffers.new(k, vocab_size(self.models.target),
                                                                              rules.do_sample, self.models.device)
        return buffers

    def held_bytes(self) -> int:
        """Bytes of the caches and buffers this engine keeps between calls (metrics/memory.py)."""
        kept = [t for c in self._caches.values() for t in (*c.k_cache, *c.v_cache, c.tokens, c.valid)]
        kept += [t for state in self._round_states.values() for t in vars(state).values()]
        kept += [t for b in self._draft_buffers.values() for t in (b.tokens, b.probs)]
        return sum(t.numel() * t.element_size() for t in kept)

    def reserve(self, batch: int, slots: int) -> None:
        """Size the caches of this batch size for `slots` up front (scenarios/per_call.py calls it for every row
        before any warm-up): a later, longer request then finds its cache, and the graphs captured on it, in place."""
        self._reserved[batch] = max(self._reserved.get(batch, 0), slots)

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
        self._warm_up(key, lambda: self.steps.run(self.steps.decode, model.forward, model.cache, rules, want_probs,
                                                  want_eos))

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
                       self.accept_fn), lambda: self.steps.run(self.steps.verify, target.forward, target.cache, zeros,
                                                               q, self.steps.n_real, rules, self.accept_fn))
        if draft is not None:
            for want in {False, rules.do_sample}:  # the drafts' steps return their distributions when sampling
                self._warm_up_step(draft, rules, want)

    def _warm_up_round(self, target: Model, draft: Model | None, state: RoundState, k: int, rules: Rules,
                       req: Request, buffers: DraftBuffers | None) -> None:
        """The no-sync round's graph for this k, drafter, caches and sampling variant. Its scratch rounds start
        at the request's first new slot, which the request's own rounds overwrite (and `begin` refills state)."""
        if not self.compile:
            return
        m = self.models
        key = ("round", id(target.forward), target.cache.serial, None if draft is None else id(draft.forward),
               None if draft is None else draft.cache.serial, k, rules.signature, self.accept_fn, id(buffers))
        first = torch.zeros(1, dtype=torch.long, device=m.device)  # (1,)
        state.begin(req.input_ids.shape[1], req.max_new_tokens, req.min_new_tokens, m.pad_token_id, first,
                    first.bool(), rules)
        self._warm_up(key, lambda: run_round(target, draft, state, rules, k, buffers))

    def _warm_up(self, key: tuple, call: Callable[[], object]) -> None:
        """Compile and capture a graph, timed into compile_seconds. The scratch calls run from slot 0
        (begin_request came first; decode steps advance pos, the prefill resets it), so they write only slots that
        the prefill and the steps overwrite before anything reads them."""
        if not self.compile or key in self._warm:
            return
        synchronize(self.models.device)
        start = time.perf_counter()
        for _ in range(WARMUP_CALLS):
            call()
        synchronize(self.models.device)
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
        length = max(length, self._reserved.get(batch, 0))
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

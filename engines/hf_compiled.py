"""The `hf_compiled` engine: transformers' own fast path, what a user tries before writing a decoding loop.

`generate` with `cache_implementation="static"`: on CUDA, transformers then compiles the model's forward by itself
(`torch.compile` with its default `CompileConfig`: inductor, mode="reduce-overhead", i.e. CUDA graphs) and runs the
decode steps through it; the prefill stays eager. Everything else is the `hf` engine's call, so acceptance counting,
the EOS rules and the logits options are the same code, and the two engines differ only in the cache and the
compile. What transformers runs, as of 5.x:

- greedy, sampling, batches, logits options (typical_p): decode steps compiled;
- beam search: a static cache, but `generate` compiles no forward for it (the row's notes say so);
- assisted generation and prompt lookup: the target's verify forward compiled; the draft model runs its own
  `generate` on a dynamic cache, eager, as transformers builds its candidate generator.

On the CPU nothing is compiled (as with the `fast` engine; the `compile` option false turns it off on CUDA too):
the static cache runs eager and each Generation's notes say so.
"""
from __future__ import annotations

import dataclasses
import inspect
import time

import torch
from transformers import CompileConfig, StaticCache

from decoding.types import Generation, NullProbe, Probe, Request, UnsupportedSetting
from engines.hf import HFEngine, decode_steps
from metrics.prediction import STEPS, seconds_per_step

CACHE_ROUND = 128  # cache lengths are rounded up so that similar requests share one compiled graph
WARMUP_TOKENS = 4  # compile + eager warm-up, CUDA graph recording, first replay: three decode forwards after the prefill
RECOMPILE_LIMIT = 64  # graphs per code object: every model, row count and cache length is one


def round_up(n: int) -> int:
    return -(-n // CACHE_ROUND) * CACHE_ROUND


def compile_counts() -> tuple[int, int]:
    """(graphs dynamo has compiled, graphs inductor could not run as CUDA graphs) in this process so far: a rise of
    the first during a measured call means compile time is in it, of the second that a step runs without CUDA graphs
    (TORCH_LOGS=perf_hints says why)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(counters["inductor"]["cudagraph_skips"])


class HFCompiledEngine(HFEngine):
    """HFCompiledEngine(models, compile=True).generate(request, probe) -> Generation (`compile`: its config key).

    Attributes: `compile_seconds` (compile + CUDA-graph capture so far, in scratch calls run before a request whose
    graphs are not warm; 0.0 on the CPU), `compile` (whether generate may compile the forward)."""

    name = "hf_compiled"

    def __init__(self, models, compile: bool = True):
        super().__init__(models)
        self.compile_seconds = 0.0
        self.compile = models.device.type == "cuda" and compile
        self.notes: list[str] = []
        quantizer = getattr(models.target, "hf_quantizer", None)
        if self.compile and quantizer is not None and not getattr(quantizer, "is_compileable", False):
            # generate would skip the compile silently; say so instead of reporting an eager row as compiled.
            self.compile = False
            self.notes.append("hf_compiled: transformers does not compile this quantized model; ran on a static "
                              "cache without torch.compile")
        elif models.device.type != "cuda":
            self.notes.append("hf_compiled: static KV cache without torch.compile (compiled on CUDA only)")
        elif not self.compile:
            self.notes.append("hf_compiled: compile false, static KV cache without torch.compile")
        if self.compile:
            # The compiled forward is Module.__call__, one code object for every model, batch and cache length; the
            # default limit (8) would send later rows back to eager without an error.
            for name in ("recompile_limit", "cache_size_limit"):
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, max(RECOMPILE_LIMIT, getattr(torch._dynamo.config, name)))
        self._cache_len: dict[tuple, int] = {}  # (rows, graph kind) -> static cache length, grown only
        self._warm: set[tuple] = set()
        self._no_graphs: set[tuple] = set()  # keys whose warm-up saw inductor skip CUDA graphs

    def generate(self, request: Request, probe: Probe) -> Generation:
        target = self.models.target
        supports = getattr(type(target), "_supports_default_dynamic_cache", None)
        if supports is not None and not supports():
            # generate would ignore cache_implementation with a warning and run its own cache, uncompiled.
            raise UnsupportedSetting(f"{type(target).__name__} keeps its own cache in transformers, so generate cannot "
                                     "run it on a static cache: use engine 'hf'")
        notes = list(self.notes)
        beams = request.num_beams > 1
        if beams and self.compile:
            notes.append("hf_compiled: generate compiles no forward for beam search; ran on a static cache, eager")
        compiles = self.compile and not beams
        length, key = self._cache_length(request)
        if compiles and key not in self._warm:
            if self._warm_up(request, length):
                self._no_graphs.add(key)
            self._warm.add(key)
        before = compile_counts()
        generation = self._static_generate(request, probe, length, compiles)
        if compiles:
            graphs, skips = (now - then for now, then in zip(compile_counts(), before))
            if graphs:
                notes.append("hf_compiled: torch.compile compiled inside a call after its warm-up (a shape the "
                             "warm-up did not see); that call's time includes compilation")
            if skips or key in self._no_graphs:
                notes.append("hf_compiled: some compiled steps ran without CUDA graphs (TORCH_LOGS=perf_hints says "
                             "why)")
        generation.notes.extend(n for n in notes if n not in generation.notes)
        return generation

    def _cache_length(self, request: Request) -> tuple[int, tuple]:
        """The static cache length for this request, and the key of the graphs it runs.

        One length per row count and graph kind (single-token decode, or a k-token verify), grown only when a request
        needs more room: the runner warms every row up before it measures any, and a length shared by all rows would
        let a later row's longer prompt change the shapes of rows already warmed up."""
        B, L = request.input_ids.shape
        rows = B * max(request.num_beams, request.num_return_sequences)
        drafting = request.use_draft or request.prompt_lookup_num_tokens > 0
        k = request.num_draft_tokens if request.use_draft else request.prompt_lookup_num_tokens
        kind = ("verify", request.use_draft, k) if drafting else ("decode",)
        need = L + request.max_new_tokens + (k + 1 if drafting else 0)
        length = max(self._cache_len.get((rows, kind), 0), round_up(need))
        self._cache_len[(rows, kind)] = length
        return length, (rows, kind, length)

    def _warm_up(self, request: Request, length: int) -> bool:
        """Compile and capture the graphs a request will run, in scratch calls timed into compile_seconds, so that the
        first measured call finds them ready. A drafting request runs whole: its verify forwards take several token
        counts (fewer drafts near the end, rounds without a match), which only the same call shows; its
        compile_seconds then also holds one call's run time. Returns whether inductor skipped CUDA graphs."""
        drafting = request.use_draft or request.prompt_lookup_num_tokens > 0
        n = request.max_new_tokens if drafting else min(request.max_new_tokens, WARMUP_TOKENS)
        scratch = dataclasses.replace(request, max_new_tokens=n, min_new_tokens=n)
        skips = compile_counts()[1]
        torch.cuda.synchronize(self.models.device)
        start = time.perf_counter()
        self._static_generate(scratch, NullProbe(), length, True)
        torch.cuda.synchronize(self.models.device)
        self.compile_seconds += time.perf_counter() - start
        return compile_counts()[1] > skips

    def _static_generate(self, request: Request, probe: Probe, length: int, compiles: bool) -> Generation:
        """The hf engine's call, with target.generate switched to a static cache of `length` slots for its duration
        (as the hf engine switches the candidate generator)."""
        target = self.models.target
        method = type(target).generate
        inside = []

        def static_generate(*args, **kwargs):
            if inside:
                # The target as its own draft: the assistant's generate keeps the dynamic cache transformers gives it.
                return method(target, *args, **kwargs)
            options = dict(cache_implementation="static", disable_compile=not compiles,
                           compile_config=CompileConfig())  # transformers' defaults: what a user gets
            if not request.use_draft:
                # The assistant's generate copies this config onto a dynamic cache and warns that it ignores this.
                options["max_cache_len"] = length
            config = kwargs.get("generation_config")
            if config is None:
                kwargs.update(options)
            else:
                for name, value in options.items():
                    setattr(config, name, value)
            # generate sizes a static cache to at least the longest it made before on this model (a private
            # attribute, and the only sizing where max_cache_len is not set): setting it keeps the length ours, so a
            # row's graphs keep their shapes whatever other rows ran in between.
            target._previous_max_cache_length = length
            inside.append(True)
            try:
                return method(target, *args, **kwargs)
            finally:
                inside.pop()

        target.generate = static_generate
        try:
            return super().generate(request, probe)
        finally:
            del target.generate

    def step_time_ratio(self, inputs, *, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                        top_k: int = 0) -> float:
        """c of the speculative cost model (metrics/prediction.py), with each model's step as this engine runs it: the
        draft's on a dynamic cache, eager (transformers' candidate generator gives the assistant no static cache), the
        target's on a static cache through the compiled forward. Timed outside any measured call; a graph not warm yet
        is compiled first, into compile_seconds. Logits processing is outside the forward and left out."""
        m = self.models
        if m.draft is None:
            raise UnsupportedSetting("step_time_ratio needs a draft model; prompt lookup drafts cost nothing (c = 0)")
        ids = inputs.input_ids[:1][:, inputs.attention_mask[0].bool()]  # (1, L) the real prompt tokens
        with torch.inference_mode():
            draft = seconds_per_step(*decode_steps(m.draft, ids), m.device)
            step, reset = self._static_steps(ids)
            if self.compile and ("ratio", ids.shape[1]) not in self._warm:
                torch.cuda.synchronize(m.device)
                start = time.perf_counter()
                for _ in range(WARMUP_TOKENS):
                    step()
                reset()
                torch.cuda.synchronize(m.device)
                self.compile_seconds += time.perf_counter() - start
                self._warm.add(("ratio", ids.shape[1]))
            return draft / seconds_per_step(step, reset, m.device)

    def _static_steps(self, ids: torch.Tensor):
        """After a prefill of ids (1, L) into a static cache: a greedy single-token step of the target, and a reset
        back to the prefill (a static cache crops by moving its length back)."""
        target = self.models.target
        cache = StaticCache(config=target.config.get_text_config(decoder=True),
                            max_cache_len=round_up(ids.shape[1] + WARMUP_TOKENS + STEPS + 1))
        forward = target.get_compiled_call(CompileConfig()) if self.compile else target.__call__
        name = "cache" if "cache" in inspect.signature(target.forward).parameters else "past_key_values"
        out = target(input_ids=ids, use_cache=True, **{name: cache})
        first = out.logits[:, -1:].argmax(dim=-1)  # (1, 1)
        state = {"token": first}

        def step():
            logits = forward(input_ids=state["token"], use_cache=True, **{name: cache}).logits
            state["token"] = logits[:, -1:].argmax(dim=-1)

        def reset():
            extra = cache.get_seq_length() - ids.shape[1]
            if extra > 0:
                cache.crop(-extra)
            state["token"] = first

        return step, reset

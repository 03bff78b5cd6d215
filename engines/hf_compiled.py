"""The `hf_compiled` engine: transformers' own fast path, what a user tries before writing a decoding loop.

`generate` on a static KV cache: on CUDA, transformers then compiles the model's forward by itself (`torch.compile`
with its default `CompileConfig`: inductor, mode="reduce-overhead", i.e. CUDA graphs, none of the fast engine's
tuning) and runs the decode steps through it; the prefill stays eager. The engine hands `generate` one persistent
`StaticCache` per shape (rows x length), reset in place before each call: transformers would build a new one per
call, and new buffer addresses make the CUDA graphs re-record inside measured calls (past a limit, silently fall
back to eager). Assisted generation and prompt lookup need transformers 5.24 (older 5.x refuse them on a static
cache): below it those rows are refused with the reason. Everything else is the `hf` engine's call, so acceptance counting,
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
from engines.fast.model import cache_kwarg
from engines.hf import HFEngine, decode_steps
from metrics.prediction import STEPS, seconds_per_step

STATIC_DRAFTING = (5, 24)  # older 5.x: assisted generate refuses static caches, and StaticLayer has no crop
CACHE_ROUND = 128  # cache lengths are rounded up so that similar requests share one compiled graph
WARMUP_TOKENS = 4  # compile + eager warm-up, CUDA graph recording, first replay: three decode forwards after the prefill
RECOMPILE_LIMIT = 64  # graphs per code object: every model, row count and cache length is one


def transformers_version() -> tuple[int, int]:
    import transformers
    from packaging.version import Version

    v = Version(transformers.__version__)
    return v.major, v.minor


def refuse_old_drafting(version: tuple[int, int], what: str) -> None:
    if version < STATIC_DRAFTING:
        raise UnsupportedSetting(
            f"hf_compiled: {what} needs transformers >= {'.'.join(map(str, STATIC_DRAFTING))} (this is "
            f"{'.'.join(map(str, version))}, whose generate refuses assisted generation on a static cache and whose "
            "static cache cannot crop): upgrade transformers, or run this method on engine 'hf' or 'fast'")


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
        else:
            self.notes.append("hf_compiled: transformers' own torch.compile, CompileConfig defaults (no tuning)")
        if self.compile:
            # The compiled forward is Module.__call__, one code object for every model, batch and cache length; the
            # default limit (8) would send later rows back to eager without an error.
            for name in ("recompile_limit", "cache_size_limit"):
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, max(RECOMPILE_LIMIT, getattr(torch._dynamo.config, name)))
        self._cache_len: dict[tuple, int] = {}  # (rows, graph kind) -> static cache length, grown only
        # (rows, length) -> the one StaticCache calls of that shape reuse, reset in place: generate would make a new
        # one per call, and new buffer addresses re-record the CUDA graphs inside measured calls.
        self._static_caches: dict[tuple, StaticCache] = {}
        self._warm: set[tuple] = set()
        self._no_graphs: set[tuple] = set()  # keys whose warm-up saw inductor skip CUDA graphs

    def generate(self, request: Request, probe: Probe) -> Generation:
        target = self.models.target
        supports = getattr(type(target), "_supports_default_dynamic_cache", None)
        if supports is not None and not supports():
            # generate would ignore cache_implementation with a warning and run its own cache, uncompiled.
            raise UnsupportedSetting(f"{type(target).__name__} keeps its own cache in transformers, so generate cannot "
                                     "run it on a static cache: use engine 'hf'")
        drafting = request.use_draft or request.prompt_lookup_num_tokens > 0
        if drafting:
            refuse_old_drafting(transformers_version(), "assisted generation and prompt lookup")
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
        # A compile or re-record inside this call is noted, and the row marked unstable, by the scenario
        # (metrics/compiles.py); a skip of CUDA graphs is this engine's to say.
        if compiles and (compile_counts()[1] > before[1] or key in self._no_graphs):
            notes.append("hf_compiled: some compiled steps ran without CUDA graphs (TORCH_LOGS=perf_hints says why)")
        generation.notes.extend(n for n in notes if n not in generation.notes)
        generation.reads = {"target_slots": length}  # a static cache is attended over its whole length
        return generation

    def held_bytes(self) -> int:
        """Bytes of the static caches this engine keeps between calls (metrics/memory.py)."""
        return sum(t.numel() * t.element_size() for cache in self._static_caches.values() for layer in cache.layers
                   for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if t is not None)

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
            options = dict(disable_compile=not compiles,
                           compile_config=CompileConfig())  # transformers' defaults: what a user gets
            if request.num_beams == 1:
                # One persistent cache per shape, reset in place (its buffers keep their addresses); beam search,
                # never compiled, reorders its cache and gets a fresh one from generate.
                rows = request.input_ids.shape[0] * max(request.num_beams, request.num_return_sequences)
                cache = self._static_cache(rows, length)
                kwargs[cache_kwarg(target)] = cache
            else:
                options["cache_implementation"] = "static"
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

    def _static_cache(self, rows, length: int) -> StaticCache:
        cache = self._static_caches.get((rows, length))
        if cache is None:
            cache = self._static_caches[(rows, length)] = StaticCache(
                config=self.models.target.config.get_text_config(decoder=True), max_cache_len=length)
        cache.reset()  # in place: generate must see an empty cache, and the graphs the same buffers
        return cache

    def step_time_ratio(self, inputs, *, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                        top_k: int = 0) -> float:
        """c of the speculative cost model (metrics/prediction.py), with each model's step as this engine runs it: the
        draft's on a dynamic cache, eager (transformers' candidate generator gives the assistant no static cache), the
        target's on a static cache through the compiled forward. Timed outside any measured call; a graph not warm yet
        is compiled first, into compile_seconds. Logits processing is outside the forward and left out."""
        m = self.models
        if m.draft is None:
            raise UnsupportedSetting("step_time_ratio needs a draft model; prompt lookup drafts cost nothing (c = 0)")
        refuse_old_drafting(transformers_version(), "step_time_ratio (it crops a static cache)")
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

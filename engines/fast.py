"""The `fast` engine: our own decode loop over the transformers model modules, in the style of gpt-fast.

Why: in eager `generate` every token pays the same host overhead (Python, kernel launches, a host sync), so a
0.6B model decodes barely faster than a 4B one and a draft model cannot help (see the H100 figures in README.md). Here
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

Fewer, larger kernels per layer. At batch 1 a step reads every weight once, but a 36-layer model also runs some
600 small kernels, and their count and latency, not the bytes, set much of the step time. So for the common
Llama-style layouts (Qwen3, Qwen2, Llama: `FusedForward`) the step runs its own decoder loop over the model's own
modules, with q/k/v fused into one matmul and gate/up into another (5 GEMVs per layer instead of 7). The fused
weights cost no memory: the model's q/k/v and gate/up Linear weights are re-pointed to views of the fused tensor,
so every other user of the model (the hf engine) sees the same values. Attention runs on the key/value heads
(grouped queries packed as rows: no repeat of the cache), with a boolean mask. Other models run their own forward
(`HFForward`). The token fed to each step and its successor live in a device buffer (`StaticKVCache.tokens`) and
the step advances `pos` itself, so a greedy decode step is one graph replay and nothing else.

On the CPU nothing is compiled, so the same code is testable there. Environment switches (CUDA debugging and A/B
runs): BENCH_FAST_COMPILE=0 disables compilation; BENCH_FAST_FUSE=0 runs the model's own forward instead of
`FusedForward`; BENCH_FAST_TUNING=0 leaves inductor's defaults instead of gpt-fast's settings.
`compile_seconds` accumulates the time spent compiling and capturing CUDA graphs (the warm-up of each new graph),
which the runner should report apart from the run time.
"""
from __future__ import annotations

import dataclasses
import inspect
import itertools
import os
import sys
import time
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Cache

from decoding.types import Generation, Probe, Request, UnsupportedSetting
from engines.fast_sampling import AcceptFn, Rules, make_rules, next_token, next_token_probs, rejection_accept

CHECK_EVERY = 8  # decode steps between polls of the probe and, when EOS may end the run, EOS checks (host syncs)
CACHE_ROUND = 128  # cache lengths are rounded up so that similar requests share one compiled graph
WARMUP_CALLS = 3  # compile + warm-up run, CUDA graph capture, first replay
_COMPILED: dict[str, object] = {}  # one torch.compile wrapper per function, shared by all engines (dynamo keeps
# a graph per model, shape and variant under each; sharing it avoids tracing the same model twice)
_SERIAL = itertools.count()


def _env_on(name: str) -> bool:
    return os.environ.get(name, "1").lower() not in ("0", "false", "no", "off")


def compile_enabled() -> bool:
    return _env_on("BENCH_FAST_COMPILE")


def fuse_enabled() -> bool:
    return _env_on("BENCH_FAST_FUSE")


def tuning_enabled() -> bool:
    return _env_on("BENCH_FAST_TUNING")


def tune_inductor() -> None:
    """gpt-fast's inductor settings: coordinate-descent tuning of the generated Triton kernels' launch configs (the
    small norm/rope/argmax kernels of a batch-1 step gain from it; it costs compile time), descriptive kernel names
    (profiles), and the FX graph cache (a second compile of the same graph in a process or on the machine is
    cheaper). Global settings: they apply to whatever is compiled after them."""
    config = torch._inductor.config
    for obj, name in ((config, "coordinate_descent_tuning"), (config, "fx_graph_cache"),
                      (getattr(config, "triton", None), "unique_kernel_names")):
        if obj is not None and hasattr(obj, name):
            setattr(obj, name, True)


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
        self.serial = next(_SERIAL)  # names this cache's buffers in the warm-up bookkeeping
        self.pos = torch.zeros((), dtype=torch.long, device=device)  # slot of the first token of the next forward
        self.valid = torch.ones(batch, max_len, dtype=torch.bool, device=device)  # False at prompt padding
        self.pad = torch.zeros(batch, dtype=torch.long, device=device)  # pad tokens per row: position = slot - pad
        self.slot_ids = torch.arange(max_len, device=device)
        # The token at each slot, for decode steps: `decode_step` reads its input at slot pos and writes the next
        # token at pos + 1 on the device, so the host loop neither feeds nor collects tokens.
        self.tokens = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        # Fixed addresses: CUDA graphs read and write these buffers in place instead of copying them in.
        for t in (*self.k_cache, *self.v_cache, self.pos, self.valid, self.pad, self.slot_ids, self.tokens):
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
# The forwards. Both take tokens at slots pos..pos+S-1, a boolean mask (B, 1, S, max_len) of the slots each query
# may see, and return logits (B, S or 1, V).


class HFForward:
    """The model's own forward: any architecture `check_model` accepts. The mask goes in additive (0 / dtype min),
    the one form both its sdpa and eager attention take."""

    fused = False

    def __init__(self, model):
        self.model = model
        self.kwarg = cache_kwarg(model)  # looked up here: inspect has no place inside a compiled graph

    def __call__(self, cache, tokens, position_ids, allowed, last_only: bool):
        mask = torch.zeros(allowed.shape, dtype=cache.dtype, device=tokens.device)
        mask = mask.masked_fill(~allowed, torch.finfo(cache.dtype).min)
        out = self.model(input_ids=tokens, attention_mask=mask, position_ids=position_ids, use_cache=True,
                         logits_to_keep=1 if last_only else 0, **{self.kwarg: cache})
        return out.logits


FUSED_MODEL_TYPES = ("qwen3", "qwen2", "llama")  # decoder layers exactly as FusedForward computes them


def fuse_linears(*linears: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One (sum of out_features, in_features) weight (and bias) for Linears that read the same input, built once.
    The Linears' own weights then become row views of it: the model holds no extra memory, and every other user
    of the model computes with the very same values (the peak is one layer's q/k/v during the swap)."""
    with torch.no_grad():
        weight = torch.cat([lin.weight.detach() for lin in linears])
        has_bias = linears[0].bias is not None
        bias = torch.cat([lin.bias.detach() for lin in linears]) if has_bias else None
        row = 0
        for lin in linears:
            n = lin.out_features
            lin.weight = nn.Parameter(weight[row:row + n], requires_grad=lin.weight.requires_grad)
            if has_bias:
                lin.bias = nn.Parameter(bias[row:row + n], requires_grad=lin.bias.requires_grad)
            row += n
    return weight, bias


def still_fused(linears, weight: torch.Tensor) -> bool:
    """Whether the Linears' weights are still the row views fuse_linears made (not replaced by .to(), loading)."""
    row = 0
    for lin in linears:
        w = lin.weight
        if (w.device != weight.device or w.dtype != weight.dtype or w.untyped_storage().data_ptr()
                != weight.untyped_storage().data_ptr() or w.storage_offset() != weight.storage_offset()
                + row * weight.shape[1] or w.shape != (lin.out_features, weight.shape[1])):
            return False
        row += lin.out_features
    return True


def fusable(model) -> str | None:
    """Why FusedForward cannot run this model (None: it can)."""
    config = model.config.get_text_config()
    if getattr(config, "model_type", None) not in FUSED_MODEL_TYPES:
        return f"model type {getattr(config, 'model_type', None)!r}"
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None or not all(hasattr(base, a) for a in ("embed_tokens", "rotary_emb", "norm")):
        return "not a decoder of the Llama layout"
    if not isinstance(model.get_output_embeddings(), nn.Linear):
        return "output embeddings are not a Linear"
    for layer in layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        linears = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        linears += [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
        if any(type(lin) is not nn.Linear for lin in linears):  # exact type: quantized Linears are subclasses
            return "projections are not plain Linears"
        if len({lin.bias is None for lin in linears[:3]}) > 1 or len({lin.bias is None for lin in linears[4:6]}) > 1:
            return "mixed biases"
        if not (hasattr(layer, "input_layernorm") and hasattr(layer, "post_attention_layernorm")
                and hasattr(mlp, "act_fn") and hasattr(attn, "scaling") and hasattr(attn, "layer_idx")):
            return "unexpected layer layout"
        if getattr(attn, "sliding_window", None):
            return "sliding-window attention"
    if getattr(sys.modules.get(type(layers[0].self_attn).__module__), "apply_rotary_pos_emb", None) is None:
        return "no apply_rotary_pos_emb"
    return None


class FusedForward:
    """The decoder of Qwen3 / Qwen2 / Llama-layout models, gpt-fast style, over the model's own modules (embedding,
    rotary embedding, norms, q/k norms, o and down projections, lm_head) and its own apply_rotary_pos_emb, with
    q/k/v in one matmul and gate/up in another. Greedy tokens equal the model's own forward (the tests check it).

    Per layer: norm, qkv GEMV, q/k norm + RoPE, 2 cache writes, attention, o GEMV, residual + norm, gate_up GEMV,
    SiLU * up, down GEMV, residual: 5 GEMVs instead of 7, no repeat of the cache for grouped-query attention, no
    float mask. One instance per model (`for_model`): its fused tensors are static graph inputs, and a new instance
    would compile the model again."""

    fused = True

    def __init__(self, model):
        config = model.config.get_text_config()
        base = model.model
        self.embed_tokens, self.rotary_emb, self.norm = base.embed_tokens, base.rotary_emb, base.norm
        self.lm_head = model.get_output_embeddings()
        self.layers = list(base.layers[:config.num_hidden_layers])
        self.rope = sys.modules[type(self.layers[0].self_attn).__module__].apply_rotary_pos_emb
        self.qkv, self.qkv_bias, self.qkv_sizes, self.gate_up, self.gate_up_bias = [], [], [], [], []
        for layer in self.layers:
            attn, mlp = layer.self_attn, layer.mlp
            w, b = fuse_linears(attn.q_proj, attn.k_proj, attn.v_proj)
            self.qkv.append(w)
            self.qkv_bias.append(b)
            self.qkv_sizes.append((attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features))
            w, b = fuse_linears(mlp.gate_proj, mlp.up_proj)
            self.gate_up.append(w)
            self.gate_up_bias.append(b)
        for t in (*self.qkv, *self.gate_up, *[b for b in self.qkv_bias + self.gate_up_bias if b is not None]):
            torch._dynamo.mark_static_address(t)  # weights: CUDA graphs must read them in place, never copy them

    _instances: "weakref.WeakKeyDictionary[nn.Module, FusedForward]" = weakref.WeakKeyDictionary()

    @classmethod
    def for_model(cls, model) -> "FusedForward":
        """The model's FusedForward, reused while its Linears still view the fused tensors (so engines share its
        compiled graphs); rebuilt if the weights were replaced since. (It holds the model's submodules, never the
        model itself, so the cache entry goes with the model.)"""
        fwd = cls._instances.get(model)
        if fwd is None or not fwd._valid():
            fwd = cls._instances[model] = cls(model)
        return fwd

    def _valid(self) -> bool:
        return all(still_fused((l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj), qkv)
                   and still_fused((l.mlp.gate_proj, l.mlp.up_proj), gu)
                   for l, qkv, gu in zip(self.layers, self.qkv, self.gate_up))

    def __call__(self, cache, tokens, position_ids, allowed, last_only: bool):
        x = self.embed_tokens(tokens)
        cos_sin = self.rotary_emb(x, position_ids)
        B, S = tokens.shape
        for i, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            h = layer.input_layernorm(x)
            q, k, v = F.linear(h, self.qkv[i], self.qkv_bias[i]).split(self.qkv_sizes[i], dim=-1)
            d = attn.head_dim
            q, k, v = q.view(B, S, -1, d), k.view(B, S, -1, d), v.view(B, S, -1, d)
            if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over each head
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = self.rope(q.transpose(1, 2), k.transpose(1, 2), *cos_sin)
            k, v = cache.update(k, v.transpose(1, 2), attn.layer_idx)
            o = attend(q, k, v, allowed, attn.scaling)  # (B, S, heads * head_dim)
            x = x + attn.o_proj(o)
            h = layer.post_attention_layernorm(x)
            gate, up = F.linear(h, self.gate_up[i], self.gate_up_bias[i]).chunk(2, dim=-1)
            x = x + mlp.down_proj(mlp.act_fn(gate) * up)
        x = self.norm(x)
        return self.lm_head(x[:, -1:] if last_only else x)


def attend(q, k, v, allowed, scale: float) -> torch.Tensor:
    """Attention of q (B, H, S, D) over the whole static cache k, v (B, KV, L, D) where `allowed` (B, 1, S, L).

    Grouped-query heads are packed as query rows of their key/value head, (B, KV, G*S, D), so the cache is read
    once per key/value head instead of being repeated G times (what transformers' repeat_kv does under compile).
    Returns (B, S, H*D)."""
    B, H, S, D = q.shape
    KV, L = k.shape[1], k.shape[2]
    G = H // KV
    if G > 1:
        q = q.reshape(B, KV, G * S, D)  # head h = kv * G + g (repeat_kv's order): rows (g, s) of head kv
        if S > 1:
            allowed = allowed[:, :, None].expand(B, 1, G, S, L).reshape(B, 1, G * S, L)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)
    return out.reshape(B, H, S, D).transpose(1, 2).reshape(B, S, H * D)


def make_forward(model, fuse: bool):
    if fuse and fusable(model) is None:
        return FusedForward.for_model(model)
    return HFForward(model)


# ----------------------------------------------------------------------------------------------------------------
# The model calls. `decode_step` and `verify` are what gets compiled; they read `cache.pos` on the device.


def forward(fwd, cache: StaticKVCache, tokens: torch.Tensor, position_ids=None, last_only: bool = False):
    """Run tokens (B, S) at slots pos..pos+S-1; return float32 logits (B, S or 1, V) and the slots they predict from."""
    S = tokens.shape[1]
    slots = cache.pos + torch.arange(S, device=tokens.device)
    if position_ids is None:
        position_ids = slots[None, :] - cache.pad[:, None]
    # Attend to real prompt tokens and to slots up to the query's own; later slots are stale or empty. A query
    # always sees its own slot, so no row is all-masked (a pad query of the prompt would otherwise give NaNs that
    # its masked keys/values carry into real rows: 0 * NaN).
    query = slots[None, :, None]
    allowed = (cache.valid[:, None, :] & (cache.slot_ids[None, None, :] <= query)) | (cache.slot_ids == query)
    logits = fwd(cache, tokens, position_ids, allowed[:, None], last_only)
    return logits.float(), (slots[-1:] if last_only else slots)


def decode_step(fwd, cache: StaticKVCache, rules: Rules, want_probs: bool):
    """One new token per row, all on the device: the token at slot pos (cache.tokens) runs at slot pos, its
    successor is written at slot pos + 1, and pos advances. Returns the distribution the token was drawn from
    (B, V) when want_probs (speculative sampling's drafts need it), else nothing: a greedy step has no outputs to
    copy out of the CUDA graph."""
    token = cache.tokens.index_select(1, cache.pos.view(1))  # (B, 1)
    logits, slots = forward(fwd, cache, token)
    nxt, probs = next_token(logits, slots, rules)
    nxt_slot = (cache.pos + 1).clamp(max=cache.max_len - 1).view(1)  # the clamp only guards the warm-up
    cache.tokens.index_copy_(1, nxt_slot, nxt[:, None])
    cache.pos.add_(1)
    return probs if want_probs else None


def verify(fwd, cache: StaticKVCache, tokens: torch.Tensor, draft_probs, n_real: torch.Tensor, rules: Rules,
           accept_fn: AcceptFn):
    """One target forward over [current token, k drafts] (1, k+1) at slots pos..pos+k; returns (n accepted, next).

    draft_probs (1, k, V) are the draft model's distributions; None means deterministic drafts (greedy draft model,
    prompt lookup), i.e. one-hot distributions."""
    logits, slots = forward(fwd, cache, tokens)
    p = next_token_probs(logits, slots, rules)
    drafts = tokens[:, 1:]
    if draft_probs is None:
        draft_probs = torch.zeros_like(p[:, 1:]).scatter_(-1, drafts[..., None], 1.0)
    return accept_fn(drafts, draft_probs, p, n_real)


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
    """FastEngine(models, accept_fn=rejection_accept, fuse=None).generate(request, probe) -> Generation.

    Attributes: `compile_seconds` (compile + CUDA-graph capture so far; 0.0 on the CPU, where nothing is compiled),
    `compile` (whether steps run compiled), `accept_fn` (the speculative acceptance rule, see fast_sampling), `fuse`
    (whether models of a supported layout run `FusedForward`; default: BENCH_FAST_FUSE, on)."""

    name = "fast"

    def __init__(self, models, accept_fn: AcceptFn = rejection_accept, fuse: bool | None = None):
        self.models = models
        self.accept_fn = accept_fn  # the speculative acceptance rule; swappable for tests and variants
        self.fuse = fuse_enabled() if fuse is None else fuse
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
            if tuning_enabled():
                tune_inductor()
        self._caches: dict[tuple, StaticKVCache] = {}
        self._forwards: dict[int, object] = {}
        self._warm: set[tuple] = set()
        self._rules_buffers: Rules | None = None  # one set of rule tensors, refilled per request (see _rules)
        # Drafts really offered in a verify round: a device scalar, so a cropped last round needs no new graph.
        self._n_real = torch.zeros((), dtype=torch.long, device=models.device)
        torch._dynamo.mark_static_address(self._n_real)

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
        drafted, accepted, rounds = stats
        generation = Generation(sequences, m.eos_token_ids, drafted, accepted, rounds, self.name, self.notes)
        if request.min_new_tokens < request.max_new_tokens and sequences.shape[1]:
            # EOS may end the run: like generate, the output is as long as the longest row (steps after the last
            # row's EOS were only run because EOS is checked every few steps). With a fixed length nothing is
            # counted here, so the call ends without reading the device.
            generation.sequences = sequences[:, :max(generation.new_tokens)]
        return generation

    # -- methods ---------------------------------------------------------------------------------------------

    def _decode(self, req: Request, probe: Probe) -> torch.Tensor:
        """Standard, nucleus and batched: prefill, then one compiled step per token. The steps keep their tokens
        in cache.tokens (slot L + i holds new token i), so the loop only replays the step."""
        m = self.models
        B, L = req.input_ids.shape
        rules = self._rules(req, L)
        fwd = self._forward(m.target)
        cache = self._cache("target", m.target, B, L + req.max_new_tokens + 1)
        step = self._fn(decode_step)
        cache.begin_request(req.attention_mask)
        self._warm_up(("step", id(fwd), cache.serial, rules.signature, False), step, fwd, cache, rules, False)
        eos = torch.tensor(list(m.eos_token_ids), device=m.device)

        torch.manual_seed(req.seed)
        token = self._prefill(fwd, cache, req, rules)
        cache.tokens[:, L] = token
        cache.pos.fill_(L)  # the slot of the token the first step feeds; each step advances it
        self._first_token(probe)
        may_stop = req.min_new_tokens < req.max_new_tokens
        n = 1
        while n < req.max_new_tokens:
            if n % CHECK_EVERY == 0:
                if probe.should_stop():
                    break
                if may_stop and n > req.min_new_tokens and \
                        torch.isin(cache.tokens[:, L:L + n], eos).any(dim=1).all().item():
                    break
            self._run(step, fwd, cache, rules, False)
            n += 1
        return cache.tokens[:, L:L + n].clone()

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
        fwd = self._forward(m.target)
        draft_fwd = None if lookup else self._forward(m.draft)
        cache = self._cache("target", m.target, 1, need)
        draft_cache = None if lookup else self._cache("draft", m.draft, 1, need)
        cache.begin_request(req.attention_mask)
        if draft_cache is not None:
            draft_cache.begin_request(req.attention_mask)
        self._warm_up_speculative(fwd, cache, draft_fwd, draft_cache, k, rules, q_is_none=lookup or not req.do_sample)
        if lookup:  # the n-gram search runs on the host, over the prompt's real tokens and what is generated
            history = [t for t, keep in zip(req.input_ids[0].tolist(), req.attention_mask[0].tolist()) if keep]

        torch.manual_seed(req.seed)
        token = self._prefill(fwd, cache, req, rules)
        if draft_cache is not None:
            self._prefill(draft_fwd, draft_cache, req, rules)
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
                nxt = self._step_from(fwd, cache, token, pos, rules)
                produced = [int(nxt.item())]
                rounds += 1  # a target forward too, as transformers counts it: tokens per forward stay comparable
            else:
                if lookup:
                    drafts = torch.tensor([candidates + [m.pad_token_id] * (k - offer)], device=m.device)
                    q = None
                else:
                    drafts, q = self._draft(draft_fwd, draft_cache, token, pos, k, rules)
                produced, nxt = self._verify_round(fwd, cache, draft_fwd, draft_cache, token, drafts, q, offer, pos,
                                                   rules)
                drafted, accepted, rounds = drafted + offer, accepted + len(produced) - 1, rounds + 1
            if may_stop:
                produced = cut_at_eos(produced, eos_ids, req.min_new_tokens - len(new))
            new += produced
            token = nxt.view(1, 1)
        sequences = torch.tensor([new[:req.max_new_tokens]], dtype=torch.long, device=m.device)
        return sequences, (drafted, accepted, rounds)

    def _step_from(self, fwd, cache, token, pos: int, rules: Rules, want_probs: bool = False):
        """Place `token` (1, 1) at slot `pos` and run one decode step; returns (the next token (1, 1), and its
        distribution when want_probs)."""
        cache.tokens[:, pos:pos + 1] = token
        cache.pos.fill_(pos)
        probs = self._run(self._fn(decode_step), fwd, cache, rules, want_probs)
        nxt = cache.tokens[:, pos + 1:pos + 2].clone()
        return (nxt, probs) if want_probs else nxt

    def _draft(self, draft_fwd, draft_cache, token, pos, k, rules):
        """k draft tokens from the draft model's compiled decode step, starting from `token` at slot `pos`;
        with their distributions q (1, k, V) when sampling (None when greedy: one-hot)."""
        draft_cache.tokens[:, pos:pos + 1] = token
        draft_cache.pos.fill_(pos)
        step = self._fn(decode_step)
        probs = [self._run(step, draft_fwd, draft_cache, rules, rules.do_sample) for _ in range(k)]
        q = torch.stack(probs, dim=1) if rules.do_sample else None
        return draft_cache.tokens[:, pos + 1:pos + 1 + k].clone(), q

    def _verify_round(self, fwd, cache, draft_fwd, draft_cache, token, drafts, q, offer, pos, rules):
        """Verify [token, drafts] (the first `offer` drafts are real) in one target forward from slot `pos`.
        Returns the round's new tokens (accepted drafts, then the target's own) and that last token on the device.

        Rejected drafts are rolled back by not advancing past them: the next round starts at the slot after the
        last accepted token, so their keys/values are masked (later slots) and then overwritten."""
        k = drafts.shape[1]
        cache.pos.fill_(pos)
        self._n_real.fill_(offer)
        n_acc, nxt = self._run(self._fn(verify), fwd, cache, torch.cat([token, drafts], dim=1), q,
                               self._n_real, rules, self.accept_fn)
        n_acc, nxt_id, *draft_ids = torch.cat([n_acc, nxt, drafts[0]]).tolist()  # the round's one host sync
        if draft_cache is not None and n_acc == k:
            # Every draft was accepted, but the draft model never saw its own last draft (already at slot pos + k
            # of its token buffer): feed it now.
            draft_cache.pos.fill_(pos + k)
            self._run(self._fn(decode_step), draft_fwd, draft_cache, rules, False)
        return draft_ids[:n_acc] + [nxt_id], nxt

    def _warm_up_speculative(self, fwd, cache, draft_fwd, draft_cache, k: int, rules: Rules, q_is_none: bool) -> None:
        m = self.models
        if not self.compile:
            return
        zeros = torch.zeros(1, k + 1, dtype=torch.long, device=m.device)
        q = None if q_is_none else torch.zeros(1, k, vocab_size(m.target), device=m.device)
        step = self._fn(decode_step)
        self._warm_up(("step", id(fwd), cache.serial, rules.signature, False), step, fwd, cache, rules, False)
        self._warm_up(("verify", id(fwd), cache.serial, k, rules.signature, q_is_none, self.accept_fn),
                      self._fn(verify), fwd, cache, zeros, q, self._n_real, rules, self.accept_fn)
        if draft_cache is not None:
            for want in {False, rules.do_sample}:  # the drafts' steps return their distributions when sampling
                self._warm_up(("step", id(draft_fwd), draft_cache.serial, rules.signature, want), step, draft_fwd,
                              draft_cache, rules, want)

    # -- pieces ----------------------------------------------------------------------------------------------

    def _prefill(self, fwd, cache: StaticKVCache, req: Request, rules: Rules) -> torch.Tensor:
        """The prompt in one eager forward at slot 0 (its shape changes per request, so it is not compiled);
        returns the first new token (B,)."""
        cache.pos.fill_(0)  # the warm-up steps moved it
        logits, slots = forward(fwd, cache, req.input_ids, prefill_positions(req.attention_mask), last_only=True)
        return next_token(logits, slots, rules)[0]

    def _first_token(self, probe: Probe) -> None:
        if self.models.device.type == "cuda":
            torch.cuda.synchronize(self.models.device)  # the one sync: the first token really exists now
        probe.first_token()

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

    def _forward(self, model):
        """The forward a model runs (FusedForward where its layout allows, else its own), one per engine and model."""
        fwd = self._forwards.get(id(model))
        if fwd is None or (fwd.fused and not fwd._valid()):
            fwd = self._forwards[id(model)] = make_forward(model, self.fuse)
        return fwd

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
        if isinstance(out, torch.Tensor):
            return out.clone()
        if isinstance(out, tuple):
            return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in out)
        return out

    def _warm_up(self, key: tuple, fn, *args) -> None:
        """Compile and capture a graph before the request's prefill, timed into compile_seconds. The scratch calls
        run from slot 0 (begin_request came first; decode steps advance pos, the prefill resets it), so they write
        only slots that the prefill and the steps overwrite before anything reads them."""
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

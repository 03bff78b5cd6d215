"""The forwards of the `fast` engine: the model's own (`HFForward`) or our fused decoder loop over its modules
(`FusedForward`), q/k/v and gate/up fused as views; and which models they can run.
See docs/fast_engine.md ("Fewer, larger kernels per layer")."""
from __future__ import annotations

import inspect
import sys
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from decoding.types import UnsupportedSetting

FUSED_MODEL_TYPES = ("qwen3", "qwen2", "llama")  # decoder layers exactly as FusedForward computes them


def cache_kwarg(model) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); pass whichever this version takes."""
    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


# Both forwards take tokens (B, S) at slots pos..pos+S-1, position ids (B, S) and a boolean mask (B, 1, S, max_len)
# of the slots each query may see, and return logits (B, S or 1, V).


class HFForward:
    """The model's own forward: any architecture `check_model` accepts. The mask goes in additive (0 / dtype min),
    the one form both its sdpa and eager attention take."""

    fused = False

    def __init__(self, model):
        self.model = model
        self.kwarg = cache_kwarg(model)  # looked up here: inspect has no place inside a compiled graph

    def __call__(self, cache, tokens, position_ids, allowed, last_only: bool):
        mask = torch.zeros(allowed.shape, dtype=cache.dtype, device=tokens.device)  # (B, 1, S, max_len)
        mask = mask.masked_fill(~allowed, torch.finfo(cache.dtype).min)
        out = self.model(input_ids=tokens, attention_mask=mask, position_ids=position_ids, use_cache=True,
                         logits_to_keep=1 if last_only else 0, **{self.kwarg: cache})
        return out.logits  # (B, S or 1, V)


def fuse_linears(*linears: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One (sum of out_features, in_features) weight (and bias) for Linears that read the same input, built once.
    The Linears' own weights then become row views of it: the model holds no extra memory, and every other user
    of the model computes with the very same values (the peak is one layer's q/k/v during the swap)."""
    with torch.no_grad():
        weight = torch.cat([lin.weight.detach() for lin in linears])  # (sum out, in)
        has_bias = linears[0].bias is not None
        bias = torch.cat([lin.bias.detach() for lin in linears]) if has_bias else None  # (sum out,)
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
    attention = getattr(config, "_attn_implementation", None) or "eager"
    if attention != "sdpa":  # FusedForward attends with SDPA: a row labelled otherwise must run the model's own
        return f"attention {attention!r}; the fused forward attends with SDPA only"
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
        x = self.embed_tokens(tokens)  # (B, S, hidden)
        cos_sin = self.rotary_emb(x, position_ids)
        B, S = tokens.shape
        for i, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            h = layer.input_layernorm(x)
            q, k, v = F.linear(h, self.qkv[i], self.qkv_bias[i]).split(self.qkv_sizes[i], dim=-1)
            d = attn.head_dim
            q, k, v = q.view(B, S, -1, d), k.view(B, S, -1, d), v.view(B, S, -1, d)  # (B, S, heads, D)
            if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over each head
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = self.rope(q.transpose(1, 2), k.transpose(1, 2), *cos_sin)  # (B, heads, S, D)
            k, v = cache.update(k, v.transpose(1, 2), attn.layer_idx)  # (B, KV, max_len, D): the whole cache
            o = attend(q, k, v, allowed, attn.scaling)  # (B, S, heads * D)
            x = x + attn.o_proj(o)
            h = layer.post_attention_layernorm(x)
            gate, up = F.linear(h, self.gate_up[i], self.gate_up_bias[i]).chunk(2, dim=-1)  # (B, S, inter) each
            x = x + mlp.down_proj(mlp.act_fn(gate) * up)
        x = self.norm(x)
        return self.lm_head(x[:, -1:] if last_only else x)  # (B, S or 1, V)


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
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)  # (B, KV, G*S, D)
    return out.reshape(B, H, S, D).transpose(1, 2).reshape(B, S, H * D)


Forward = HFForward | FusedForward


def make_forward(model, fuse: bool) -> Forward:
    if fuse and fusable(model) is None:
        return FusedForward.for_model(model)
    return HFForward(model)


def check_model(model) -> None:
    """Refuse models whose attention the forwards cannot drive with a 4-D mask over a static cache."""
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

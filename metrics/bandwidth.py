"""Model bandwidth utilization (MBU): the bytes a decode step must read (weights, and the KV cache so far)
per time per output token, as a fraction of the device's measured copy bandwidth. It says how far a
method is from the memory-bandwidth limit of batch-small decoding, on any GPU. Empty on the CPU."""
from __future__ import annotations

import time


def copy_bandwidth(device, gib: float = 1.0, reps: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s, reads and writes both counted."""
    import torch

    from metrics.timing import synchronize

    n = int(gib * 2**30)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    synchronize(device)
    seconds = time.perf_counter() - start
    del src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 2 * n * reps / seconds


def weight_bytes(model) -> int:
    """Bytes of the parameters as stored (quantized ones packed), plus what a quantized matmul reads besides them:
    bitsandbytes 4-bit keeps its block scales in each weight's `quant_state` (absmax, and with nested quantization
    its own scales and code; about 12% of the NF4 bytes), 8-bit its row scales (`SCB`). parameters() yields a tied
    embedding / lm_head matrix once, which is what a decode step reads once."""
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size()
        total += sum(t.numel() * t.element_size() for t in quant_tensors(p))
    return total


def quant_tensors(param) -> list:
    """The tensors a quantized weight is read with, besides its packed data."""
    out = []
    state = getattr(param, "quant_state", None)
    while state is not None:
        out += [t for t in (getattr(state, "absmax", None), getattr(state, "code", None),
                            getattr(state, "offset", None)) if hasattr(t, "element_size")]
        state = getattr(state, "state2", None)  # nested quantization: the scales' own scales
    scb = getattr(param, "SCB", None)
    if hasattr(scb, "element_size"):
        out.append(scb)
    return out


def kv_bytes_per_token(model) -> int:
    """KV-cache bytes one token of context occupies: keys and values of every layer."""
    cfg = model.config.get_text_config()
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * heads * head_dim * model.dtype.itemsize  # the cache is in compute dtype


HOST_BOUND, BANDWIDTH_BOUND = 0.10, 0.30  # MBU below: per-token host overhead dominates; above: weight reads do


def regime(mbu: float) -> str:
    """Which cost a row's decode steps are paying, from its MBU: on the recorded H100, eager `generate` reads the
    4B weights at 3-8% of copy bandwidth (each step waits on Python and kernel launches), the fast engine at 56%."""
    if mbu != mbu:
        return ""
    return "host-bound" if mbu < HOST_BOUND else "bandwidth-bound" if mbu >= BANDWIDTH_BOUND else "mixed"


class Bandwidth:
    columns = ("copy_bandwidth_gbs", "mbu", "regime")
    help = {
        **dict.fromkeys(("copy_bandwidth_gbs", "mbu"),
                        "device-to-device copy bandwidth measured once per run (GB/s, reads and writes counted); "
                        "bytes read per output token (every forward run: weights with their quantization scales, the "
                        "KV cache, a static one at its full length) / TPOT / that bandwidth (empty on the CPU)"),
        "regime": "what the decode steps wait on, from `mbu`: `host-bound` (below 0.10: Python and kernel launches, "
                  "where a draft model cannot help), `mixed`, `bandwidth-bound` (0.30 and up: weight reads); empty "
                  "on the CPU",
    }

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        """Bytes per output token: every forward really run reads its model's weights once and its KV cache; a
        dynamic cache (hf) at the mean context, a static one (fast, hf_compiled: `Generation.reads`) at its whole
        allocated length, which attention reads whatever the context. A drafting row counts every target forward and
        every draft forward the engine really ran (the fast engine runs k draft steps per round however many drafts
        are offered), spread over the tokens produced."""
        empty = {"copy_bandwidth_gbs": float("nan"), "mbu": float("nan"), "regime": ""}
        bandwidth = getattr(ctx, "copy_bandwidth", float("nan")) if ctx is not None else float("nan")
        if bandwidth != bandwidth or row is None or row.get("tpot_ms_median") != row.get("tpot_ms_median"):
            return empty
        from decoding import METHODS

        models = ctx.models
        batch = row["batch_size"] * row.get("num_return_sequences", 1)
        mean_context = row["prompt_tokens"] + row["new_tokens"] / 2
        reads = [getattr(c.generation, "reads", None) or {} for c in calls]

        def context(key):  # slots attended per sequence per forward
            slots = [r.get(key) for r in reads if r.get(key)]
            return sum(slots) / len(slots) if slots else mean_context

        target = weight_bytes(models.target) + kv_bytes_per_token(models.target) * context("target_slots") * batch
        per_step = target
        produced = sum(sum(c.generation.new_tokens) for c in calls)
        method = METHODS.get(row.get("method"))
        if method is not None and method.drafts and produced:
            uses_draft = models.draft is not None and method.needs_draft  # prompt lookup drafts free
            draft = (weight_bytes(models.draft) + kv_bytes_per_token(models.draft) * context("draft_slots")
                     if uses_draft else 0)
            target_forwards = sum(r.get("target_forwards", c.generation.drafts.target_forwards)
                                  for r, c in zip(reads, calls))
            draft_forwards = sum(r.get("draft_forwards", c.generation.drafts.drafted_all)
                                 for r, c in zip(reads, calls))
            per_step = (target_forwards * target + draft_forwards * draft) / produced
        mbu = per_step / (row["tpot_ms_median"] / 1000) / bandwidth
        return {"copy_bandwidth_gbs": bandwidth / 1e9, "mbu": mbu, "regime": regime(mbu)}

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
    """Bytes of the parameters as stored (quantized ones packed). parameters() yields a tied embedding /
    lm_head matrix once, which is what a decode step reads once."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def kv_bytes_per_token(model) -> int:
    """KV-cache bytes one token of context occupies: keys and values of every layer."""
    cfg = model.config.get_text_config()
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * heads * head_dim * model.dtype.itemsize  # the cache is in compute dtype


class Bandwidth:
    columns = ("copy_bandwidth_gbs", "mbu")
    help = dict.fromkeys(columns, "device-to-device copy bandwidth measured once per run (GB/s, reads and writes "
                                  "counted); bytes a decode step reads / TPOT / that bandwidth (empty on the CPU)")

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        """Bytes per decode step: the target's weights once per step, plus the KV cache of every sequence of
        the batch at its mean context; a drafting row adds the draft's weights per drafted token and counts
        target weights once per verify round, spread over the tokens it produced."""
        empty = {"copy_bandwidth_gbs": float("nan"), "mbu": float("nan")}
        bandwidth = getattr(ctx, "copy_bandwidth", float("nan")) if ctx is not None else float("nan")
        if bandwidth != bandwidth or row is None or row.get("tpot_ms_median") != row.get("tpot_ms_median"):
            return empty
        models = ctx.models
        target, batch = weight_bytes(models.target), row["batch_size"] * row.get("num_return_sequences", 1)
        context = row["prompt_tokens"] + row["new_tokens"] / 2
        kv = kv_bytes_per_token(models.target) * context * batch
        per_step = target + kv
        # Work done, not acceptance bookkeeping: every target forward and every drafted token count here.
        rounds = sum(c.generation.drafts.target_forwards for c in calls)
        drafted = sum(c.generation.drafts.drafted_all for c in calls)
        produced = sum(sum(c.generation.new_tokens) for c in calls)
        if rounds and produced:
            from decoding import METHODS

            uses_draft = models.draft is not None and METHODS[row["method"]].needs_draft  # prompt lookup drafts free
            draft = weight_bytes(models.draft) if uses_draft else 0
            per_step = (rounds * target + drafted * draft) / produced + kv
        return {"copy_bandwidth_gbs": bandwidth / 1e9, "mbu": per_step / (row["tpot_ms_median"] / 1000) / bandwidth}

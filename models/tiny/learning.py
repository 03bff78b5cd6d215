"""What the tiny pair's training is made of: a Qwen3 of a given shape, the learning-rate schedule, the optimizer, the two
losses (next token of the text, KL divergence to the target) and the held-out figures (loss, argmax agreement).
"""
from __future__ import annotations

import math


def make_model(shape: dict, tokenizer, seed: int):
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-6,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa", **shape)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id, do_sample=False)
    return model


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine down to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def optimizer(model, lr: float, weight_decay: float):
    import torch

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW([dict(params=decay, weight_decay=weight_decay), dict(params=rest, weight_decay=0.0)],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def kd_loss(draft_logits, target_logits):
    """KL(target || draft) per position, averaged: the draft learns the target's whole distribution."""
    import torch.nn.functional as F

    t = F.log_softmax(target_logits.float(), dim=-1)
    d = F.log_softmax(draft_logits.float(), dim=-1)
    return F.kl_div(d.flatten(0, 1), t.flatten(0, 1), log_target=True, reduction="batchmean")


def ce_loss(logits, labels):
    import torch.nn.functional as F

    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten().long())


def heldout_loss(model, windows, batch: int = 8) -> float:
    """Mean next-token cross-entropy (nats) over every position of the windows."""
    import torch

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(windows), batch):
            w = windows[i:i + batch]
            logits = model(input_ids=w[:, :-1]).logits
            total += float(ce_loss(logits, w[:, 1:])) * w[:, 1:].numel()
            count += w[:, 1:].numel()
    model.train(was_training)
    return total / count


def agreement(target, draft, windows, batch: int = 8) -> float:
    """Share of held-out positions where the draft's argmax equals the target's (teacher-forced)."""
    import torch

    same, count = 0, 0
    with torch.inference_mode():
        for i in range(0, len(windows), batch):
            x = windows[i:i + batch, :-1]
            same += int((target(input_ids=x).logits.argmax(-1) == draft(input_ids=x).logits.argmax(-1)).sum())
            count += x.numel()
    return same / count

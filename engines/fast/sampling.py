"""How the `fast` engine turns logits into tokens: the request's logits rules, sampling and the speculative
acceptance rule, as plain tensor code that traces into the compiled steps (no host sync).
See docs/fast_engine.md ("Sampling")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Rules:
    """One request's logits rules. Python fields pick the compiled graph; tensor fields are read on the device.

    The slot of a query is where its token sits in the static cache; the token it predicts is new token number
    `slot - prompt_len + 1` (0-based), so "fewer than min_new_tokens exist" is simply `slot < eos_from_slot`.
    """

    do_sample: bool
    top_k: int  # 0 disables top-k
    use_top_p: bool  # top_p < 1
    temperature: torch.Tensor  # 0-dim float32
    top_p_cut: torch.Tensor  # 0-dim float32: 1 - top_p (a tensor, so a new value needs no recompile)
    eos_mask: torch.Tensor  # (V,) bool: True at the EOS ids
    eos_from_slot: torch.Tensor  # 0-dim long: queries at lower slots may not emit EOS

    @property
    def signature(self) -> tuple:
        """What a compiled graph specializes on."""
        return (self.do_sample, self.top_k, self.use_top_p)


def make_rules(*, do_sample: bool, temperature: float, top_p: float, top_k: int, eos_token_ids, vocab_size: int,
               prompt_len: int, min_new_tokens: int, device) -> Rules:
    eos_mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    eos_mask[[e for e in eos_token_ids if 0 <= e < vocab_size]] = True
    return Rules(
        do_sample=do_sample,
        top_k=int(top_k) if do_sample and top_k and top_k > 0 else 0,
        use_top_p=bool(do_sample and top_p < 1.0),
        temperature=torch.tensor(float(temperature) if do_sample else 1.0, dtype=torch.float32, device=device),
        # transformers removes tokens whose cumulative probability (ascending) is <= 1 - top_p, in float32.
        top_p_cut=torch.tensor(1.0 - float(top_p), dtype=torch.float32, device=device),
        eos_mask=eos_mask,
        eos_from_slot=torch.tensor(prompt_len - 1 + min_new_tokens, dtype=torch.long, device=device),
    )


def mask_eos(logits: torch.Tensor, slots: torch.Tensor, rules: Rules) -> torch.Tensor:
    """transformers' MinNewTokensLengthLogitsProcessor: EOS logits are -inf until min_new_tokens tokens exist.

    logits (B, S, V) float32, slots (S,) the cache slot of each query."""
    blocked = (slots < rules.eos_from_slot)[None, :, None] & rules.eos_mask  # (1, S, V)
    return logits.masked_fill(blocked, float("-inf"))


def warp(logits: torch.Tensor, rules: Rules) -> torch.Tensor:
    """Temperature, then top-k, then top-p: transformers' order and tie rules, on (..., V) float32 logits."""
    logits = logits / rules.temperature
    if rules.top_k:
        kth = torch.topk(logits, min(rules.top_k, logits.shape[-1]), dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if rules.use_top_p:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= rules.top_p_cut
        drop_sorted[..., -1] = False  # always keep the most likely token
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token_probs(logits: torch.Tensor, slots: torch.Tensor, rules: Rules) -> torch.Tensor:
    """The distribution each query's next token is drawn from: (B, S, V) float32.

    Greedy is the one-hot distribution of the argmax, so greedy speculative decoding is the same rejection rule
    applied to one-hot distributions (it then accepts exactly the drafts that equal the target's argmax)."""
    logits = mask_eos(logits, slots, rules)
    if not rules.do_sample:
        return one_hot(logits.argmax(dim=-1), logits.shape[-1])
    return torch.softmax(warp(logits, rules), dim=-1)


def next_token(logits: torch.Tensor, slots: torch.Tensor, rules: Rules) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The next token of each row from the last query's logits (B, S, V): (token (B,), the distribution it was drawn
    from (B, V), or None when greedy).

    Greedy takes the argmax of the (EOS-masked) logits directly: no one-hot or softmax over the vocabulary, which
    at batch 1 are whole extra kernels per step for nothing (151,936 entries for Qwen3)."""
    logits = mask_eos(logits[:, -1:], slots[-1:], rules)[:, -1]  # (B, V)
    if not rules.do_sample:
        return logits.argmax(dim=-1), None
    probs = torch.softmax(warp(logits, rules), dim=-1)
    return sample(probs), probs


def natural_eos(logits: torch.Tensor, rules: Rules) -> torch.Tensor:
    """Whether each query's own choice, had EOS not been masked for min_new_tokens, is EOS: the argmax of its raw
    logits (temperature, top-k and top-p keep the argmax) is an EOS id. (..., V) -> (...,) bool. A forced run's
    acceptance is counted before the first such token (metrics/drafts.py)."""
    return rules.eos_mask[logits.argmax(dim=-1)]


def one_hot(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    return torch.zeros(*tokens.shape, vocab_size, device=tokens.device).scatter_(-1, tokens[..., None], 1.0)


def sample(probs: torch.Tensor) -> torch.Tensor:
    """One draw per row from (possibly unnormalized) non-negative weights, no host sync: argmax(w / E), E ~ Exp(1)
    picks index i with probability w_i / sum(w). An exactly one-hot row returns its index."""
    noise = torch.empty_like(probs).exponential_(1)
    return torch.argmax(probs / noise, dim=-1)


AcceptFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def rejection_accept(drafts: torch.Tensor, q: torch.Tensor, p: torch.Tensor,
                     n_real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling (Leviathan et al. 2023, Chen et al. 2023), batched, no host sync.

    drafts (B, k): proposed tokens; q (B, k, V): the draft distributions they were drawn from; p (B, k+1, V): the
    target distributions at the same positions plus one; n_real: how many drafts were really offered (the rest is
    padding of a fixed-shape verify). Both q and p are after temperature/top-k/top-p, so the output follows p exactly.

    Draft i is accepted with probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection the next token is drawn
    from norm(max(0, p_i - q_i)); if every offered draft was accepted it is drawn from p at the next position.
    Returns (n accepted (B,), next token (B,)).
    """
    B, k = drafts.shape
    p_x = p[:, :k].gather(-1, drafts[..., None])[..., 0]  # (B, k)
    q_x = q.gather(-1, drafts[..., None])[..., 0]  # (B, k)
    u = torch.rand_like(p_x)  # in [0, 1): P(u * q < p) = min(1, p / q), and never accepts where p == 0
    offered = torch.arange(k, device=drafts.device) < n_real
    accepted = (u * q_x < p_x) & offered
    n = accepted.long().cumprod(dim=-1).sum(dim=-1)  # (B,): length of the accepted prefix
    rows = torch.arange(B, device=drafts.device)
    p_n = p[rows, n]  # (B, V)
    q_n = torch.cat([q, torch.zeros_like(q[:, :1])], dim=1)[rows, n]  # (B, V); q past the last draft is 0
    rejected = (n < n_real)[:, None]  # a rejection, not the end of the offered drafts
    residual = torch.where(rejected, (p_n - q_n).clamp(min=0), p_n)
    # p == q at a rejected position cannot happen in exact arithmetic; guard against rounding leaving nothing.
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_n)
    return n, sample(residual)


def greedy_accept(drafts: torch.Tensor, target: torch.Tensor,
                  n_real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy verification: the longest prefix of the offered drafts that equals the target's own choices, then the
    target's choice after it. What `rejection_accept` gives on one-hot distributions, without building them: at
    batch 1 those are 2k + 1 rows of the vocabulary (151,936 floats each for Qwen3) for a comparison of k ids.

    drafts (B, k); target (B, k+1) the target's token at each position; n_real () drafts really offered.
    Returns (n accepted (B,), next token (B,))."""
    k = drafts.shape[1]
    offered = torch.arange(k, device=drafts.device) < n_real  # (k,)
    n = ((drafts == target[:, :k]) & offered).long().cumprod(dim=-1).sum(dim=-1)  # (B,)
    return n, target.gather(1, n[:, None])[:, 0]

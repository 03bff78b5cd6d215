"""Synthetic prompts whose lengths are exact in the run's tokenizer: the `random` and `shared_prefix` workloads.

A prompt is a seeded draw of whole-word tokens (a leading space, letters only, and each one a token of its own),
so its text tokenizes back to the very ids drawn: over the completions API a server sees the same tokens as the
in-process engines. Each prompt is checked on that round trip, and its length recorded with the request.

- random: lengths fixed at input_tokens, or uniform within ±spread, or normal with sd spread × input_tokens
  (clipped to ±3 sd), as vLLM's random dataset, but exact here;
- shared_prefix: prefix_groups groups, each of prefix_questions prompts sharing a prefix of prefix_tokens, with a
  suffix of input_tokens of their own (SGLang's generated-shared-prefix); the questions of the groups are sent
  interleaved in a seeded order, as traffic of several users would be.
"""
from __future__ import annotations

import random

NORMAL_CLIP = 3.0
ROUND_TRIP_TRIES = 20


def word_pool(tok) -> list[int]:
    """Token ids that are whole words with a leading space and tokenize back to themselves alone."""
    out = []
    for i in range(len(tok)):
        s = tok.decode([i])
        if len(s) > 2 and s[0] == " " and s[1:].isalpha() and tok(s, add_special_tokens=False).input_ids == [i]:
            out.append(i)
    if len(out) < 50:
        raise ValueError("config key 'workload': the tokenizer has too few whole-word tokens to build synthetic "
                         "prompts of exact length; use workload prompts with prompt_length instead")
    return out


def specials(tok) -> list[int]:
    return tok("", add_special_tokens=True).input_ids


def exact(tok, draw, length: int) -> tuple[list[int], str]:
    """A prompt of exactly `length` tokens as the tokenizer encodes its text (special tokens included)."""
    extra = specials(tok)
    for _ in range(ROUND_TRIP_TRIES):
        body = draw(max(1, length - len(extra)))
        text = tok.decode(body)
        ids = tok(text).input_ids
        if len(ids) == length:
            return ids, text
    raise ValueError(f"config key 'input_tokens': no prompt of exactly {length} tokens round-trips through the "
                     f"tokenizer in {ROUND_TRIP_TRIES} draws; try another length")


def lengths(n: int, mean: int, distribution: str, spread: float, rng: random.Random) -> list[int]:
    if distribution == "fixed" or spread == 0:
        return [mean] * n
    if distribution == "uniform":
        lo, hi = max(1, round(mean * (1 - spread))), max(1, round(mean * (1 + spread)))
        return [rng.randint(lo, hi) for _ in range(n)]
    sd = spread * mean
    return [max(1, round(min(max(rng.gauss(mean, sd), mean - NORMAL_CLIP * sd), mean + NORMAL_CLIP * sd)))
            for _ in range(n)]


def longest(config, length: int) -> int:
    """The longest prompt a synthetic workload can make at this length (for the context check)."""
    if config.workload == "shared_prefix":
        return config.prefix_tokens + length
    if config.input_distribution == "fixed":
        return length
    wide = 1 + config.input_spread * (NORMAL_CLIP if config.input_distribution == "normal" else 1)
    return round(length * wide)


def random_prompts(tok, count: int, length: int, distribution: str, spread: float, seed: int):
    """[(ids, text)] of `count` prompts around `length` tokens."""
    rng = random.Random(f"random:{seed}:{length}")
    pool = word_pool(tok)
    return [exact(tok, lambda k: [rng.choice(pool) for _ in range(k)], n)
            for n in lengths(count, length, distribution, spread, rng)]


def shared_prefix_prompts(tok, groups: int, questions: int, prefix: int, suffix: int, seed: int):
    """[(group, ids, text)]: every group's questions, interleaved in a seeded order; each prompt's first
    `prefix` tokens are its group's prefix, exactly."""
    rng = random.Random(f"shared_prefix:{seed}:{prefix}:{suffix}")
    pool = word_pool(tok)
    out = []
    for g in range(groups):
        head, _ = exact(tok, lambda k: [rng.choice(pool) for _ in range(k)], prefix)
        body = head[len(specials(tok)):]
        for _ in range(questions):
            ids, text = exact(tok, lambda k: body + [rng.choice(pool) for _ in range(k - len(body))],
                              prefix + suffix)
            out.append((g, ids, text))
    rng.shuffle(out)
    return out

"""Reasoning tokens timed apart in process: with `thinking` on, a reasoning model (Qwen3) writes its reasoning
first and closes it with a think-end token; the user waits for the first token after it. Servers that stream
reasoning apart fill the same record fields from their events (engines/server/)."""
from __future__ import annotations

THINK_END = "</think>"


def think_end_id(tok) -> int | None:
    """The tokenizer's think-end token, or None when the model has none (it does not reason apart)."""
    vocab = tok.get_vocab()
    return vocab.get(THINK_END)


def split_reasoning(rec, tokens: list[int], end_id: int | None) -> None:
    """Counts the reasoning tokens (through the think-end token) and times the first answer token after it;
    a request that never closed its reasoning has no answer token yet (NaN), and all its tokens reasoned."""
    if end_id is None:
        return
    if end_id in tokens:
        j = tokens.index(end_id)
        rec.reasoning_tokens = j + 1
        if j + 1 < len(rec.token_times):
            rec.first_answer = rec.token_times[j + 1]
    else:
        rec.reasoning_tokens = len(tokens)

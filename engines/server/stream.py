"""One streamed response, read as it arrives: each SSE event stamped with the client's clock, split into answer and
reasoning text, and afterwards counted in tokens and reconciled with the server's final usage.

The read loop does only what a stamp needs (one json.loads per event, as `vllm bench serve` does); token counting
with the tokenizer, reconciliation and every figure happen after the load (ServerSession.close).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field


@dataclass
class Event:
    at: float  # s from the load start, when the client read it
    text: str
    usage: int | None  # cumulative completion tokens, where the server sends usage with every chunk
    reasoning: bool  # the event carried reasoning and no answer text


@dataclass
class Stream:
    events: list = field(default_factory=list)
    usage: dict | None = None  # the final usage
    metrics: dict | None = None  # the server's per-request figures (vLLM --enable-per-request-metrics)
    end: float = float("nan")  # the last data event, usage-only ones included
    error: str = ""


def parts_of(event: dict) -> tuple[str, str]:
    """(answer text, reasoning text) of a completions or chat chunk; a role alone is neither."""
    choices = event.get("choices") or []
    if not choices:
        return "", ""
    choice = choices[0]
    if "text" in choice:
        return choice.get("text") or "", ""
    delta = choice.get("delta") or {}
    return delta.get("content") or "", delta.get("reasoning_content") or delta.get("reasoning") or ""


async def read_stream(response, t0: float) -> Stream:
    """The events of one streamed response; an error event ends it with `error` set."""
    out = Stream()
    async for line in response.aiter_lines():
        now = time.perf_counter() - t0
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            continue
        if event.get("error"):
            out.error, out.end = f"server error: {' '.join(json.dumps(event['error']).split())[:300]}", now
            return out
        out.end = now
        usage = event.get("usage")
        if usage:
            out.usage = usage
        if event.get("metrics"):
            out.metrics = event["metrics"]
        answer, reasoning = parts_of(event)
        if answer or reasoning:
            out.events.append(Event(now, answer + reasoning, (usage or {}).get("completion_tokens"),
                                    bool(reasoning) and not answer))
    return out


def count_tokens(events: list[Event], usage: dict | None, tokenizer, notes: set) -> list[int]:
    """Tokens in each event: the server's per-chunk usage if every event has it, else the tokenizer over the text
    so far. Either way the final usage is the truth: tokens it counts that no event carried (a held-back
    incomplete UTF-8 piece, a skipped EOS) are returned as one more count, for an event at the stream's end."""
    cumulative = [e.usage for e in events]
    counts: list[int] = []
    if all(c is not None for c in cumulative):
        counts = [b - a for a, b in zip([0] + cumulative[:-1], cumulative)]
        if any(c < 0 for c in counts):
            counts = []
    if not counts:
        text, before = "", 0
        for e in events:
            text += e.text
            now = len(tokenizer(text, add_special_tokens=False).input_ids)
            counts.append(max(now - before, 1))
            before = max(now, before + 1)
        if not isinstance((usage or {}).get("completion_tokens"), int):
            notes.add("tokens per event counted with the tokenizer (the server sent no usage)")
        else:
            notes.add("tokens per event counted with the tokenizer and reconciled with the server's usage")
    total = (usage or {}).get("completion_tokens")
    if isinstance(total, int) and total > 0 and total != sum(counts):
        if total > sum(counts):
            return counts + [total - sum(counts)]
        excess = sum(counts) - total
        for i in sorted(range(len(counts)), key=lambda i: -counts[i]):
            take = min(excess, counts[i] - 1)
            counts[i] -= take
            excess -= take
            if not excess:
                break
    return counts

"""Multi-turn sessions: each session is a conversation, and turn k's prompt is its whole history (system prompt,
the earlier user messages and the engine's own earlier answers, as it returned them), sent once turn k-1 has
finished and think_time_s has passed. Later turns repeat the earlier ones as a prefix, which is what a prefix
cache reuses: TTFT by turn shows it at work.

Sessions arrive like requests do: closed loop keeps `concurrency` sessions in flight (the next one starts when one
ends), open loop starts sessions at the arrival times of the rate. `num_requests` counts sessions here (0: every
session once). A turn that fails ends its session: there is no answer to carry on from.

A history is rendered with the tokenizer's chat template when the run applies one (and the model has one),
else as a plain transcript ("User: ...\nAssistant: ..."); a chat API server gets the messages themselves.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from metrics.serving import RequestRecord
from scenarios.arrivals import schedule
from scenarios.sender import LoadRequest, send_one, sleep_until


@dataclass
class Session:
    index: int
    system: str | None
    turns: list[tuple[str, int]]  # (user message, output tokens)


def render(tok, config, messages: list[dict]) -> list[int]:
    """Token ids of a history ending in a user message, ready for the assistant's answer."""
    if config.chat_template and getattr(tok, "chat_template", None):
        out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                      enable_thinking=getattr(config, "thinking", False))
        return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    text = "\n\n".join(f"{names[m['role']]}: {m['content']}" for m in messages) + "\n\nAssistant:"
    return tok(text).input_ids


class Conversations:
    """The sessions of one load row being played: their records, and how many turns did not fit the context."""

    def __init__(self, session, sessions: list[Session], tok, config, context: int | None, stop_event):
        self.session, self.sessions, self.tok, self.config = session, sessions, tok, config
        self.context, self.stop_event = context, stop_event
        self.records: list[RequestRecord] = []
        self.too_long = 0

    def stopped(self) -> bool:
        return self.stop_event is not None and self.stop_event.is_set()

    async def play(self, conv: Session, t0: float, due: float) -> None:
        """One session's turns in order; `due` is when its first turn was due (s from t0)."""
        messages = [{"role": "system", "content": conv.system}] if conv.system else []
        for turn, (user, output) in enumerate(conv.turns):
            if self.stopped():
                return
            messages.append({"role": "user", "content": user})
            ids = render(self.tok, self.config, messages)
            if self.context and len(ids) + output > self.context:
                self.too_long += len(conv.turns) - turn  # this turn and the ones that would follow it
                return
            # The history is rendered as soon as the answer is in, during the think time: the client's own work is
            # not lag of the load generator, which is what `scheduled` against `sent` measures.
            due = max(due, time.perf_counter() - t0)
            await sleep_until(t0 + due)
            req = LoadRequest(conv.index, ids, self.tok.decode(ids, skip_special_tokens=False),
                              [dict(m) for m in messages], output)
            rec = RequestRecord(request_id=len(self.records), prompt_index=conv.index, scheduled=due,
                                prompt_tokens=len(ids), session=conv.index, turn=turn)
            self.records.append(rec)
            rec.sent = time.perf_counter() - t0
            await send_one(self.session, req, rec, t0)
            if rec.status != "ok":
                return
            messages.append({"role": "assistant", "content": rec.text})
            # The user reads the answer once the client has it, which can be later than the engine's own time of
            # its last token (continuous batching hands results over after that): the think time starts then.
            due = max(rec.end, time.perf_counter() - t0) + self.config.think_time_s

    async def closed_loop(self, concurrency: int) -> tuple[list[RequestRecord], float]:
        config = self.config
        count = config.num_requests or (0 if config.duration_s else len(self.sessions))
        t0 = time.perf_counter()
        deadline = t0 + config.duration_s if config.duration_s else math.inf
        started = 0

        async def worker():
            nonlocal started
            ready = time.perf_counter()
            while (not count or started < count) and time.perf_counter() < deadline and not self.stopped():
                conv = self.sessions[started % len(self.sessions)]
                started += 1
                await self.play(conv, t0, ready - t0)
                ready = time.perf_counter()

        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return self.records, t0

    async def open_loop(self, rate: float) -> tuple[list[RequestRecord], float]:
        config = self.config
        count = config.num_requests or (0 if config.duration_s else len(self.sessions))
        times = schedule(count, rate, config.burstiness, config.seed, config.duration_s)
        tasks = []
        t0 = time.perf_counter()
        for n, at in enumerate(times):
            await sleep_until(t0 + at)
            if self.stopped():
                break
            tasks.append(asyncio.create_task(self.play(self.sessions[n % len(self.sessions)], t0, at)))
        await asyncio.gather(*tasks)
        return self.records, t0

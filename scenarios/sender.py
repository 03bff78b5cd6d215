"""The load's sender: a request as sent, and the two loops that send a load's distinct requests, open loop at
arrival times drawn before the load starts and closed loop with N requests in flight. Each record keeps when
its request was scheduled and when it was really sent, so a row can tell when it measured the client.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from metrics.rows import one_line
from metrics.serving import RequestRecord
from scenarios.arrivals import schedule
from scenarios.workload import Load

MAX_OPEN_ENDED = 1_000_000
SPIN_S = 0.002  # closed loop with a duration and no count: requests are drawn until the time is up


@dataclass
class LoadRequest:
    prompt_index: int
    ids: list[int]  # the prompt as the in-process engines see it
    text: str  # the same prompt as text, for a server's completions API
    raw: str | list  # the prompt as written, for a server's chat API (the server applies its own template);
    # a session's turn: its messages so far
    output_tokens: int


def request_count(config, items: int) -> int:
    return config.num_requests or (0 if config.duration_s else items)



# --- the load generator ---------------------------------------------------------------------------------


def new_record(i: int, req: LoadRequest) -> RequestRecord:
    return RequestRecord(request_id=i, prompt_index=req.prompt_index, scheduled=math.nan, prompt_tokens=len(req.ids))


async def send_one(session, req: LoadRequest, rec: RequestRecord, t0: float) -> None:
    try:
        await session.send(req, rec, t0)
    except Exception as e:  # a session bug must not take the other requests down
        rec.fail(one_line(e), time.perf_counter() - t0)
    if rec.status == "pending":
        rec.fail("the engine returned no result", time.perf_counter() - t0)


async def sleep_until(target: float) -> None:
    """The event loop's timer wakes up to a millisecond or more late: sleep until just before, then yield to the
    loop (which keeps reading the streams) until the moment comes."""
    while (left := target - time.perf_counter()) > 0:
        await asyncio.sleep(left - SPIN_S if left > 2 * SPIN_S else 0)


async def open_loop(session, items: list[LoadRequest], load: Load, config, stop_event) -> tuple[list, float]:
    count = request_count(config, len(items))
    times = schedule(count, load.rate, config.burstiness, config.seed, config.duration_s)
    records = [new_record(i, items[i % len(items)]) for i in range(len(times))]
    tasks = []
    t0 = time.perf_counter()
    for rec, at in zip(records, times):
        rec.scheduled = at
        await sleep_until(t0 + at)
        if stop_event is not None and stop_event.is_set():
            break
        rec.sent = time.perf_counter() - t0
        tasks.append(asyncio.create_task(send_one(session, items[rec.request_id % len(items)], rec, t0)))
    await asyncio.gather(*tasks)
    return [r for r in records if r.sent == r.sent], t0


async def closed_loop(session, items: list[LoadRequest], concurrency: int, config, stop_event,
                      count: int | None = None) -> tuple[list, float]:
    count = request_count(config, len(items)) if count is None else count
    limit = count or MAX_OPEN_ENDED
    records: list[RequestRecord] = []
    t0 = time.perf_counter()
    deadline = t0 + config.duration_s if config.duration_s else math.inf

    async def worker():
        ready = time.perf_counter()  # when this slot became free
        while len(records) < limit:
            now = time.perf_counter()
            if now >= deadline or (stop_event is not None and stop_event.is_set()):
                return
            i = len(records)
            req = items[i % len(items)]
            rec = new_record(i, req)
            rec.scheduled, rec.sent = ready - t0, now - t0
            records.append(rec)
            await send_one(session, req, rec, t0)
            ready = time.perf_counter()

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return records, t0

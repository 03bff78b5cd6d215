"""Static batching, how any call engine (hf, fast, ...) serves a load: the waiting requests, up to
max_batch_size, run as one `generate` call, and the next batch waits for it to finish. That baseline is what
continuous batching is measured against. Engines that serve requests themselves bring their own session.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time

from decoding.types import Request
from metrics.rows import one_line
from metrics.thinking import split_reasoning, think_end_id
from metrics.serving import RequestRecord
from scenarios.sender import LoadRequest


def batch_one(template: Request) -> bool:
    """Drafting and beams run one sequence per call on the in-process engines."""
    return bool(template.use_draft or template.prompt_lookup_num_tokens or template.num_beams > 1)


# --- static batching: any call engine under load ------------------------------------------------------


class StepProbe:
    """The engine's probe for one batch: the first token, and a time at every step it polls (hf: every token)."""

    def __init__(self, stop_event, device):
        self.stop_event, self.device, self.first, self.steps = stop_event, device, None, []

    def first_token(self) -> None:
        if self.first is None:
            if self.device.type == "cuda":  # the token must exist, not just be queued
                import torch

                torch.cuda.synchronize(self.device)
            self.first = time.perf_counter()

    def should_stop(self) -> bool:
        self.steps.append(time.perf_counter())
        return self.stop_event is not None and self.stop_event.is_set()


class StaticSession:
    """Waiting requests, up to max_batch, run as one generate call; the next batch waits for it.

    job is the load row's Job (scenarios/load.py): its context, the distinct requests and the notes it gathers."""

    def __init__(self, job, template: Request):
        self.job, self.template = job, template
        self.max_batch = 1 if batch_one(template) else job.ctx.config.max_batch_size
        self.notes: set[str] = set()
        self.queue: asyncio.Queue | None = None
        self.worker = None

    async def start(self) -> None:
        from engines import ENGINES

        ctx = self.job.ctx
        spec = ENGINES.get(ctx.engine_name)
        if spec is not None and spec.compiles and ctx.models.device.type == "cuda":
            # Arrivals form batches of every size up to max_batch: each shape compiles once here, never in a
            # measured batch.
            longest = max(self.job.items, key=lambda r: (r.output_tokens, len(r.ids)))
            for size in range(1, self.max_batch + 1):
                await asyncio.to_thread(self.run, [longest] * size)
        self.queue = asyncio.Queue()
        self.worker = asyncio.create_task(self.work())

    async def send(self, req: LoadRequest, rec: RequestRecord, t0: float) -> None:
        done = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((req, rec, t0, done))
        await done

    async def work(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            started = time.perf_counter()
            try:
                # In a thread: the sender keeps to its schedule while the batch decodes.
                generation, probe, ended = await asyncio.to_thread(self.run, [b[0] for b in batch])
                self.fill(batch, generation, probe, started, ended)
            except Exception as e:  # the batch's requests fail; later batches still run
                for _, rec, t0, _ in batch:
                    rec.fail(one_line(e), time.perf_counter() - t0)
            for *_, done in batch:
                if not done.done():
                    done.set_result(None)

    def run(self, requests: list[LoadRequest]):
        import torch

        ctx = self.job.ctx
        pad, device = ctx.models.pad_token_id, ctx.models.device
        width = max(len(r.ids) for r in requests)
        ids = torch.tensor([[pad] * (width - len(r.ids)) + r.ids for r in requests], device=device)  # (b, width)
        mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in requests], device=device)
        longest = max(r.output_tokens for r in requests)
        forced = self.template.min_new_tokens >= self.template.max_new_tokens
        request = dataclasses.replace(self.template, input_ids=ids, attention_mask=mask, max_new_tokens=longest,
                                      min_new_tokens=longest if forced else self.template.min_new_tokens)
        probe = StepProbe(ctx.stop_event, device)
        generation = ctx.engine.generate(request, probe)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return generation, probe, time.perf_counter()

    def fill(self, batch, generation, probe: StepProbe, started: float, ended: float) -> None:
        per_input = generation.sequences.shape[0] // len(batch)
        rows = generation.sequences.tolist()
        tok = self.job.ctx.models.tokenizer
        first = probe.first if probe.first is not None else ended
        for i, (req, rec, t0, _) in enumerate(batch):
            n = min(generation.new_tokens[i * per_input], req.output_tokens)
            tokens = rows[i * per_input][:n]
            if len(probe.steps) >= n:  # hf: one poll per token, right after it exists
                times = [first] + probe.steps[1:n]
            else:  # engines that poll less often (fast: every 8 steps): evenly between first token and end
                self.notes.add("token times interpolated between the first token and the batch end "
                               "(the engine reports no time per token)")
                times = [first + (ended - first) * j / max(n - 1, 1) for j in range(n)]
            rec.token_times = [t - t0 for t in times]
            rec.first_token = rec.token_times[0] if times else ended - t0
            rec.end = rec.token_times[-1] if times else ended - t0
            rec.queue = started - t0 - rec.sent
            rec.output_tokens = n
            rec.text = tok.decode(tokens, skip_special_tokens=True)
            rec.status = "ok"
            if self.job.ctx.config.thinking:
                split_reasoning(rec, tokens, think_end_id(tok))

    async def close(self, records) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.job.notes += sorted(self.notes)

"""The load scenario: a stream of requests offered to an engine as users would send them, one row per engine x
load point (a concurrency or a request rate), with per-request records in requests.jsonl.

The load generator is asyncio: open loop sends at arrival times drawn before the load starts (Poisson, or
gamma with `burstiness`), closed loop keeps N requests in flight. The sender records how late each send
was against its schedule; a row whose lag p99 exceeds 10 ms measured the client, and says so.

Engines take part in one of two ways:
- an engine with `session(job, template)` serves requests itself (engines/server.py over HTTP,
  engines/continuous.py with transformers' continuous batching) and fills each request's record;
- any other engine (hf, fast, ...) is driven by static batching here: the waiting requests, up to
  max_batch_size, run as one `generate` call, and the next batch waits for it to finish. That baseline
  is what continuous batching is measured against.

A method's request is captured once (the method builds it against a capturing engine), so the load
scenario needs no list of methods: greedy or sampling, beams, drafts are read off the Request.
"""
from __future__ import annotations

import asyncio
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

from models.prompts import tokenize_prompts
from metrics.rows import one_line
from decoding import METHODS
from decoding.method import Point
from decoding.types import Inputs, NullProbe, Request, UnsupportedSetting
from metrics.serving import LoadFigures, RequestRecord
from metrics.memory import is_out_of_memory
from metrics.quality import first_difference
from metrics.stats import median
from scenarios.arrivals import schedule
from scenarios.context import Finished, ScenarioContext, Stopped, check_stop
from scenarios.workload import Load, engine_kinds, load_points, read_dataset

MAX_OPEN_ENDED = 1_000_000
SWITCH_INTERVAL_S = 0.0005
SPIN_S = 0.002  # closed loop with a duration and no count: requests are drawn until the time is up


@dataclass(frozen=True)
class LoadPoint(Point):
    load: Load = field(default_factory=Load, compare=True)


def points(config) -> list[LoadPoint]:
    """Every method's points at every load point; the batched method's batch sizes become concurrencies."""
    out = []
    for name in METHODS:
        if name not in config.methods:
            continue
        spec = METHODS[name]
        for p in spec.points(config):
            loads = load_points(config, closed=[p.batch_size]) if spec.sweeps_batch else load_points(config)
            for load in loads:
                setting = load.label if spec.sweeps_batch else f"{p.setting}, {load.label}"
                out.append(LoadPoint(name, setting, 1, p.do_sample, p.call, p.overrides, p.params, load=load))
    return out


@dataclass
class LoadRequest:
    prompt_index: int
    ids: list[int]  # the prompt as the in-process engines see it
    text: str  # the same prompt as text, for a server's completions API
    raw: str  # the prompt as written, for a server's chat API (the server applies its own template)
    output_tokens: int


@dataclass
class Job:
    """One row: a method at one load point on one engine, and its request records."""

    ctx: ScenarioContext
    point: LoadPoint
    row: dict
    records: list = field(default_factory=list)
    calls: list = field(default_factory=list)  # load rows pair no speedups: the runner finds no calls to pair
    repetitions: int = 0
    active: bool = True
    notes: list = field(default_factory=list)
    texts: dict = field(default_factory=dict)  # prompt index -> the first finished text (greedy comparison, Samples)
    items: list = field(default_factory=list)  # the distinct requests the load cycles through
    template: Request | None = None  # what the method asks of an engine for one prompt

    def fail(self, error) -> None:
        self.row.update(status="oom" if is_out_of_memory(error) else "error", error=one_line(error))
        self.active = False


# --- the workload --------------------------------------------------------------------------------------


def workload(ctx: ScenarioContext) -> list[LoadRequest]:
    """The distinct requests a load cycles through: the dataset's lines, or every prompt x completion."""
    config, tok = ctx.config, ctx.models.tokenizer
    if config.dataset:
        items = read_dataset(config.dataset)
        texts = [i["prompt"] for i in items]
        outputs = [i["output_tokens"] or config.max_new_tokens for i in items]
        ids = tokenize_prompts(tok, SimpleNamespace(prompts=texts, chat_template=config.chat_template,
                                                    prompt_length=config.prompt_length))
        indices = list(range(len(items)))
    else:
        texts, ids = list(config.prompts), list(ctx.prompts)
        indices = [p for p, n in enumerate(config.completions()) for _ in range(n)]
        outputs = [config.max_new_tokens] * len(indices)
    out = []
    for k, p in enumerate(indices):
        plain = tok(texts[p]).input_ids == list(ids[p])
        # The in-process prompt as text: a template or a cut is sent as the tokens it produced.
        text = texts[p] if plain else tok.decode(ids[p], skip_special_tokens=False)
        out.append(LoadRequest(p, list(ids[p]), text, texts[p], outputs[k]))
    return out


def request_count(config, items: int) -> int:
    return config.num_requests or (0 if config.duration_s else items)


# --- capturing what a method asks for ----------------------------------------------------------------


class Captured(Exception):
    def __init__(self, request: Request):
        super().__init__("captured")
        self.request = request


class CaptureEngine:
    name = "capture"

    def generate(self, request: Request, probe) -> None:
        raise Captured(request)


def request_template(job: Job, first: LoadRequest) -> Request:
    """The Request the job's method builds for one prompt, without running anything."""
    import torch

    settings = dataclasses.replace(job.ctx.config.settings(), **job.point.overrides)
    ids = torch.tensor([first.ids])
    inputs = Inputs(ids, torch.ones_like(ids), (first.prompt_index,), (0,))
    try:
        METHODS[job.point.method](inputs, settings, CaptureEngine(), NullProbe(), **job.point.call)
    except Captured as c:
        return c.request
    raise UnsupportedSetting(f"{job.point.method} makes no single engine request, so it cannot run under load")


def greedy(template: Request) -> bool:
    return not template.do_sample and template.num_beams == 1


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
    """Waiting requests, up to max_batch, run as one generate call; the next batch waits for it."""

    def __init__(self, job: Job, template: Request):
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

    async def close(self, records) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.job.notes += sorted(self.notes)


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


async def run_job(job: Job, items: list[LoadRequest], template: Request) -> None:
    ctx, config, load = job.ctx, job.ctx.config, job.point.load
    engine = ctx.engine
    session = engine.session(job, template) if hasattr(engine, "session") else StaticSession(job, template)
    await session.start()
    records = []
    # An in-process engine decodes in a thread of this process: a short GIL switch interval lets the sender
    # keep its schedule (the default 5 ms would show up as sender lag).
    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        started = time.perf_counter()
        if config.warmup_requests:  # compile, allocation and connection set-up stay out of the figures
            width = load.concurrency or min(config.warmup_requests, config.max_batch_size)
            await closed_loop(session, items, width, SimpleNamespace(duration_s=0, num_requests=0), None,
                              count=config.warmup_requests)
        job.row["warmup_s"] = time.perf_counter() - started
        if hasattr(session, "begin"):
            await session.begin()
        if load.concurrency:
            records, t0 = await closed_loop(session, items, load.concurrency, config, ctx.stop_event)
        else:
            records, t0 = await open_loop(session, items, load, config, ctx.stop_event)
    finally:
        sys.setswitchinterval(switch)
        await session.close(records)
    job.records = records
    check_stop(ctx.stop_event)
    job.repetitions = 1


# --- the scenario interface -----------------------------------------------------------------------------


def prepare(job: Job, cache: dict) -> tuple[list[LoadRequest], Request]:
    ctx, point = job.ctx, job.point
    method = METHODS[point.method]
    kind = engine_kinds([ctx.engine_name]) or {"call"}
    if method.engines is not None and ctx.engine_name not in method.engines and "call" in kind:
        raise UnsupportedSetting(f"{point.method} runs on the {' or '.join(method.engines)} engine only")
    key = id(ctx)
    if key not in cache:
        cache[key] = workload(ctx)
    items = job.items = cache[key]
    template = job.template = request_template(job, items[0])
    serving = hasattr(ctx.engine, "session")
    job.row["batch_size"] = "" if "remote" in kind else (
        1 if not serving and batch_one(template) else ctx.config.max_batch_size)
    return items, template


def measure(jobs: list[Job], progress):
    """Each job in turn (a load point is one long measurement, not interleaved), grouped by server command so
    a started server serves all its points; then greedy texts are compared across engines."""
    cache: dict = {}
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i].ctx.engine_name, jobs[i].point.load.server))
    try:
        for n, i in enumerate(order):
            job = jobs[i]
            yield progress(f"{job.point.method} [{job.point.setting}] on {job.ctx.engine_name}", job,
                           min(n / len(jobs), 0.99))
            try:
                items, template = prepare(job, cache)
                asyncio.run(run_job(job, items, template))
            except Stopped:
                raise
            except Exception as e:
                job.fail(e)
            check_stop(job.ctx.stop_event)
    finally:
        for engine in {id(j.ctx.engine): j.ctx.engine for j in jobs}.values():
            if hasattr(engine, "close"):
                engine.close()
    compare_greedy(jobs)


def first_texts(job: Job) -> dict[int, str]:
    out: dict[int, str] = {}
    for r in job.records:
        if r.status == "ok" and r.prompt_index not in out:
            out[r.prompt_index] = r.text
    return out


def comparable(text: str) -> str:
    # A streaming decoder holds back an incomplete UTF-8 sequence at the end, where a whole decode shows U+FFFD.
    return text.rstrip("\ufffd")


def compare_greedy(jobs: list[Job]) -> None:
    """greedy_match / first_divergence of every greedy load row against an in-process engine's greedy texts of the
    same prompts (the lowest concurrency first: one sequence per call, as `standard` runs). Texts are compared,
    since a server returns text; the divergence is counted in tokens of the run's tokenizer."""
    for job in jobs:
        job.texts = first_texts(job)
    lossless = [j for j in jobs if j.template is not None and greedy(j.template)]
    candidates = [j for j in lossless if j.row["status"] == "ok" and j.texts
                  and "call" in (engine_kinds([j.ctx.engine_name]) or {"call"})
                  and not hasattr(j.ctx.engine, "session")]
    candidates.sort(key=lambda j: (j.point.load.concurrency or math.inf, j.point.load.rate or math.inf))
    if not candidates:
        return
    reference = candidates[0]
    tok = reference.ctx.models.tokenizer
    for job in lossless:
        if job is reference or job.row["status"] != "ok":
            continue
        shared = [p for p in job.texts if p in reference.texts]
        if not shared:
            continue
        diverged = []
        for p in shared:
            mine, theirs = comparable(job.texts[p]), comparable(reference.texts[p])
            if mine != theirs:
                at = first_difference(tok(mine, add_special_tokens=False).input_ids,
                                      tok(theirs, add_special_tokens=False).input_ids)
                diverged.append(0 if at is None else at)
        job.row["greedy_match"] = 1 - len(diverged) / len(shared)
        job.row["first_divergence"] = median(diverged) if diverged else math.nan


def finish(job: Job) -> Finished:
    """Fills the row from its records; hands back one text per prompt and the records, for requests.jsonl."""
    row, config, load = job.row, job.ctx.config, job.point.load
    row.update({
        "concurrency": load.concurrency or "", "request_rate": load.rate or "",
        "burstiness": config.burstiness if load.rate and not math.isinf(load.rate) else "",
        "slo_ttft_ms": config.slo_ttft_ms,
        "slo_tpot_ms": config.slo_tpot_ms, "repetitions": job.repetitions, "warmup": config.warmup_requests,
        "server_command": config.server_command[load.server] if load.server >= 0 else "",
        "endpoint": getattr(job.ctx.engine, "endpoint_for", lambda j: "")(job),
    })
    records = job.records
    if row["status"] != "ok" or not records:
        if row["status"] == "ok":
            row.update(status="error", error="no request was sent")
        return Finished([])
    row.update(LoadFigures.figures(records, config.slo_ttft_ms, config.slo_tpot_ms))
    ok = [r for r in records if r.status == "ok"]
    row.update(calls=len(records), sequences=len(records),
               prompt_tokens=sum(r.prompt_tokens for r in records) / len(records),
               new_tokens=sum(r.output_tokens for r in ok) / len(ok) if ok else math.nan)
    notes = set(filter(None, str(row.get("notes") or "").split("; "))) | set(job.notes) | set(job.ctx.models.notes)
    if not ok:
        row.update(status="error", error=one_line(f"every request failed: {records[0].error}"))
    elif len(ok) < len(records):
        first = next(r.error for r in records if r.status != "ok")
        notes.add(f"{len(records) - len(ok)} of {len(records)} requests failed, the first: {first[:200]}")
    if row["sender_lagged"] is True:
        notes.add(f"sender lag p99 {row['send_lag_ms_p99']:.1f} ms above 10 ms: this row measured the client, "
                  "not the engine")
    row["notes"] = "; ".join(sorted(notes))
    if not job.texts:
        job.texts = first_texts(job)
    raw = {i.prompt_index: i.raw for i in job.items}  # the prompt as written (a dataset's line, or a config prompt)
    texts = [{**{k: row[k] for k in ("run_id", "method", "setting", "engine", "quantization", "attention")},
              "prompt_index": p, "completion_index": 0, "sequence_index": 0, "text": text, "prompt": raw.get(p, ""),
              "new_tokens": next(r.output_tokens for r in records if r.status == "ok" and r.prompt_index == p)}
             for p, text in sorted(job.texts.items())]
    return Finished(texts, [r.to_json() for r in records])

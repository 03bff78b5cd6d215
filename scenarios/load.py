"""The load scenario: a stream of requests offered to an engine as users would send them, one row per engine x
load point (a concurrency or a request rate), with per-request records in requests.jsonl.

The load generator is asyncio (scenarios/sender.py): open loop sends at arrival times drawn before the load
starts (Poisson, or gamma with `burstiness`), closed loop keeps N requests in flight. The sender records how
late each send was against its schedule; a row whose lag p99 exceeds 10 ms measured the client, and says so.

Engines take part in one of two ways:
- an engine with `session(job, template)` serves requests itself (engines/server/ over HTTP,
  engines/continuous.py with transformers' continuous batching) and fills each request's record;
- any other engine (hf, fast, ...) is driven by static batching (scenarios/static_batching.py): the waiting
  requests, up to max_batch_size, run as one `generate` call, and the next batch waits for it to finish.
  That baseline is what continuous batching is measured against.

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

from decoding import BASELINE, METHODS
from decoding.method import Point
from decoding.types import Inputs, NullProbe, Request, UnsupportedSetting
from metrics.cost import Cost
from metrics.memory import is_out_of_memory
from metrics.quality import first_difference
from metrics.rows import one_line
from metrics.load_speedup import speedups
from metrics.serving import LoadFigures
from metrics.stats import median
from scenarios.context import Finished, ScenarioContext, Stopped, check_stop
from metrics.turns import WorkloadFigures
from scenarios.offered import Offered, offered
from scenarios.sender import LoadRequest, closed_loop, open_loop
from scenarios.sessions import Conversations
from scenarios.static_batching import StaticSession, batch_one
from scenarios.workload import Load, engine_kinds, load_points

SWITCH_INTERVAL_S = 0.0005


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
    offered: Offered | None = None  # what the load point offers (scenarios/offered.py)

    def fail(self, error) -> None:
        self.row.update(status="oom" if is_out_of_memory(error) else "error", error=one_line(error))
        self.active = False


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


# --- one load point ------------------------------------------------------------------------------------


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
        if job.offered is not None and job.offered.sessions:
            play = Conversations(session, job.offered.sessions, ctx.models.tokenizer, config, job.offered.context,
                                 ctx.stop_event)
            records, t0 = await (play.closed_loop(load.concurrency) if load.concurrency else play.open_loop(load.rate))
            if play.too_long:
                job.notes.append(f"{play.too_long} session turns beyond the model's context of "
                                 f"{job.offered.context} tokens not sent (their sessions ended there)")
        elif load.concurrency:
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
    key = (id(ctx), point.load.input_tokens)
    if key not in cache:
        cache[key] = offered(ctx, point.load)
    job.offered = cache[key]
    job.notes.extend(job.offered.notes)
    items = job.items = job.offered.items
    template = job.template = request_template(job, items[0])
    serving = hasattr(ctx.engine, "session")
    job.row["batch_size"] = "" if "remote" in kind else (
        1 if not serving and batch_one(template) else ctx.config.max_batch_size)
    return items, template


def measure_one(job: Job, cache: dict) -> bool:
    """One load point's requests, start to end; a failure marks the row (Stop goes on up). True when it ran."""
    try:
        items, template = prepare(job, cache)
        asyncio.run(run_job(job, items, template))
    except Stopped:
        raise
    except Exception as e:
        job.fail(e)
        return False
    return True


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
            measure_one(job, cache)
            check_stop(job.ctx.stop_event)
    finally:
        for engine in {id(j.ctx.engine): j.ctx.engine for j in jobs}.values():
            if hasattr(engine, "close"):
                engine.close()
    compare_greedy(jobs)
    pair_drafting(jobs)


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


def drafting(job: Job) -> bool:
    """A method that drafts, or a server row whose server reported drafted tokens (drafting set in server_command)."""
    drafted = job.row.get("drafted_tokens")
    return METHODS[job.point.method].drafts or bool(isinstance(drafted, (int, float)) and drafted > 0)


def pair_drafting(jobs: list[Job]) -> None:
    """load_speedup_* of every drafting row against the plain greedy row of the same engine at the same load point
    (any server command: vLLM without and with --speculative-config pair up), paired by request."""
    def ready(j: Job) -> bool:
        return j.row["status"] == "ok" and bool(j.records)

    plain: dict = {}
    for j in jobs:
        if ready(j) and j.template is not None and greedy(j.template) and not drafting(j):
            key = (id(j.ctx), j.point.load.concurrency, j.point.load.rate)
            if key not in plain or j.point.method == BASELINE:
                plain[key] = j
    for j in jobs:
        ref = plain.get((id(j.ctx), j.point.load.concurrency, j.point.load.rate))
        if ready(j) and drafting(j) and ref is not None:
            j.row.update(speedups(ref.records, j.records))


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
    row.update(LoadFigures.figures(records, config.slo_ttft_ms, config.slo_tpot_ms, open_loop=bool(load.rate)))
    row.update(WorkloadFigures.figures(records, config.workload, load.input_tokens, config.think_time_s))
    ok = [r for r in records if r.status == "ok"]
    row.update(calls=len(records), sequences=len(records),
               prompt_tokens=sum(r.prompt_tokens for r in records) / len(records),
               new_tokens=sum(r.output_tokens for r in ok) / len(ok) if ok else math.nan)
    row.update(Cost.summarize([], job.ctx, row))  # from the rates just filled (metrics/cost.py)
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
    # The prompt as written (a dataset's line, a config prompt; a session: its first user message).
    raw = {i.prompt_index: i.raw if isinstance(i.raw, str) else i.raw[-1]["content"] for i in job.items}
    texts = [{**{k: row[k] for k in ("run_id", "method", "setting", "engine", "quantization", "attention")},
              "prompt_index": p, "completion_index": 0, "sequence_index": 0, "text": text, "prompt": raw.get(p, ""),
              "new_tokens": next(r.output_tokens for r in records if r.status == "ok" and r.prompt_index == p)}
             for p, text in sorted(job.texts.items())]
    return Finished(texts, [r.to_json() for r in records])

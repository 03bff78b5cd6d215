"""The per-call scenario: fixed method calls over a workload (prompts x completions, in batches).

For one loaded model variant, every row (method x setting x engine) is warmed up first; then the
measured repetitions are interleaved: repetition 1 of every row in a seeded random order, then
repetition 2, and so on, so no row always runs first after loading and drift (clocks, heat, the
allocator) spreads over all of them. With target_ci > 0 a row stops repeating once its interval is
narrow enough.
"""
from __future__ import annotations

import dataclasses
import random
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import metrics
from decoding import METHODS
from decoding.method import Point
from decoding.types import Inputs
from metrics.compiles import CompileCounters, delta, describe, dirty, snapshot
from metrics.memory import is_out_of_memory
from metrics.prediction import prediction_columns
from metrics.rows import Call, figures, one_line, output_records
from metrics.stats import half_width_ratio
from metrics.timing import CallTimer, TokenTrace
from metrics.trace import format_times
from scenarios.context import Finished, ScenarioContext, Stopped, check_stop


def points(config) -> list[Point]:
    """Every method's sweep points, in registry order (the baseline first)."""
    return [p for name in METHODS if name in config.methods for p in METHODS[name].points(config)]


@dataclass
class Job:
    """One row being measured: a point on one engine, its workload, and what was measured so far."""

    ctx: ScenarioContext
    point: Point
    row: dict
    units: list[Inputs] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    repetitions: int = 0
    active: bool = True

    def fail(self, error) -> None:
        self.row.update(status="oom" if is_out_of_memory(error) else "error", error=one_line(error))
        self.active = False
        if self.ctx.models.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


def workload(config, batch_size: int) -> tuple[list[tuple[int, int]], int]:
    """(prompt, completion) items cut evenly into batches of batch_size, and how many were added.

    A batch size the configured sequences cannot fill, or a smaller last batch, would put calls of
    different sizes in one median and label it with a size that never ran: extra completions of the
    prompts, in turn, fill the last batch instead."""
    counts = list(config.completions())
    items = [(p, c) for p, n in enumerate(counts) for c in range(n)]
    added = -len(items) % batch_size
    for i in range(added):
        p = i % len(counts)
        items.append((p, counts[p]))
        counts[p] += 1
    return items, added


def work_units(ctx: ScenarioContext, items: list[tuple[int, int]], batch_size: int) -> list[Inputs]:
    """Left-padded batches, on the device, built before any clock starts."""
    import torch

    prompts, pad, device = ctx.prompts, ctx.models.pad_token_id, ctx.models.device
    units = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        width = max(len(prompts[p]) for p, _ in chunk)
        ids = [[pad] * (width - len(prompts[p])) + prompts[p] for p, _ in chunk]  # (b, width)
        mask = [[0] * (width - len(prompts[p])) + [1] * len(prompts[p]) for p, _ in chunk]  # (b, width)
        units.append(Inputs(torch.tensor(ids, device=device), torch.tensor(mask, device=device),
                            tuple(p for p, _ in chunk), tuple(c for _, c in chunk)))
    return units


def warm_up_units(units: list[Inputs]) -> list[Inputs]:
    """The longest prompt of each batch size: a longer prompt (a bigger static cache on the fast engine)
    must not compile or allocate inside a measured call."""
    longest: dict[int, Inputs] = {}
    for u in units:
        if u.batch_size not in longest or u.input_ids.shape[1] > longest[u.batch_size].input_ids.shape[1]:
            longest[u.batch_size] = u
    return list(longest.values())


def call(job: Job, unit: Inputs, probe) -> object:
    settings = dataclasses.replace(job.ctx.config.settings(), **job.point.overrides)
    return METHODS[job.point.method](unit, settings, job.ctx.engine, probe, **job.point.call)


def plan(job: Job) -> None:
    """The row's workload, built before any row warms up (so engines can size their caches for every row)."""
    ctx, point, config = job.ctx, job.point, job.ctx.config
    method = METHODS[point.method]
    if method.engines is not None and ctx.engine_name not in method.engines:
        others = f" (or {', '.join(method.engines[1:])})" if len(method.engines) > 1 else ""
        job.fail(f"{point.method} runs on the {method.engines[0]} engine{others} only: "
                 f"set engine {method.engines[0]!r} for {point.method}")
        return
    items, added = workload(config, point.batch_size)
    job.units = work_units(ctx, items, point.batch_size)
    job.row["sequences"] = len(items)
    if added:
        job.row["notes"] = (f"workload grown from {len(items) - added} to {len(items)} sequences so every call "
                            f"runs batch size {point.batch_size}")


def reserve(jobs: list[Job]) -> None:
    """Tell each engine that keeps static caches (`reserve(batch, slots)`) the most slots any row will need at each
    batch size, before anything compiles: a drafting row with a large k must not grow a cache that another row's
    graphs were captured on, which would make that row compile again inside a measured call."""
    for job in jobs:
        engine = job.ctx.engine
        if not job.active or not hasattr(engine, "reserve"):
            continue
        settings = dataclasses.replace(job.ctx.config.settings(), **job.point.overrides)
        drafts = METHODS[job.point.method].drafts
        k = max(settings.num_draft_tokens, settings.prompt_lookup_num_tokens) if drafts else 0
        for unit in job.units:
            engine.reserve(unit.batch_size, unit.input_ids.shape[1] + settings.max_new_tokens + k + 1)


def prepare(job: Job) -> None:
    """The row's warm-up calls (excluded from the figures; their time is warmup_s)."""
    ctx, config = job.ctx, job.ctx.config
    if not job.active:
        return
    started = time.perf_counter()
    compiled_before = getattr(ctx.engine, "compile_seconds", float("nan"))
    counted = snapshot()
    for _ in range(config.warmup):
        for unit in warm_up_units(job.units):
            with CallTimer(ctx.models.device, ctx.stop_event) as probe:
                call(job, unit, probe)
            check_stop(ctx.stop_event)
    job.row["warmup_s"] = time.perf_counter() - started
    # The engine's compile time is cumulative; this row's share is what its warm-up added.
    job.row["compile_s"] = getattr(ctx.engine, "compile_seconds", float("nan")) - compiled_before
    if hasattr(ctx.engine, "compile_seconds"):  # what the warm-up compiled; metrics/compiles.py adds the calls'
        counts = delta(counted, snapshot())
        job.row.update(compiled_graphs=counts["graphs"], graph_breaks=counts["graph_breaks"],
                       cudagraph_skips=counts["cudagraph_skips"])


def measure_repetition(job: Job) -> None:
    """One pass over the row's workload, each call inside the metric trackers."""
    ctx = job.ctx
    for unit in job.units:
        trackers = tuple(t(ctx.models.device, ctx.stop_event) for t in metrics.TRACKERS)
        probe = next(t for t in trackers if isinstance(t, CallTimer))  # it also tells the engine when to stop
        with ExitStack() as stack:
            for tracker in reversed(trackers):
                stack.enter_context(tracker)
            generation = call(job, unit, probe)
        check_stop(ctx.stop_event)
        job.calls.append(Call(unit, generation, trackers, job.repetitions))
        note_compiles(job, next(t for t in trackers if isinstance(t, CompileCounters)), unit)
    job.repetitions += 1


def note_compiles(job: Job, counters: CompileCounters, unit: Inputs) -> None:
    """A measured call that compiled, recompiled, broke a graph or recorded a CUDA graph timed work that is not
    decoding: the row says which call and what (metrics/compiles.py marks it unstable)."""
    if not hasattr(job.ctx.engine, "compile_seconds") or not dirty(counters.counts):
        return
    note = (f"unstable: a measured call (repetition {job.repetitions + 1}, batch {unit.batch_size} x "
            f"{unit.input_ids.shape[1]} prompt tokens) had {describe(counters.counts)}; its time includes work that "
            "is not decoding")
    job.row["notes"] = "; ".join(filter(None, [job.row["notes"], note]))


def narrow_enough(job: Job, target: float) -> bool:
    row = CallTimer.summarize(job.calls)
    spread = half_width_ratio(row["tokens_per_s_per_sequence_median"], row["tokens_per_s_per_sequence_ci_low"],
                              row["tokens_per_s_per_sequence_ci_high"])
    return spread == spread and spread <= target


def finish(job: Job) -> Finished:
    """Fills the row with its figures; hands back the texts of its first repetition."""
    job.row["repetitions"] = job.repetitions
    if job.row["status"] != "ok" or not job.calls:
        return Finished([])
    job.row.update(figures(job.calls, job.ctx, job.row))
    if METHODS[job.point.method].drafts:
        # The draft/target step-time ratio behind the predicted speedup, timed now, outside every measured call.
        try:
            job.row.update(prediction_columns(job.row, job.ctx.engine, job.units[0]))
        except Exception as e:
            job.row["notes"] = "; ".join(filter(None, [job.row["notes"], f"no predicted speedup: {one_line(e)}"]))
    try:
        stop = job.ctx.stop_event or threading.Event()
        if not stop.is_set():  # a stopped run keeps what it measured, and no trace that Stop cut short
            times = traced_call(job)
            if not stop.is_set():
                job.row["token_times_ms"] = format_times(times)
    except Exception as e:
        job.row["notes"] = "; ".join(filter(None, [job.row["notes"], f"no token trace: {one_line(e)}"]))
    return Finished(output_records(job.row, job.ctx.models.tokenizer, job.calls[: len(job.units)],
                                   job.ctx.config.prompts))


def traced_call(job: Job) -> list[float]:
    """One more call on the row's first unit, after the measured ones and outside their figures, with every
    step's tokens timed (metrics/trace.py)."""
    with TokenTrace(job.ctx.models.device, job.ctx.stop_event) as trace:
        call(job, job.units[0], trace)
    return trace.token_times_ms()


def measure(jobs: list[Job], progress):
    """Warm-up of every row, then interleaved repetitions. A generator of Progress events (made by
    progress(message, job, fraction)); Stopped propagates with every job as far as it got."""
    config = jobs[0].ctx.config
    fewest, most = config.repetition_range()
    for job in jobs:
        try:
            plan(job)
        except Exception as e:
            job.fail(e)
    reserve(jobs)
    for i, job in enumerate(jobs):
        yield progress(f"warming up {job.point.method} [{job.point.setting}] on {job.ctx.engine_name}", job,
                       0.0)
        try:
            prepare(job)
        except Stopped:
            raise
        except Exception as e:
            job.fail(e)
    order = random.Random(config.seed)  # seeded: the same config measures in the same order
    planned = len(jobs) * fewest
    done = 0
    for rep in range(most):
        active = [j for j in jobs if j.active]
        if not active:
            break
        order.shuffle(active)
        for job in active:
            yield progress(f"{job.point.method} [{job.point.setting}] on {job.ctx.engine_name}: repetition "
                           f"{rep + 1}/{fewest if fewest == most else f'{fewest}..{most}'}", job,
                           min(done / max(planned, 1), 0.99))
            try:
                measure_repetition(job)
            except Stopped:
                raise
            except Exception as e:
                job.fail(e)
            done += 1
        for job in active:
            if job.active and job.repetitions >= fewest and (
                    job.repetitions >= most or (config.target_ci and narrow_enough(job, config.target_ci))):
                job.active = False
        planned = max(planned, done + sum(j.active for j in jobs))

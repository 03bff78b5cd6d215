"""The one benchmark loop every consumer (CLI, dashboard, tests, scripts) calls.

    for event in run(config):   # Progress while working, RowDone for each row
        ...

It knows no method, engine or metric by name: for each model variant (quantization x attention) it
loads the models once, hands every (engine, point) row of that variant to the scenario, which
measures them interleaved, then adds paired speedups, appends the rows to the store and yields them.
Tokenizing happens here, before any clock starts.
"""
from __future__ import annotations

import gc
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from bench.config import Config
from decoding import BASELINE, METHODS
from engines import engine_options, make_engine, needs_weights, options_text
from metrics.memory import is_out_of_memory
from metrics.quality import against_baseline, mark_divergence
from metrics.rows import add_speedups, base_row, one_line
from models.loading import load_models, tokenizer_models
from models.prompts import tokenize_prompts
from models.variants import variants
from scenarios import scenario_for
from scenarios.context import Progress, ScenarioContext, Stopped
from store import archive
from store.requests import append_requests


@dataclass
class RowDone:
    row: dict
    outputs: list = field(default_factory=list)


def points(config: Config) -> list:
    return scenario_for(config).points(config)


def total_rows(config: Config) -> int:
    return len(variants(config)) * len(config.engine) * len(points(config))


@dataclass
class CallProgress(Progress):
    """Progress that also counts the variant's repetitions and calls, measured and planned (0 when the scenario
    has no fixed calls, as under load): rows of a variant finish together, so rows alone say nothing till the end."""
    repetitions_done: int = 0
    repetitions_planned: int = 0
    calls_done: int = 0
    calls_planned: int = 0


def planned_work(jobs: list, fewest: int) -> tuple[int, int, int, int]:
    """(repetitions done, planned, calls done, planned) of a variant's jobs; a job still active past its fewest
    repetitions (target_ci) plans one more."""
    live = [j for j in jobs if j.row.get("status", "ok") == "ok" or j.repetitions]
    reps = [max(fewest, j.repetitions + bool(getattr(j, "active", False))) for j in live]
    per_rep = [len(getattr(j, "units", ()) or ()) for j in live]
    return (sum(j.repetitions for j in live), sum(reps), sum(len(j.calls) for j in live),
            sum(n * r for n, r in zip(per_rep, reps)))


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def run(config: Config, stop_event: threading.Event | None = None, run_id: str | None = None):
    """Yields Progress and RowDone events; every RowDone row is already appended to the CSV."""
    run_id = run_id or new_run_id()
    total, done = total_rows(config), 0
    once: dict = {}  # what a run measures or loads once: copy bandwidth, the unquantized reference model
    for quantization, attention in variants(config):
        yield Progress(f"loading {config.model} ({quantization}, {attention})", done, total, fraction=done / total)
        try:
            if not needs_weights(config.engine):  # every engine runs elsewhere: the tokenizer is all it needs here
                models = tokenizer_models(config.model, config.dtype, config.random_weights)
            else:
                models = load_models(
                    config.model, config.draft_model if config.needs_draft() else None, device=config.device,
                    dtype=config.dtype, quantization=quantization, quantize_draft=config.quantize_draft,
                    attention=attention, random_weights=config.random_weights)
        except Exception as e:  # a model that fails to load is recorded per row, and the run goes on
            for engine_name in config.engine:
                for point in points(config):
                    row = new_row(config, run_id, point, engine_name, quantization, attention, None)
                    row.update(status="oom" if is_out_of_memory(e) else "error",
                               error=one_line(f"model load failed: {e}"))
                    archive.append_row(config.results, row)
                    done += 1
                    yield RowDone(row)
            continue
        try:
            jobs = make_jobs(config, run_id, models, quantization, attention, stop_event, once)

            def progress(message, job, fraction, done=done, rows=len(jobs), jobs=jobs):
                return CallProgress(message, done, total, job.point.method, job.point.setting, job.repetitions + 1,
                                    config.repetition_range()[1], (done + fraction * rows) / total,
                                    *planned_work(jobs, config.repetition_range()[0]))

            try:
                yield from scenario_for(config).measure(jobs, progress)
            except Stopped:
                # Rows with at least one whole repetition are kept, saying how far they got; then stop.
                for row, outputs in finish(jobs, stopped=True):
                    yield RowDone(row, outputs)
                raise
            for row, outputs in finish(jobs):
                done += 1
                yield RowDone(row, outputs)
            del jobs
        finally:
            del models
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def make_jobs(config: Config, run_id: str, models, quantization: str, attention: str, stop_event, once: dict) -> list:
    """One job per engine x point of this variant, sharing what every row of the variant needs."""
    from pathlib import Path

    from metrics.quality import HELDOUT, perplexity

    if models.device.type == "cuda" and "bandwidth" not in once:
        from metrics.bandwidth import copy_bandwidth

        once["bandwidth"] = copy_bandwidth(models.device)
    prompts = tokenize_prompts(models.tokenizer, config)
    heldout = perplexity(models.target, models.tokenizer, Path(config.heldout_text or HELDOUT).read_text(),
                         getattr(models.target.config, "max_position_embeddings", None)) \
        if models.target is not None else float("nan")
    jobs = []
    for engine_name in config.engine:
        ctx = ScenarioContext(config, run_id, models, make_engine(engine_name, models, config), engine_name, prompts,
                              stop_event, once.get("bandwidth", float("nan")),
                              reference_model(config, models, quantization, once), heldout)
        scenario = scenario_for(config)
        jobs += [scenario.Job(ctx, p, new_row(config, run_id, p, engine_name, quantization, attention, models))
                 for p in points(config)]
    return jobs


def new_row(config: Config, run_id: str, point, engine_name: str, quantization: str, attention: str, models) -> dict:
    """A row's settings, its engine's own options included, so a figure always says how it was made."""
    row = base_row(config, run_id, point, engine_name, quantization, attention, models)
    row["engine_options"] = options_text(engine_options(engine_name, config))
    return row


def reference_model(config: Config, models, quantization: str, once: dict):
    """The unquantized, unmodified target that scores every text of the run (target_nll): the loaded target
    itself, or for a quantized variant a full-precision copy loaded once per run."""
    if quantization == "none":
        return models.target
    if "reference" not in once:
        once["reference"] = load_models(config.model, None, device=config.device, dtype=config.dtype,
                                        quantization="none", attention="sdpa",
                                        random_weights=config.random_weights).target
    return once["reference"]


def finish(jobs: list, stopped: bool = False):
    """Figures, paired speedups against the baseline row of the same engine, then the store; in point order."""
    if stopped:  # a repetition cut short would weigh its units unevenly: only whole ones count
        for job in jobs:
            job.calls = [c for c in job.calls if c.repetition < job.repetitions]
    finished = {id(job): scenario_for(job.ctx.config).finish(job) for job in jobs if not stopped or job.repetitions}
    baselines = {job.ctx.engine_name: job for job in jobs
                 if job.point.method == BASELINE and job.row["status"] == "ok" and job.calls}
    for job in jobs:
        if id(job) not in finished:
            continue
        outputs = finished[id(job)].outputs
        baseline = baselines.get(job.ctx.engine_name)
        add_speedups(job.row, job.calls, baseline.calls if baseline else None)
        if baseline and job.row["status"] == "ok":
            add_greedy_match(job, baseline, outputs)
        if stopped:
            planned = job.ctx.config.repetition_range()[0]
            job.row["notes"] = "; ".join(filter(None, [job.row["notes"], f"stopped after {job.repetitions} of "
                                                                         f"{planned} repetitions"]))
        # Requests, then texts, then the row: a kill in between leaves records no row claims, which readers skip.
        append_requests(job.ctx.config.results, job.row, finished[id(job)].requests)
        archive.append_result(job.ctx.config.results, job.row, outputs)
        yield job.row, outputs


def add_greedy_match(job, baseline, records: list[dict]) -> None:
    """How many sequences equal the baseline's greedy text, and where each text first differs; a lossless
    method below 1.0 gets a warning note."""
    job.row.update(against_baseline(job.calls, baseline.calls))
    mark_divergence(records, job.calls, baseline.calls, job.ctx.models.tokenizer)
    lossless = METHODS[job.point.method].drafts and not job.point.do_sample
    if lossless and job.row["greedy_match"] < 1.0:
        exact = job.row["dtype"] == "float32" and job.row["quantization"] == "none"
        why = ("a bug: in float32 without quantization it must be 1.0" if exact else
               f"expected with {job.row['quantization'] if job.row['quantization'] != 'none' else job.row['dtype']} "
               "weights, where the verify forward over several tokens rounds differently from one-token steps")
        job.row["notes"] = "; ".join(filter(None, [
            job.row["notes"], f"greedy_match {job.row['greedy_match']:.2f} below 1.0 for a lossless method: {why}"]))


def run_all(config: Config, stop_event: threading.Event | None = None) -> list[dict]:
    """Runs to the end and returns the rows (what tests and scripts usually want)."""
    return [e.row for e in run(config, stop_event) if isinstance(e, RowDone)]

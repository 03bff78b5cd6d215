"""The capacity search: the highest request rate an engine sustains within the SLOs, with a one-sided 95% bound.

Each search (one per method point and server command, on each engine) is a series of load rows, its probes,
decided as it goes, each measured exactly as a load point of scenarios/load.py (prepare, run_job, finish):

1. a synchronous probe (concurrency 1): if one request at a time misses the SLOs, nothing sustains them;
2. an open-loop probe at the throughput measured so far (the synchronous one's, at first), doubled while the
   rates keep meeting the SLOs;
3. bisection between the last rate that met them and the first that did not, until the bracket is within
   `capacity_tolerance` of the upper end, or `capacity_max_probes` is spent.

A probe meets the SLOs when the share of its requests within both targets (failed ones miss) reaches
`capacity_percentile` / 100 x `capacity_attainment` (metrics/capacity.py). Every probe is a row, its setting
"capacity probe k: rate=..."; the search's last row holds capacity_rps, capacity_rps_ci_low and capacity_probes.

With `capacity_by` "concurrency" the probes are closed loop instead: concurrency 1, doubled while the SLOs hold,
then integer bisection between the last concurrency that met them and the first that did not, until the two are
adjacent or the budget is spent ("capacity probe k: concurrency=N"; capacity_concurrency and its bound).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from decoding import METHODS
from metrics.capacity import attainment, attainment_interval, capacity, target_share
from metrics.serving import duration_s
from scenarios.context import check_stop
from scenarios.load import Job, LoadPoint, compare_greedy, finish, measure_one, pair_drafting  # noqa: F401
from scenarios.workload import Load

__all__ = ["Job", "finish", "measure", "points", "Search"]


@dataclass
class Probe:
    load: Load
    share: float
    low: float
    high: float
    throughput: float

    @property
    def rate(self) -> float:
        return self.load.rate


@dataclass
class Search:
    """The decisions of one search, apart from how a probe is run (so a test can feed it a simulated queue)."""

    target: float  # share of requests that must meet the SLOs
    tolerance: float
    max_probes: int
    server: int = -1
    servers: int = 0
    probes: list = field(default_factory=list)
    met: float = 0.0  # the highest open-loop rate that met the SLOs (0: none yet)
    missed: float = math.inf  # the lowest that did not
    by: str = "rate"  # or "concurrency": closed-loop probes, met and missed then concurrencies

    def next(self) -> Load | None:
        """The next probe's load point, or None when the search is over."""
        return self.next_concurrency() if self.by == "concurrency" else self.next_rate()

    def next_concurrency(self) -> Load | None:
        n = len(self.probes)
        if n >= self.max_probes or (n and not self.passed(self.probes[0])):
            return None
        if n == 0:
            level = 1
        elif math.isinf(self.missed):
            level = 2 * int(self.met)
        elif self.missed - self.met <= 1:
            return None
        else:
            level = int(self.met + self.missed) // 2
        return Load(concurrency=level, server=self.server, servers=self.servers)

    def next_rate(self) -> Load | None:
        n = len(self.probes)
        if n >= self.max_probes or (n and not self.passed(self.probes[0])):
            return None
        if n == 0:
            return Load(concurrency=1, server=self.server, servers=self.servers)
        if math.isinf(self.missed):
            peak = max((p.throughput for p in self.probes if p.throughput == p.throughput), default=0.0)
            rate = max(2 * self.met, peak) if self.met else peak
            if not rate > 0:
                return None
        elif self.missed - self.met <= self.tolerance * self.missed:
            return None
        else:
            rate = (self.met + self.missed) / 2
        return Load(rate=float(f"{rate:.3g}"), server=self.server, servers=self.servers)

    def passed(self, probe: Probe) -> bool:
        return probe.share == probe.share and probe.share >= self.target

    def add(self, load: Load, records: list, slo_ttft_ms: float, slo_tpot_ms: float, seed: int = 0) -> Probe:
        low, high = attainment_interval(records, slo_ttft_ms, slo_tpot_ms, seed=seed)
        span = duration_s(records) if records else math.nan
        throughput = sum(r.status == "ok" for r in records) / span if span == span and span > 0 else math.nan
        probe = Probe(load, attainment(records, slo_ttft_ms, slo_tpot_ms), low, high, throughput)
        self.probes.append(probe)
        if self.by == "concurrency":
            if self.passed(probe):
                self.met = max(self.met, load.concurrency)
            else:
                self.missed = min(self.missed, load.concurrency)
        elif load.rate:
            if self.passed(probe):
                self.met = max(self.met, load.rate)
            else:
                self.missed = min(self.missed, load.rate)
        return probe

    def result(self) -> dict:
        if self.by == "concurrency":
            best, low = capacity([(p.load.concurrency, p.share, p.low) for p in self.probes], self.target)
            return {"capacity_concurrency": float(best), "capacity_concurrency_ci_low": float(low),
                    "capacity_probes": len(self.probes)}
        best, low = capacity([(p.rate, p.share, p.low) for p in self.probes if p.rate], self.target)
        return {"capacity_rps": best, "capacity_rps_ci_low": low, "capacity_probes": len(self.probes)}

    def notes(self) -> list[str]:
        if self.probes and not self.passed(self.probes[0]):
            return ["capacity search: one request at a time already misses the SLOs, so the capacity is 0"]
        if self.by == "concurrency":
            if math.isinf(self.missed):
                return [f"capacity search: every concurrency probed met the SLOs; the capacity is at least "
                        f"{self.met:g}"]
            if self.missed - self.met > 1:
                return [f"capacity search: probe budget spent with the bracket at concurrency {self.met:g} to "
                        f"{self.missed:g}"]
            return []
        if math.isinf(self.missed):
            return [f"capacity search: every rate probed met the SLOs; the capacity is at least {self.met:g} req/s"]
        if self.missed - self.met > self.tolerance * self.missed:
            return [f"capacity search: probe budget spent with the bracket at {self.met:g} to {self.missed:g} req/s"]
        return []


def label(setting: str, k: int, load: Load) -> str:
    return f"{setting}, capacity probe {k}: {load.label}" if setting else f"capacity probe {k}: {load.label}"


def points(config) -> list[LoadPoint]:
    """Each search's first probe: every method point (one for a method sweeping batch sizes, which concurrency
    replaces) on every server command."""
    commands = list(config.server_command or [])
    servers = range(len(commands)) if commands else [-1]
    out = []
    for name in METHODS:
        if name not in config.methods:
            continue
        spec = METHODS[name]
        sweep = spec.points(config)[:1] if spec.sweeps_batch else spec.points(config)
        for p in sweep:
            for s in servers:
                load = Load(concurrency=1, server=s, servers=len(commands))
                out.append(LoadPoint(name, label("" if spec.sweeps_batch else p.setting, 1, load), 1, p.do_sample,
                                     p.call, p.overrides, p.params, load=load))
    return out


def new_search(config, load: Load) -> Search:
    return Search(target_share(config.capacity_percentile, config.capacity_attainment), config.capacity_tolerance,
                  config.capacity_max_probes, load.server, load.servers, by=getattr(config, "capacity_by", "rate"))


def fill(job: Job, search: Search, probe: Probe, k: int) -> None:
    job.row.update(capacity_probe=k, slo_attainment=probe.share, slo_attainment_ci_low=probe.low,
                   slo_attainment_ci_high=probe.high, capacity_target=search.target)


def measure(jobs: list[Job], progress):
    """Each search in turn, its probes measured as load points; a probe after the first is a new job, put into
    `jobs` right after the one before it, so the runner finishes and stores it with the others."""
    cache: dict = {}
    searches = sorted(jobs, key=lambda j: (j.ctx.engine_name, j.point.load.server))
    blank = {id(j): dict(j.row) for j in searches}
    try:
        for n, first in enumerate(searches):
            config = first.ctx.config
            search, job, k = new_search(config, first.point.load), first, 1
            base = first.point.setting.rsplit("capacity probe 1: ", 1)[0].rstrip(", ")
            while True:
                yield progress(f"{job.point.method} [{job.point.setting}] on {job.ctx.engine_name}", job,
                               min((n + k / (search.max_probes + 1)) / len(searches), 0.99))
                if not measure_one(job, cache):
                    break
                check_stop(job.ctx.stop_event)
                fill(job, search, search.add(job.point.load, job.records, config.slo_ttft_ms, config.slo_tpot_ms,
                                             seed=config.seed), k)
                load = search.next()
                if load is None:
                    break
                k += 1
                point = dataclasses.replace(job.point, setting=label(base, k, load), load=load)
                row = {**blank[id(first)], "setting": point.setting}
                nxt = Job(job.ctx, point, row)
                jobs.insert(jobs.index(job) + 1, nxt)
                job = nxt
            job.row.update(search.result())
            job.notes += search.notes()
    finally:
        for engine in {id(j.ctx.engine): j.ctx.engine for j in jobs}.values():
            if hasattr(engine, "close"):
                engine.close()
    compare_greedy(jobs)

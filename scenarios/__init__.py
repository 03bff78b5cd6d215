"""The scenarios axis: how work is offered to an engine. A scenario module has

    points(config) -> [Point]         the rows it will measure, per engine and model variant
    Job(ctx, point, row)              one row being measured
    measure(jobs, progress)           a generator of Progress that measures every job of one variant
    finish(job) -> Finished           fills job.row with figures; hands back its texts and request records

A scenario writes no file: the runner stores what `finish` hands back. Its own config keys are its `options`
(they become config keys, flags and form fields). Its module is imported only when a run uses it, so the
config and --help load no torch. To add one, write its module and add one line here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from scenarios import workload
from scenarios.workload import uses_load


@dataclass(frozen=True)
class Scenario:
    name: str
    help: str  # one line, for the docs
    module: str  # the module with points, Job, measure and finish
    options: dict = field(default_factory=dict)  # its own config keys: name -> decoding.options.option(...)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("per_call", "fixed calls: warm-up, then interleaved seeded repetitions of every row", "scenarios.per_call"),
    Scenario("load", "requests under load: Poisson/gamma arrivals or a fixed concurrency", "scenarios.load",
             workload.OPTIONS),
    # Its keys (capacity, capacity_*) are the load scenario's options: a search is load rows, decided as it goes.
    Scenario("capacity", "the highest request rate meeting the SLOs: load probes chosen by bisection", "scenarios.capacity"),
)}


def scenario_for(config) -> ModuleType:
    """A capacity search; load settings, or an engine that only serves, make a run a load run; otherwise fixed calls."""
    name = "capacity" if getattr(config, "capacity", False) else "load" if uses_load(config) else "per_call"
    return importlib.import_module(SCENARIOS[name].module)

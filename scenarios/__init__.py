"""The scenarios axis: how work is offered to an engine. A scenario module has

    points(config) -> [Point]         the rows it will measure, per engine and model variant
    Job(ctx, point, row)              one row being measured
    measure(jobs, progress)           a generator of Progress that measures every job of one variant
    finish(job) -> Finished           fills job.row with figures; hands back its texts and request records

A scenario writes no file: the runner stores what `finish` hands back.

To add one, write its module and add it here."""
from scenarios import load, per_call
from scenarios.workload import uses_load

SCENARIOS = {"per_call": per_call, "load": load}


def scenario_for(config):
    """Load settings, or an engine that only serves, make a run a load run; otherwise fixed calls."""
    return SCENARIOS["load" if uses_load(config) else "per_call"]

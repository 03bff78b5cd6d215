"""The scenarios axis: how work is offered to an engine. A scenario module has

    points(config) -> [Point]         the rows it will measure, per engine and model variant
    Job(ctx, point, row)              one row being measured
    measure(jobs, progress)           a generator of Progress that measures every job of one variant
    finish(job) -> outputs            fills job.row with figures, returns its texts

To add one, write its module and add it here."""
from scenarios import per_call

SCENARIOS = {"per_call": per_call}

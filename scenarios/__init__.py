"""The scenarios axis: how work is offered to an engine. Each scenario module has
`points(config) -> [Point]` and `measure(ctx, point, row)`, a generator that yields Progress and
returns the row's output records after filling the row. To add one, write its module and add it here."""
from scenarios import per_call

SCENARIOS = {"per_call": per_call}

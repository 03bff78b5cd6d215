from decoding.method import Method, Point
from decoding.nucleus import sampling
from decoding.standard import length
from decoding.types import Engine, Generation, Inputs, Probe, Request, SharedSettings


def batched(inputs: Inputs, settings: SharedSettings, engine: Engine, probe: Probe) -> Generation:
    """Several left-padded prompts in one call; greedy unless batched_do_sample asks for sampling."""
    extra = sampling(settings, inputs) if settings.batched_do_sample else {}
    return engine.generate(Request(inputs.input_ids, inputs.attention_mask, **length(settings), **extra), probe)


def points(config, name: str) -> list[Point]:
    return [Point(name, f"batch_size={b}", b, config.batched_do_sample) for b in config.batch_sizes]


METHOD = Method(
    "batched", "several prompts per call, left-padded, sweeping batch_sizes", "#f59e0b", batched, sweep=points,
    sweeps_batch=True)

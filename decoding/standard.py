from decoding.method import Method
from decoding.types import Engine, Generation, Inputs, Probe, Request, SharedSettings


def standard(inputs: Inputs, settings: SharedSettings, engine: Engine, probe: Probe) -> Generation:
    """Greedy decoding, one sequence at a time: the baseline every other method is compared with."""
    return engine.generate(Request(inputs.input_ids, inputs.attention_mask, **length(settings)), probe)


def length(settings: SharedSettings) -> dict:
    """Fixed output length by default, so every method decodes the same number of tokens."""
    minimum = 0 if settings.stop_at_eos else settings.max_new_tokens
    return {"max_new_tokens": settings.max_new_tokens, "min_new_tokens": minimum}


METHOD = Method(
    "standard", "greedy decoding, one sequence at a time (the baseline of every speedup)", "#64748b", standard,
    batch_one="use the 'batched' method for batch sizes > 1")

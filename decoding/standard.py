from decoding.types import Engine, Generation, Inputs, Probe, Request, Settings, UnsupportedSetting


def standard(inputs: Inputs, settings: Settings, engine: Engine, probe: Probe) -> Generation:
    """Greedy decoding, one sequence at a time: the baseline every other method is compared with."""
    if inputs.batch_size != 1:
        raise UnsupportedSetting("standard decodes one sequence at a time; use the 'batched' method for batch sizes > 1")
    return engine.generate(Request(inputs.input_ids, inputs.attention_mask, **length(settings)), probe)


def length(settings: Settings) -> dict:
    """Fixed output length by default, so every method decodes the same number of tokens."""
    minimum = 0 if settings.stop_at_eos else settings.max_new_tokens
    return {"max_new_tokens": settings.max_new_tokens, "min_new_tokens": minimum}

from decoding.standard import length
from decoding.types import Engine, Generation, Inputs, Probe, Request, Settings, UnsupportedSetting


def nucleus(inputs: Inputs, settings: Settings, engine: Engine, probe: Probe) -> Generation:
    """Top-p sampling with temperature (top_k 0 = pure nucleus), seeded per prompt and completion."""
    if inputs.batch_size != 1:
        raise UnsupportedSetting("nucleus samples one sequence at a time; use 'batched' with batched_do_sample for batches")
    return engine.generate(Request(
        inputs.input_ids, inputs.attention_mask, **length(settings),
        do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
        seed=item_seed(settings.seed, inputs),
    ), probe)


def item_seed(seed: int, inputs: Inputs) -> int:
    """Each completion gets its own stream, and the same one in every run and repetition."""
    return seed * 1_000_003 + inputs.prompt_indices[0] * 1009 + inputs.completion_indices[0]

from decoding.nucleus import item_seed
from decoding.standard import length
from decoding.types import Engine, Generation, Inputs, Probe, Request, Settings


def batched(inputs: Inputs, settings: Settings, engine: Engine, probe: Probe) -> Generation:
    """Several left-padded prompts in one call; greedy unless batched_do_sample asks for sampling."""
    sampling = {}
    if settings.batched_do_sample:
        sampling = dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
                        top_k=settings.top_k, seed=item_seed(settings.seed, inputs))
    return engine.generate(Request(inputs.input_ids, inputs.attention_mask, **length(settings), **sampling), probe)

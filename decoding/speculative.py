from decoding.nucleus import item_seed
from decoding.standard import length
from decoding.types import Engine, Generation, Inputs, Probe, Request, Settings, UnsupportedSetting


def speculative(inputs: Inputs, settings: Settings, engine: Engine, probe: Probe, do_sample: bool = False) -> Generation:
    """The draft model proposes num_draft_tokens tokens, the target verifies them in one forward.

    Greedy is lossless (token-identical to standard); sampling keeps the target's distribution.
    """
    if inputs.batch_size != 1:
        raise UnsupportedSetting(
            f"speculative decoding runs batch size 1 only (a transformers limit), got {inputs.batch_size}; "
            "use 'batched' to measure batching")
    sampling = {}
    if do_sample:
        sampling = dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
                        top_k=settings.top_k, seed=item_seed(settings.seed, inputs))
    return engine.generate(Request(
        inputs.input_ids, inputs.attention_mask, **length(settings), **sampling,
        use_draft=True, num_draft_tokens=settings.num_draft_tokens,
    ), probe)

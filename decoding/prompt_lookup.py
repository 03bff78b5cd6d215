from decoding.standard import length
from decoding.types import Engine, Generation, Inputs, Probe, Request, Settings, UnsupportedSetting


def prompt_lookup(inputs: Inputs, settings: Settings, engine: Engine, probe: Probe) -> Generation:
    """Drafts by copying the continuation of the latest n-gram match in the prompt; greedy, lossless."""
    if inputs.batch_size != 1:
        raise UnsupportedSetting(f"prompt_lookup runs batch size 1 only, got {inputs.batch_size}")
    return engine.generate(Request(
        inputs.input_ids, inputs.attention_mask, **length(settings),
        prompt_lookup_num_tokens=settings.prompt_lookup_num_tokens,
    ), probe)

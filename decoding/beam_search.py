from decoding.standard import length
from decoding.types import Engine, Generation, Inputs, Probe, Request, Settings, UnsupportedSetting


def beam_search(inputs: Inputs, settings: Settings, engine: Engine, probe: Probe) -> Generation:
    """Beam search returning the num_return_sequences best beams of each prompt."""
    if settings.num_return_sequences > settings.num_beams:
        raise UnsupportedSetting(
            f"num_return_sequences ({settings.num_return_sequences}) must be at most num_beams ({settings.num_beams})")
    if inputs.batch_size != 1:
        raise UnsupportedSetting("beam_search runs one prompt at a time")
    return engine.generate(Request(
        inputs.input_ids, inputs.attention_mask, **length(settings),
        num_beams=settings.num_beams, num_return_sequences=settings.num_return_sequences,
        length_penalty=settings.length_penalty, early_stopping=settings.early_stopping,
    ), probe)

from decoding.method import Method, Point
from decoding.standard import length
from decoding.types import Engine, Generation, Inputs, Probe, Request, SharedSettings, UnsupportedSetting


def beam_search(inputs: Inputs, settings: SharedSettings, engine: Engine, probe: Probe) -> Generation:
    """Beam search returning the num_return_sequences best beams of each prompt."""
    if settings.num_return_sequences > settings.num_beams:
        raise UnsupportedSetting(
            f"num_return_sequences ({settings.num_return_sequences}) must be at most num_beams ({settings.num_beams})")
    return engine.generate(Request(
        inputs.input_ids, inputs.attention_mask, **length(settings),
        num_beams=settings.num_beams, num_return_sequences=settings.num_return_sequences,
        length_penalty=settings.length_penalty, early_stopping=settings.early_stopping,
    ), probe)


def points(config, name: str) -> list[Point]:
    return [Point(name, f"beams={config.num_beams},return={config.num_return_sequences}",
                  params=dict(num_beams=config.num_beams, num_return_sequences=config.num_return_sequences))]


def check(config) -> str | None:
    if config.num_return_sequences > config.num_beams:
        return (f"config key 'num_return_sequences' ({config.num_return_sequences}) must be at most "
                f"num_beams ({config.num_beams})")
    return None


METHOD = Method(
    "beam_search", "beam search returning several sequences per prompt", "#8b5cf6", beam_search, sweep=points,
    batch_one="it returns num_return_sequences beams of one prompt per call", engines=("hf", "hf_compiled"),
    check=check)

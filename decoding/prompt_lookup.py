from decoding.method import Method, Point
from decoding.standard import length
from decoding.types import Engine, Generation, Inputs, Probe, Request, SharedSettings


def prompt_lookup(inputs: Inputs, settings: SharedSettings, engine: Engine, probe: Probe) -> Generation:
    """Drafts by copying the continuation of the latest n-gram match in the prompt; greedy, lossless."""
    return engine.generate(Request(
        inputs.input_ids, inputs.attention_mask, **length(settings),
        prompt_lookup_num_tokens=settings.prompt_lookup_num_tokens,
    ), probe)


def points(config, name: str) -> list[Point]:
    return [Point(name, f"lookup={config.prompt_lookup_num_tokens}",
                  params=dict(num_draft_tokens=config.prompt_lookup_num_tokens))]


METHOD = Method(
    "prompt_lookup", "n-gram drafts copied from the prompt, verified like speculative decoding", "#ec4899",
    prompt_lookup, sweep=points, drafts=True, batch_one="prompt lookup drafts for one sequence at a time")

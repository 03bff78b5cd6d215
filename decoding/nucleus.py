from decoding.method import Method, one_point
from decoding.standard import length
from decoding.types import Engine, Generation, Inputs, Probe, Request, SharedSettings


def nucleus(inputs: Inputs, settings: SharedSettings, engine: Engine, probe: Probe) -> Generation:
    """Top-p sampling with temperature (top_k 0 = pure nucleus), seeded per prompt and completion."""
    return engine.generate(Request(
        inputs.input_ids, inputs.attention_mask, **length(settings), **sampling(settings, inputs)), probe)


def sampling(settings: SharedSettings, inputs: Inputs) -> dict:
    """The sampling part of a Request: temperature, top-p and top-k, and a seed of this item's own."""
    return dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
                seed=item_seed(settings.seed, inputs))


def item_seed(seed: int, inputs: Inputs) -> int:
    """Each completion gets its own stream, and the same one in every run and repetition."""
    return seed * 1_000_003 + inputs.prompt_indices[0] * 1009 + inputs.completion_indices[0]


METHOD = Method(
    "nucleus", "top-p sampling with temperature and optional top-k, seeded per completion", "#0ea5e9", nucleus,
    sweep=one_point("top_p={top_p},T={temperature}", do_sample=True),
    batch_one="use 'batched' with batched_do_sample for batches")

from decoding.method import Method, one_point
from decoding.nucleus import item_seed
from decoding.options import option
from decoding.standard import length
from decoding.types import Engine, Generation, Inputs, Probe, Request, SharedSettings


def typical(inputs: Inputs, settings: SharedSettings, engine: Engine, probe: Probe) -> Generation:
    """Locally typical sampling (Meister et al., 2022): keeps the tokens whose surprisal is closest to the
    distribution's entropy, up to typical_p of the mass, with temperature; no top-p or top-k cut."""
    return engine.generate(Request(
        inputs.input_ids, inputs.attention_mask, **length(settings),
        do_sample=True, temperature=settings.temperature, seed=item_seed(settings.seed, inputs),
        logits_options=(("typical_p", settings.typical_p),),
    ), probe)


METHOD = Method(
    "typical", "typical-p sampling with temperature, seeded per completion (transformers' typical_p)", "#84cc16",
    typical, sweep=one_point("typical_p={typical_p},T={temperature}", do_sample=True),
    batch_one="use 'batched' with batched_do_sample for batches", engines=("hf", "hf_compiled"),
    options={"typical_p": option(0.9, "probability mass typical sampling keeps (1.0 keeps every token)", "float",
                                 lo=1e-9, hi=1.0, label="Typical-p mass (typical)")})

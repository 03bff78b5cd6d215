from decoding.method import Method, Point
from decoding.nucleus import sampling
from decoding.standard import length
from decoding.types import Engine, Generation, Inputs, Probe, Request, SharedSettings


def speculative(inputs: Inputs, settings: SharedSettings, engine: Engine, probe: Probe, do_sample: bool = False) -> Generation:
    """The draft model proposes num_draft_tokens tokens, the target verifies them in one forward.

    Greedy is lossless (token-identical to standard); sampling keeps the target's distribution.
    """
    extra = sampling(settings, inputs) if do_sample else {}
    return engine.generate(Request(
        inputs.input_ids, inputs.attention_mask, **length(settings), **extra,
        use_draft=True, num_draft_tokens=settings.num_draft_tokens,
    ), probe)


def points(config, name: str) -> list[Point]:
    """One row per mode and k; num_draft_tokens is one k or a list of them, and each call gets a single k."""
    ks = config.num_draft_tokens if isinstance(config.num_draft_tokens, list) else [config.num_draft_tokens]
    return [Point(name, f"{mode},k={k}", 1, mode == "sampling",
                  call=dict(do_sample=mode == "sampling"), overrides=dict(num_draft_tokens=k),
                  params=dict(num_draft_tokens=k, draft_model=config.draft_model))
            for mode in config.speculative_modes for k in ks]


METHOD = Method(
    "speculative", "a draft model proposes k tokens, the target verifies them in one forward", "#10b981",
    speculative, sweep=points, needs_draft=True, drafts=True,
    batch_one="a transformers limit; use 'batched' to measure batching")

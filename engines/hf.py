"""The `hf` engine: every method through transformers' `generate` (dynamic KV cache, eager)."""
from __future__ import annotations

import inspect

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation import logits_process
from transformers.generation.logits_process import MinNewTokensLengthLogitsProcessor

from decoding.types import DraftStats, Generation, Probe, Request, UnsupportedSetting, tokens_exist
from metrics.drafts import Round, draft_stats
from metrics.prediction import seconds_per_step


class ProbeCriteria(StoppingCriteria):
    """`generate` calls this once per step after appending tokens, beam search and assisted generation
    included: its first call marks the first new token, and each call can end the run early."""

    def __init__(self, probe: Probe, prompt_length: int):
        self.probe = probe
        self.prompt_length = prompt_length
        self.seen_first = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        if not self.seen_first:
            self.seen_first = True
            self.probe.first_token()
        tokens_exist(self.probe, input_ids.shape[1] - self.prompt_length)
        stop = self.probe.should_stop()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


# The processors `generate` appends for sampling. transformers 5.x passes the target's whole list, these included, to
# the assistant's `generate`, which appends them once more from the same config: the drafts were sampled at
# temperature T twice (and top-p twice), from a sharper q than the target's p, so even the target as its own draft
# was accepted about 60% of the time (Qwen3 at T=0.7, top_p=0.9) instead of 100%. The candidate generator gets the
# list without them; the assistant's own `generate` still adds them once, from the same config.
WARPERS = tuple(getattr(logits_process, name) for name in (
    "TemperatureLogitsWarper", "TopHLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper",
    "TypicalLogitsWarper", "EpsilonLogitsWarper", "EtaLogitsWarper") if hasattr(logits_process, name))


class NaturalEos(MinNewTokensLengthLogitsProcessor):
    """transformers' EOS mask for min_new_tokens that also notes, per new-token index, whether the target's unmasked
    choice (the argmax of the logits it is given) was EOS: where the run would have ended had its length not been
    forced. `generate` applies it to the target's logits at every verified position; DraftCounter switches it off
    while the draft runs, which applies the same list."""

    def __init__(self, prompt_length: int, min_new_tokens: int, eos_token_ids, device):
        super().__init__(prompt_length, min_new_tokens, list(eos_token_ids), device=device)
        self.active = True
        self.seen: dict[int, torch.Tensor] = {}  # new-token index -> (B,) bool on the device, latest computation

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.active:
            self.seen[input_ids.shape[1] - self.prompt_length_to_skip] = torch.isin(
                scores.argmax(dim=-1), self.eos_token_id.to(scores.device))
        return super().__call__(input_ids, scores)


class DraftCounter:
    """Counts each round's drafts and accepted prefix on the candidate generator that `generate` builds
    (transformers reports no acceptance figures), and gives that generator its processors without the duplicated
    sampling warpers."""

    def __init__(self, prompt_length: int, natural: NaturalEos | None):
        self.prompt_length, self.natural = prompt_length, natural
        self.rounds: list[Round] = []
        self.forwards = 0  # target forwards, rounds without drafts included
        self.drafted_all = 0
        self.confirmed: dict[int, torch.Tensor] = {}  # natural-EOS flags of the tokens the target really produced
        self._pending = (0, 0)

    def wrap(self, generator):
        if hasattr(generator, "assistant_model") and getattr(generator, "logits_processor", None) is not None:
            generator.logits_processor = [p for p in generator.logits_processor if not isinstance(p, WARPERS)]
        get_candidates, update = generator.get_candidates, generator.update_candidate_strategy

        def counted_get_candidates(input_ids, *args, **kwargs):
            if self.natural is not None:
                self.natural.active = False  # the draft's logits say nothing about where the target would stop
            try:
                candidates, logits = get_candidates(input_ids, *args, **kwargs)
            finally:
                if self.natural is not None:
                    self.natural.active = True
            self._pending = (input_ids.shape[1] - self.prompt_length, candidates.shape[1] - input_ids.shape[1])
            return candidates, logits

        def counted_update(input_ids, scores, num_matches):
            start, offered = self._pending
            accepted = int(num_matches)  # an int in transformers 5.x; the loop has synced on it already
            self.forwards += 1
            self.drafted_all += offered
            if offered:
                self.rounds.append(Round(start, offered, accepted))
            if self.natural is not None:
                # The accepted drafts and the target's own token: positions verified on the sequence that was kept.
                for i in range(start, start + accepted + 1):
                    if i in self.natural.seen:
                        self.confirmed[i] = self.natural.seen[i]
            return update(input_ids, scores, num_matches)

        generator.get_candidates = counted_get_candidates
        generator.update_candidate_strategy = counted_update
        return generator

    def natural_eos(self) -> int | None:
        """The first new-token index at which the target's own choice was EOS, or None."""
        if not self.confirmed:
            return None
        positions = sorted(self.confirmed)
        hits = torch.stack([self.confirmed[i].reshape(-1)[0] for i in positions]).nonzero().flatten().tolist()
        return positions[hits[0]] if hits else None

    def counts(self, k: int) -> DraftStats:
        return draft_stats(self.rounds, k, self.natural_eos(), self.forwards, self.drafted_all)


class HFEngine:
    name = "hf"

    def __init__(self, models):
        self.models = models

    def generate(self, request: Request, probe: Probe) -> Generation:
        m = self.models
        kwargs = {}
        counter = None
        if request.use_draft:
            if m.draft is None:
                raise UnsupportedSetting("speculative decoding needs a draft model: set draft_model")
            if request.input_ids.shape[0] != 1:
                raise UnsupportedSetting("speculative decoding on the hf engine runs batch size 1 only (a transformers limit)")
            # transformers reads the draft length from the draft's own generation config.
            m.draft.generation_config.num_assistant_tokens = request.num_draft_tokens
            m.draft.generation_config.num_assistant_tokens_schedule = "constant"
            m.draft.generation_config.assistant_confidence_threshold = 0.0
            kwargs["assistant_model"] = m.draft
        min_new_tokens = request.min_new_tokens
        if request.use_draft or request.prompt_lookup_num_tokens:
            natural = None
            if request.min_new_tokens > 0:
                # Our own EOS mask in place of the one generate would build, so that it can also note where the
                # target would have stopped (acceptance is counted before that point, see metrics/drafts.py).
                natural = NaturalEos(request.input_ids.shape[1], request.min_new_tokens, m.eos_token_ids,
                                     request.input_ids.device)
                kwargs["logits_processor"] = LogitsProcessorList([natural])
                min_new_tokens = None
            counter = DraftCounter(request.input_ids.shape[1], natural)
        config = GenerationConfig(
            max_new_tokens=request.max_new_tokens, min_new_tokens=min_new_tokens,
            do_sample=request.do_sample, num_beams=request.num_beams,
            num_return_sequences=request.num_return_sequences,
            length_penalty=request.length_penalty, early_stopping=request.early_stopping,
            pad_token_id=m.pad_token_id, eos_token_id=list(m.eos_token_ids),
            prompt_lookup_num_tokens=request.prompt_lookup_num_tokens or None,
            # Set explicitly so a Hub generation_config (Qwen3 samples by default) cannot leak in.
            temperature=request.temperature if request.do_sample else None,
            top_p=request.top_p if request.do_sample else None,
            top_k=request.top_k if request.do_sample else None,
            **dict(request.logits_options),
        )
        if request.do_sample:
            torch.manual_seed(request.seed)
        target = m.target
        if counter is not None:
            original = type(target)._get_candidate_generator
            target._get_candidate_generator = lambda *a, **k: counter.wrap(original(target, *a, **k))
        try:
            with torch.inference_mode():
                out = target.generate(
                    input_ids=request.input_ids, attention_mask=request.attention_mask,
                    generation_config=config, stopping_criteria=StoppingCriteriaList([ProbeCriteria(probe, request.input_ids.shape[1])]),
                    **kwargs)
        finally:
            if counter is not None:
                del target._get_candidate_generator
        sequences = out[:, request.input_ids.shape[1]:]
        if counter is None:
            return Generation(sequences, m.eos_token_ids, engine=self.name)
        k = request.num_draft_tokens if request.use_draft else request.prompt_lookup_num_tokens
        return Generation(sequences, m.eos_token_ids, engine=self.name, drafts=counter.counts(k))

    def step_time_ratio(self, inputs, *, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                        top_k: int = 0) -> float:
        """c of the speculative cost model (metrics/prediction.py): the draft's single-token decode step time / the
        target's, at the length of the first prompt of `inputs`. Timed synchronized, outside any measured call.

        A step is the model's forward with its dynamic cache, as `generate` runs it; logits processing happens
        outside the forward and is left out (the sampling settings are accepted for the fast engine's sake)."""
        m = self.models
        if m.draft is None:
            raise UnsupportedSetting("step_time_ratio needs a draft model; prompt lookup drafts cost nothing (c = 0)")
        ids = inputs.input_ids[:1][:, inputs.attention_mask[0].bool()]  # (1, L) the real prompt tokens
        with torch.inference_mode():
            return (seconds_per_step(*decode_steps(m.draft, ids), m.device)
                    / seconds_per_step(*decode_steps(m.target, ids), m.device))


def decode_steps(model, ids: torch.Tensor):
    """After a prefill of ids (1, L): a greedy single-token step of `model`, and a reset back to the prefill."""
    # transformers 5.x names the cache argument `cache` (`past_key_values` before, deprecated since).
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=ids, use_cache=True)
    cache, first = getattr(out, name), out.logits[:, -1:].argmax(dim=-1)  # first: (1, 1)
    state = {"token": first}

    def step():
        logits = model(input_ids=state["token"], use_cache=True, **{name: cache}).logits
        state["token"] = logits[:, -1:].argmax(dim=-1)

    def reset():
        extra = cache.get_seq_length() - ids.shape[1]
        if extra > 0:
            cache.crop(-extra)  # transformers 5.x: a negative count removes that many tokens
        state["token"] = first

    return step, reset

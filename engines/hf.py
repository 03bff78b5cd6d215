"""The `hf` engine: every method through transformers' `generate` (dynamic KV cache, eager)."""
from __future__ import annotations

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from decoding.types import Generation, Probe, Request, UnsupportedSetting


class ProbeCriteria(StoppingCriteria):
    """`generate` calls this once per step after appending tokens, beam search and assisted generation
    included: its first call marks the first new token, and each call can end the run early."""

    def __init__(self, probe: Probe):
        self.probe = probe
        self.seen_first = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        if not self.seen_first:
            self.seen_first = True
            self.probe.first_token()
        stop = self.probe.should_stop()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class DraftCounter:
    """Counts what the candidate generator proposed and what the target accepted, round by round.

    transformers reports no acceptance figures, so we wrap the candidate generator it builds."""

    def __init__(self):
        self.drafted: list = []
        self.accepted: list = []

    def wrap(self, generator):
        get_candidates, update = generator.get_candidates, generator.update_candidate_strategy

        def counted_get_candidates(input_ids, *args, **kwargs):
            candidates, logits = get_candidates(input_ids, *args, **kwargs)
            self.drafted.append(candidates.shape[1] - input_ids.shape[1])
            return candidates, logits

        def counted_update(input_ids, scores, num_matches):
            self.accepted.append(num_matches)  # may be a device tensor: summed after the timed region
            return update(input_ids, scores, num_matches)

        generator.get_candidates = counted_get_candidates
        generator.update_candidate_strategy = counted_update
        return generator

    def totals(self) -> tuple[int, int, int]:
        return sum(self.drafted), int(sum(int(a) for a in self.accepted)), len(self.accepted)


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
        if request.use_draft or request.prompt_lookup_num_tokens:
            counter = DraftCounter()
        config = GenerationConfig(
            max_new_tokens=request.max_new_tokens, min_new_tokens=request.min_new_tokens,
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
                    generation_config=config, stopping_criteria=StoppingCriteriaList([ProbeCriteria(probe)]),
                    **kwargs)
        finally:
            if counter is not None:
                del target._get_candidate_generator
        sequences = out[:, request.input_ids.shape[1]:]
        drafted, accepted, rounds = counter.totals() if counter else (0, 0, 0)
        return Generation(sequences, m.eos_token_ids, drafted, accepted, rounds, self.name)

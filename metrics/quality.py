"""What the methods write, beside how fast: computed after the clocks stop, never inside a measured call.

- target_nll: mean negative log-likelihood per new token that the reference model (the unquantized,
  unmodified target) gives the generated text, in one teacher-forced forward per sequence. One scale for
  greedy, sampled, beam, quantized and speculative text: lower is text the model finds more likely.
- distinct_2 / repetition_rate: the usual degeneration measures of a sequence: the share of its bigrams
  that are distinct, and the share of its 4-grams that repeat an earlier one.
- heldout_ppl: the (possibly quantized) target's perplexity on a fixed held-out text, so the cost of
  4-bit and 8-bit weights is a number beside their speed and memory.
- greedy_match / first_divergence (against the baseline row): the share of sequences token-identical to
  standard greedy's for the same prompt and completion, and the median first differing token of the others.
  Greedy speculative decoding and prompt lookup are lossless: anything below 1.0 there in float32 is a bug.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from metrics.stats import median

HELDOUT = Path(__file__).resolve().parent / "heldout.txt"
NAN = float("nan")


def distinct_2(tokens: list[int]) -> float:
    """Distinct bigrams / bigrams; NaN for a sequence too short to have one."""
    pairs = list(zip(tokens, tokens[1:]))
    return len(set(pairs)) / len(pairs) if pairs else NAN


def repetition_rate(tokens: list[int], n: int = 4) -> float:
    """4-grams that repeat an earlier 4-gram of the sequence / all 4-grams; NaN when there is none."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return NAN
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (a length difference counts at the shorter's end); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def sequences(calls) -> dict[tuple, list[list[int]]]:
    """(prompt, completion) -> its new-token lists (several for beam search), from the first repetition."""
    out: dict[tuple, list[list[int]]] = {}
    for call in calls:
        if call.repetition:
            continue
        gen, unit = call.generation, call.unit
        per_input = len(gen.new_tokens) // unit.batch_size
        rows = gen.sequences.tolist()
        for i, n in enumerate(gen.new_tokens):
            key = (unit.prompt_indices[i // per_input], unit.completion_indices[i // per_input])
            out.setdefault(key, []).append(rows[i][:n])
    return out


def token_nll(model, prompt_ids: list[int], new_ids: list[int]) -> tuple[float, int]:
    """(summed negative log-likelihood of new_ids given the prompt, token count), one forward, no cache."""
    import torch

    if not new_ids:
        return 0.0, 0
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + new_ids], device=device)  # (1, P + N)
    with torch.inference_mode():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1].float()  # (N, V): each predicts the next token
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(1, torch.tensor(new_ids, device=device)[:, None])  # (N, 1)
    return float(-picked.sum()), len(new_ids)


def perplexity(model, tokenizer, text: str, context: int | None = None) -> float:
    """exp(mean NLL per token) of `text`, in windows that fit the model's context."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    window = min(context or 1024, 1024)
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window + 1]
        nll, n = token_nll(model, chunk[:1], chunk[1:])
        total, count = total + nll, count + n
    return math.exp(total / count) if count else NAN


class Quality:
    columns = ("target_nll", "distinct_2", "repetition_rate", "heldout_ppl")
    help = {
        "target_nll": "mean negative log-likelihood per new token that the unquantized, unmodified target gives the row's "
                      "texts (first repetition), one teacher-forced forward per sequence after the clocks stop: one scale "
                      "for greedy, sampled, beam, quantized and speculative text (lower = text the model finds likelier)",
        **dict.fromkeys(("distinct_2", "repetition_rate"),
                        "degeneration: median over sequences of the share of distinct bigrams, and of 4-grams repeating an "
                        "earlier one"),
        "heldout_ppl": "this variant's target (quantized as loaded) on a fixed held-out text (`heldout_text`, or a short "
                       "bundled text): the cost of 4-bit and 8-bit weights",
    }

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        texts = sequences(calls)
        flat = [seq for seqs in texts.values() for seq in seqs]
        out = {"distinct_2": median([distinct_2(s) for s in flat]),
               "repetition_rate": median([repetition_rate(s) for s in flat]),
               "target_nll": NAN, "heldout_ppl": getattr(ctx, "heldout_ppl", NAN) if ctx is not None else NAN}
        reference = getattr(ctx, "reference", None) if ctx is not None else None
        if reference is not None and flat:
            total, count = 0.0, 0
            for (prompt, _), seqs in texts.items():
                for seq in seqs:
                    nll, n = token_nll(reference, ctx.prompts[prompt], seq)
                    total, count = total + nll, count + n
            out["target_nll"] = total / count if count else NAN
        return out


def against_baseline(calls, baseline_calls) -> dict:
    """greedy_match and first_divergence of these sequences against the baseline's for the same items."""
    mine, base = sequences(calls), sequences(baseline_calls)
    matches, divergences = [], []
    for key, seqs in mine.items():
        if key not in base:  # a completion added to fill a batch has no baseline twin
            continue
        for seq in seqs:
            at = first_difference(seq, base[key][0])
            matches.append(at is None)
            if at is not None:
                divergences.append(at)
    return {"greedy_match": sum(matches) / len(matches) if matches else NAN,
            "first_divergence": median(divergences) if divergences else NAN}


def mark_divergence(records: list[dict], calls, baseline_calls, tokenizer) -> None:
    """Gives each text record its own comparison with the baseline's greedy text, for the Samples page:
    `greedy_match` (bool), and for a differing text `diverges_at` (token index) with `diverges_chars`
    ([start, end) of that token in the text)."""
    mine, base = sequences(calls), sequences(baseline_calls)
    for rec in records:
        key = (rec["prompt_index"], rec["completion_index"])
        seqs = mine.get(key)
        if key not in base or not seqs or rec["sequence_index"] >= len(seqs):
            continue
        seq = seqs[rec["sequence_index"]]
        at = first_difference(seq, base[key][0])
        rec["greedy_match"] = at is None
        if at is not None:
            rec["diverges_at"] = at
            rec["diverges_chars"] = token_span(rec["text"], seq, at, tokenizer)


def token_span(text: str, seq: list[int], at: int, tokenizer) -> list[int]:
    """Characters of `text` that token `at` of `seq` decodes to. A prefix that does not decode to a prefix of
    the text (a token ending inside a UTF-8 character) falls back to the nearest character boundary."""
    def chars(n: int) -> int:
        prefix = tokenizer.decode(seq[:n], skip_special_tokens=True)
        return len(prefix) if text.startswith(prefix) else len(os.path.commonprefix([prefix, text]))
    start = chars(at)
    end = max(chars(at + 1), min(start + 1, len(text)))
    return [start, end]

"""Real tokens per sequence: prompt tokens without padding, new tokens up to and including EOS."""
from __future__ import annotations


class TokenCounts:
    columns = ("prompt_tokens", "new_tokens")
    help = dict.fromkeys(columns, "mean real prompt tokens and new tokens per sequence (padding never counted)")

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        prompt, new = [], []
        for call in calls:
            prompt += call.unit.attention_mask.sum(dim=1).tolist()
            new += call.generation.new_tokens
        return {"prompt_tokens": sum(prompt) / len(prompt), "new_tokens": sum(new) / len(new)}

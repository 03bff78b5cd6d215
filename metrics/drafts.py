"""Acceptance of drafted tokens, from the counts the engines' instrumentation puts in each Generation."""
from __future__ import annotations


class DraftCounts:
    columns = ("drafted_tokens", "accepted_tokens", "acceptance_rate", "mean_accepted_tokens")

    @staticmethod
    def summarize(calls) -> dict:
        drafted = sum(call.generation.drafted for call in calls)
        accepted = sum(call.generation.accepted for call in calls)
        rounds = sum(call.generation.verify_steps for call in calls)
        return {
            "drafted_tokens": drafted, "accepted_tokens": accepted,
            "acceptance_rate": accepted / drafted if drafted else float("nan"),
            # Tokens per target verification forward, the bonus token included (Spec-Bench's tau).
            "mean_accepted_tokens": (accepted + rounds) / rounds if rounds else float("nan"),
        }

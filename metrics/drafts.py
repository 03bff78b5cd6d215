"""Acceptance of drafted tokens: what counts as a round (one definition for every engine), and a row's figures
from the counts the engines' instrumentation puts in each Generation (its DraftStats, built by `draft_stats`).

The definitions, shared by both engines so their figures mean the same thing:

- A round is one target forward that verified at least one draft token. The target's own first token from a
  prefill that verified nothing (the fast engine) is not a round; on the hf engine the first round's drafts are
  verified in the prefill forward, so that forward is a round. Forwards that verified nothing (the drafter had no
  match, or no room was left before max_new_tokens) are not rounds either.
- tau (mean_accepted_tokens) = (accepted + rounds) / rounds: tokens per round, the target's own token included.
- Position i of a round (1-based) is offered when the round proposed at least i drafts, and accepted when the target
  kept at least i of them; acceptance at position i = rounds accepting it / rounds offering it.
- With a forced length (min_new_tokens > 0), only drafts for tokens before the first natural EOS count: the first
  new token where the target's unforced choice (the argmax of its logits before EOS is masked) was EOS. Later tokens
  exist only because EOS was masked, so agreeing on them says nothing about the draft.
"""
from __future__ import annotations

from typing import NamedTuple

from decoding.types import DraftStats


class Round(NamedTuple):
    start: int  # new-token index (0-based) the round's first draft proposes
    offered: int  # drafts proposed
    accepted: int  # of those, the target's accepted prefix


class RoundCounts(NamedTuple):
    drafted: int = 0
    accepted: int = 0
    rounds: int = 0
    accepted_by_position: tuple[int, ...] = ()  # rounds whose draft i + 1 was accepted
    offered_by_position: tuple[int, ...] = ()  # rounds that proposed a draft i + 1


def count_rounds(rounds, k: int, natural_eos: int | None = None) -> RoundCounts:
    """The counts of a call's rounds, cut before its first natural EOS (a new-token index; None: none occurred).

    A round cut there keeps its drafts before the EOS and counts its own token as usual: unforced, the target would
    have emitted the EOS itself at that point."""
    width = max([k, *(r.offered for r in rounds)])
    accepted_by, offered_by = [0] * width, [0] * width
    drafted = accepted = n = 0
    for r in rounds:
        offered = r.offered if natural_eos is None else min(r.offered, natural_eos - r.start)
        if offered <= 0:
            continue
        kept = min(r.accepted, offered)
        drafted, accepted, n = drafted + offered, accepted + kept, n + 1
        for i in range(offered):
            offered_by[i] += 1
        for i in range(kept):
            accepted_by[i] += 1
    return RoundCounts(drafted, accepted, n, tuple(accepted_by), tuple(offered_by))


def draft_stats(rounds, k: int, natural_eos: int | None, target_forwards: int, drafted_all: int) -> DraftStats:
    """A drafting call's DraftStats (every engine's): its rounds counted by `count_rounds`, cut before natural_eos,
    and the work it did (target_forwards, drafted_all), which no cut applies to."""
    c = count_rounds(rounds, k, natural_eos)
    return DraftStats(drafted=c.drafted, accepted=c.accepted, rounds=c.rounds,
                      accepted_by_position=c.accepted_by_position, offered_by_position=c.offered_by_position,
                      natural_eos=natural_eos, target_forwards=target_forwards, drafted_all=drafted_all)


def acceptance_by_position(calls) -> list[float]:
    """Per position 1..k over the calls: rounds accepting its draft / rounds offering one (NaN where none did)."""
    accepted: list[int] = []
    offered: list[int] = []
    for call in calls:
        d = call.generation.drafts
        for totals, counts in ((accepted, d.accepted_by_position), (offered, d.offered_by_position)):
            totals.extend([0] * (len(counts) - len(totals)))
            for i, c in enumerate(counts):
                totals[i] += c
    return [a / o if o else float("nan") for a, o in zip(accepted, offered)]


def format_positions(rates: list[float]) -> str:
    """One compact CSV cell, position 1 first: 0.91|0.80|0.66."""
    return "|".join("nan" if r != r else f"{r:.2f}" for r in rates)


class DraftCounts:
    # draft_step_ratio and predicted_speedup need the engine (a timing outside the measured calls): summarize leaves
    # them NaN, and the scenario fills them with metrics.prediction.prediction_columns.
    columns = ("drafted_tokens", "accepted_tokens", "acceptance_rate", "mean_accepted_tokens",
               "acceptance_by_position", "draft_step_ratio", "predicted_speedup")
    help = {  # column -> one line for docs/columns.md (scripts/reference.py)
        **dict.fromkeys(("drafted_tokens", "accepted_tokens"),
                        "tokens the draft (or prompt lookup) proposed and the target accepted, summed over measured calls, "
                        "counted per round by instrumentation, before a forced run's natural EOS"),
        "acceptance_rate": "accepted / drafted",
        "mean_accepted_tokens": "τ: tokens per round (a target forward that verified drafts), the target's own token "
                                "included (Spec-Bench's τ)",
        "acceptance_by_position": "per draft position 1..k: rounds whose draft there was accepted / rounds that offered "
                                  "one, e.g. `0.91|0.80|0.66`; before a forced run's natural EOS; empty for rows that draft "
                                  "nothing",
        "draft_step_ratio": "c: the draft's single-token decode step time / the target's, timed after the row's measured "
                            "calls at its prompt length; 0 for prompt lookup",
        "predicted_speedup": "(1 + Σ acceptance_by_position) / (k·c + 1), Leviathan et al.'s expected speedup, beside the "
                             "measured `speedup_vs_standard`",
    }

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        drafted = sum(call.generation.drafts.drafted for call in calls)
        accepted = sum(call.generation.drafts.accepted for call in calls)
        rounds = sum(call.generation.drafts.rounds for call in calls)
        return {
            "drafted_tokens": drafted, "accepted_tokens": accepted,
            "acceptance_rate": accepted / drafted if drafted else float("nan"),
            # Tokens per round, the target's own token included (Spec-Bench's tau); rounds as defined above.
            "mean_accepted_tokens": (accepted + rounds) / rounds if rounds else float("nan"),
            "acceptance_by_position": format_positions(acceptance_by_position(calls)) if drafted else float("nan"),
            "draft_step_ratio": float("nan"), "predicted_speedup": float("nan"),
        }

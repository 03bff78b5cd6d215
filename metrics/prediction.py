"""The speedup speculative decoding should give, from what a row measured (Leviathan et al. 2023, section 3.4).

A round proposes k drafts and verifies them in one target forward. With a_i the measured acceptance at position i
(the fraction of rounds whose i-th draft was accepted, which needs drafts 1..i-1 accepted too, so
a_1 >= a_2 >= ...; metrics/drafts.py), a round yields on average

    E[tokens per round] = 1 + a_1 + a_2 + ... + a_k

(the target's own token, plus the expected length of the accepted prefix: E[n] = sum_i P(n >= i)). Written with the
conditional rates alpha_i = a_i / a_(i-1) (draft i accepted given draft i-1 was) it is
1 + sum_i prod_(j<=i) alpha_j, and with one constant alpha, a_i = alpha^i, it is the paper's
(1 - alpha^(k+1)) / (1 - alpha).

A round costs k draft steps and one target forward; in target-step units, with c = draft step time / target step
time, that is k*c + 1 (the verify forward over k + 1 tokens is taken to cost one target step, as in the paper, which
holds while decoding is memory-bound). Standard decoding makes one token per target step, so

    predicted speedup = E[tokens per round] / (k*c + 1).

Prompt lookup copies its drafts from the text on the host: c = 0, and the prediction is E[tokens per round] itself.
The model assumes every round offers k drafts; rounds the drafter skips (no match) or crops are not in it, and
neither is the host overhead of each round, which is why measured and predicted speedups are shown side by side.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

NAN = float("nan")
STEPS = 8  # decode steps per timing
REPEATS = 3  # timings kept per model (after one warm-up pass); their median is used


def expected_tokens_per_round(acceptance_by_position: Sequence[float]) -> float:
    """1 + sum of a_i; a position never offered (NaN) contributes nothing."""
    return 1.0 + sum(a for a in acceptance_by_position if a == a)


def constant_rate_tokens_per_round(alpha: float, k: int) -> float:
    """The paper's closed form for one acceptance rate alpha at every position: (1 - alpha^(k+1)) / (1 - alpha)."""
    return float(k + 1) if alpha == 1 else (1 - alpha ** (k + 1)) / (1 - alpha)


def predicted_speedup(acceptance_by_position: Sequence[float], c: float, k: int | None = None) -> float:
    """E[tokens per round] / (k*c + 1); k defaults to the number of positions."""
    k = len(acceptance_by_position) if k is None else k
    return expected_tokens_per_round(acceptance_by_position) / (k * c + 1)


def parse_positions(cell) -> list[float]:
    """The CSV cell `0.91|0.80|nan` back into rates; [] for an empty cell (NaN, '', None)."""
    if not isinstance(cell, str) or not cell:
        return []
    return [float(x) for x in cell.split("|")]


def prediction_columns(row: dict, engine, unit) -> dict:
    """{"draft_step_ratio": c, "predicted_speedup": p} for a drafting row, NaN for the others (and for rows that
    failed). c is timed on `engine` at the prompt length of `unit` (one of the row's inputs), outside any measured
    call; it is 0 for a method whose drafts need no model (prompt lookup)."""
    rates = parse_positions(row.get("acceptance_by_position"))
    k = row.get("num_draft_tokens")
    if not rates or row.get("status", "ok") != "ok":
        return {"draft_step_ratio": NAN, "predicted_speedup": NAN}
    try:
        k = int(k)  # '' or NaN where the row names no k
    except (TypeError, ValueError):
        k = 0
    k = k if k > 0 else len(rates)
    from decoding import METHODS

    method = METHODS.get(row.get("method", ""))
    uses_model = method.needs_draft if method is not None else bool(row.get("draft_model"))
    if uses_model:
        settings = {key: row[key] for key in ("temperature", "top_p", "top_k") if row.get(key) not in (None, "")}
        c = engine.step_time_ratio(unit, do_sample=bool(row.get("do_sample")), **settings)
    else:
        c = 0.0
    return {"draft_step_ratio": c, "predicted_speedup": predicted_speedup(rates, c, k)}


def seconds_per_step(step: Callable[[], None], reset: Callable[[], None], device) -> float:
    """Median seconds of one call of step(): REPEATS timings of STEPS calls each, after reset() and a synchronize;
    a first pass warms up (allocations, kernels) and is not kept. Engines hand their steps here, so that the clock
    is read in metrics/, never in an engine."""
    times = []
    for rep in range(REPEATS + 1):
        reset()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(STEPS):
            step()
        synchronize(device)
        if rep:
            times.append((time.perf_counter() - start) / STEPS)
    return statistics.median(times)


def synchronize(device) -> None:
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.synchronize(device)

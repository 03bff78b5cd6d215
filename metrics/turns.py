"""What a load row offered (its workload and synthetic prompt length) and, for multi-turn sessions, TTFT and TPOT
by turn: a server or engine that reuses the cached prefix of a conversation answers later turns sooner.
"""
from __future__ import annotations

import math

from metrics.serving import RequestRecord, tpot_s, ttft_s
from metrics.stats import median

NAN = float("nan")


def by_turn(records: list[RequestRecord], figure) -> list[float]:
    """The median of `figure` (seconds) over the ok requests of each turn index, in ms; NaN where none."""
    turns = max((r.turn for r in records if r.session >= 0), default=-1) + 1
    out = []
    for k in range(turns):
        values = [figure(r) for r in records if r.session >= 0 and r.turn == k and r.status == "ok"]
        values = [v for v in values if v == v]
        out.append(median(values) * 1000 if values else NAN)
    return out


def as_text(values: list[float]) -> str:
    return " ".join("nan" if v != v else f"{v:.3f}" for v in values)


def from_text(text) -> list[float]:
    if not isinstance(text, str) or not text.strip():
        return []
    return [float(v) for v in text.split()]


class WorkloadFigures:
    columns = ("workload", "input_tokens", "sessions", "turns", "think_time_s", "ttft_ms_by_turn", "tpot_ms_by_turn")
    help = {
        "workload": "load rows: what was sent: `prompts`, `sessions`, `random` or `shared_prefix` (docs/workloads.md)",
        "input_tokens": "load rows of the random and shared_prefix workloads: the prompt length set at this load point "
                        "(shared_prefix: each question's suffix), exact in the run's tokenizer; `prompt_tokens` is "
                        "the mean really sent",
        **dict.fromkeys(("sessions", "turns", "think_time_s"),
                        "load rows of the sessions workload: sessions started, turns (requests) sent, and the pause "
                        "between an answer and the next turn"),
        **dict.fromkeys(("ttft_ms_by_turn", "tpot_ms_by_turn"),
                        "load rows of the sessions workload: median TTFT and TPOT (ms) of each turn index, space "
                        "separated from turn 1; a prefix cache makes later turns' TTFT fall (chart: TTFT by turn)"),
    }

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        row = row or {}
        return {c: row.get(c, NAN) for c in WorkloadFigures.columns}

    @staticmethod
    def figures(records: list[RequestRecord], workload: str, input_tokens: int, think_time_s: float) -> dict:
        out = {"workload": workload, "input_tokens": input_tokens or NAN}
        if workload != "sessions":
            return out
        sessions = {r.session for r in records if r.session >= 0}
        out.update(sessions=len(sessions), turns=len(records), think_time_s=think_time_s,
                   ttft_ms_by_turn=as_text(by_turn(records, ttft_s)),
                   tpot_ms_by_turn=as_text(by_turn(records, tpot_s)))
        return out


def turn_values(records: list[RequestRecord], turn: int, figure=ttft_s) -> dict[int, float]:
    """session -> the figure (ms) of its turn `turn`, for pairing two runs of the same sessions."""
    return {r.session: figure(r) * 1000 for r in records
            if r.session >= 0 and r.turn == turn and r.status == "ok" and not math.isnan(figure(r))}

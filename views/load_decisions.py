"""What load rows decide, as frames the charts draw (views/charts.py: `capacity`, `drafting_under_load`):

- capacity searches (scenarios/capacity.py): the probes of each search, SLO attainment with its one-sided 95%
  bounds against the rate, the target share, and the capacity and its lower bound from the search's last row;
- where drafting stops paying: each drafting series' paired speedups (metrics/load_speedup.py) across its load
  points, and the first load point whose interval falls below 1 (drafting measurably slower than plain).
"""
from __future__ import annotations

import math
import re

import pandas as pd

PROBE = re.compile(r"(?:^|, )capacity probe \d+: .*$")
LOAD = re.compile(r"(?:^|, )(?:concurrency|rate)=[^,]+")
SERIES_KEYS = ["run_id", "engine", "method", "quantization", "attention"]
CAPACITY_NUMERIC = ["capacity_probe", "slo_attainment", "slo_attainment_ci_low", "slo_attainment_ci_high",
                    "capacity_target", "capacity_rps", "capacity_rps_ci_low", "capacity_probes", "request_rate",
                    "concurrency", "capacity_concurrency", "capacity_concurrency_ci_low"]
SPEEDUPS = {"tpot": "TPOT", "tokens_per_s": "output tok/s per request"}


def numbers(d: pd.DataFrame, columns) -> pd.DataFrame:
    d = d.copy()
    for c in columns:
        d[c] = pd.to_numeric(d[c], errors="coerce") if c in d else math.nan
    return d


def searches(d: pd.DataFrame) -> list[dict]:
    """One entry per capacity search: name, the axis it searched (request_rate, or concurrency for a closed-loop
    search), its probes along that axis, target, capacity, capacity_low."""
    if d is None or d.empty or "capacity_probe" not in d:
        return []
    d = numbers(d, CAPACITY_NUMERIC)
    d = d[d["capacity_probe"].notna()]
    if d.empty:
        return []
    d["search"] = [PROBE.sub("", str(s)) for s in d["setting"]]
    keys = [k for k in SERIES_KEYS + ["server_command"] if k in d] + ["search"]
    out = []
    for _, part in d.groupby(keys, sort=False, dropna=False):
        last = part.sort_values("capacity_probe").iloc[-1]
        closed = "capacity_concurrency" in part and last["capacity_concurrency"] == last["capacity_concurrency"]
        axis, result = ("concurrency", "capacity_concurrency") if closed else ("request_rate", "capacity_rps")
        probes = part[part[axis].notna() & (part[axis] > 0)].sort_values(axis)
        name = f"{last['engine']} · {last['method']}" + (f" [{last['search']}]" if last["search"] else "")
        out.append({"name": name, "run_id": last["run_id"], "probes": probes, "axis": axis,
                    "target": float(last["capacity_target"]), "capacity": float(last[result]),
                    "capacity_low": float(last[f"{result}_ci_low"]), "count": int(last["capacity_probe"])})
    return out


def load_value(row) -> float:
    rate = row.get("request_rate")
    return float(rate) if rate == rate and rate else float(row.get("concurrency") or math.nan)


def first_below(highs) -> int | None:
    """Index of the first load point whose interval lies wholly below 1 (its upper end < 1), or None."""
    return next((i for i, h in enumerate(highs) if h == h and h < 1), None)


def crossover(d: pd.DataFrame) -> list[dict]:
    """One entry per drafting series (engine x method x setting x server command across load points): its load
    labels in load order, the two speedups with their intervals, and each one's first point below 1."""
    cols = [f"load_speedup_{m}{s}" for m in SPEEDUPS for s in ("", "_ci_low", "_ci_high")]
    if d is None or d.empty or "load_speedup_tpot" not in d:
        return []
    d = numbers(d, cols + ["request_rate", "concurrency"])
    d = d[d["load_speedup_tpot"].notna() | d["load_speedup_tokens_per_s"].notna()]
    if d.empty:
        return []
    d["closed"] = d["concurrency"].notna() & (d["concurrency"] > 0)
    d["rest"] = [LOAD.sub("", str(s)).strip(", ") for s in d["setting"]]
    keys = [k for k in SERIES_KEYS + ["server_command"] if k in d] + ["rest", "closed"]
    out = []
    for _, part in d.groupby(keys, sort=False, dropna=False):
        part = part.assign(_x=[load_value(r) for r in part.to_dict("records")]).sort_values("_x")
        first = part.iloc[0]
        name = f"{first['engine']} · {first['method']}" + (f" [{first['rest']}]" if first["rest"] else "")
        command = str(first.get("server_command") or "")
        if command and command != "nan":
            name += f" · {command[:40]}"
        kind = "concurrency" if first["closed"] else "request rate (req/s)"
        labels = [("inf" if math.isinf(x) else f"{x:g}") for x in part["_x"]]
        entry = {"name": name, "axis": kind, "loads": labels}
        for m in SPEEDUPS:
            entry[m] = {"value": list(part[f"load_speedup_{m}"]), "low": list(part[f"load_speedup_{m}_ci_low"]),
                        "high": list(part[f"load_speedup_{m}_ci_high"]),
                        "first_below": first_below(list(part[f"load_speedup_{m}_ci_high"]))}
        out.append(entry)
    return out

"""The Pareto front of speed for one user against speed of the whole machine, with intervals.

    x: tokens/s per user     rows of fixed calls: `tokens_per_s_per_sequence_median` (new tokens / call latency)
                             load rows: mean output tokens per request / median end-to-end latency (send to last
                             token), so both kinds count what a user waits through, first token and queueing included
                             (1000 / TPOT would leave those out)
    y: tokens/s of the machine   fixed calls: `aggregate_tokens_per_s_median`; load rows: `output_tokens_per_s`

Every figure carries its 95% interval (`_ci_low/_ci_high`; the load rows' x interval is the end-to-end
latency's, turned over). A row is on the front unless another row is at least as good on both axes and the
two are told apart: their intervals do not overlap on at least one axis. Rows whose intervals overlap on
both axes never dominate each other, so noise alone cannot push a row off the front.
"""
from __future__ import annotations

import math

import pandas as pd

AXES = ("x", "y")


def value(point: dict, key: str) -> float:
    v = point.get(key)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v


def bounds(point: dict, axis: str) -> tuple[float, float]:
    """The axis' interval; a point without one is its own interval (zero width)."""
    centre, low, high = value(point, axis), value(point, f"{axis}_low"), value(point, f"{axis}_high")
    return (centre if low != low else low), (centre if high != high else high)


def dominates(q: dict, p: dict) -> bool:
    """q at least as good as p on both axes, strictly better on one, and told apart from p: on some axis q's
    interval lies wholly above p's."""
    at_least = all(value(q, a) >= value(p, a) for a in AXES)
    better = any(value(q, a) > value(p, a) for a in AXES)
    apart = any(bounds(q, a)[0] > bounds(p, a)[1] for a in AXES)
    return at_least and better and apart


def pareto_front(points: list[dict]) -> list[int]:
    """Indices of the points no other point dominates, by x ascending. A point is a dict with `x`, `y` and
    optionally `x_low`, `x_high`, `y_low`, `y_high` (higher is better on both axes); a point missing x or y
    is never on the front."""
    usable = [i for i, p in enumerate(points) if value(p, "x") == value(p, "x") and value(p, "y") == value(p, "y")]
    front = [i for i in usable if not any(dominates(points[j], points[i]) for j in usable if j != i)]
    return sorted(front, key=lambda i: (value(points[i], "x"), -value(points[i], "y")))


def numeric(d: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(d[column], errors="coerce") if column in d else pd.Series(math.nan, index=d.index)


def point_label(row: dict) -> str:
    """Method, engine, batch or load point, quantization: what tells the rows of a front apart."""
    setting = str(row.get("setting") or "")
    parts = [f"{row.get('method')} [{setting}]" if setting else str(row.get("method")), str(row.get("engine"))]
    batch = value(row, "batch_size")
    if batch == batch and "batch_size" not in setting and not row.get("load"):
        parts.append(f"batch {batch:g}")
    parts.append(str(row.get("quantization") or "none").replace("none", "unquantized"))
    return " · ".join(parts)


def points(d: pd.DataFrame) -> pd.DataFrame:
    """The rows of `d` (views.charts.prepare) as points: x, y and their intervals, `load` (a load row) and
    `point` (its label); rows without both figures are left out."""
    if d is None or d.empty:
        return pd.DataFrame(columns=["x", "x_low", "x_high", "y", "y_low", "y_high", "load", "point"])
    out = d.copy()
    load = numeric(out, "output_tokens_per_s").notna()
    tokens, e2e = numeric(out, "new_tokens"), numeric(out, "e2e_ms_median") / 1000
    per_user = {"x": tokens / e2e, "x_low": tokens / (numeric(out, "e2e_ms_ci_high") / 1000),
                "x_high": tokens / (numeric(out, "e2e_ms_ci_low") / 1000)}
    for key, stem in (("x", "tokens_per_s_per_sequence"), ("y", "aggregate_tokens_per_s")):
        out[key] = numeric(out, f"{stem}_median")
        out[f"{key}_low"], out[f"{key}_high"] = numeric(out, f"{stem}_ci_low"), numeric(out, f"{stem}_ci_high")
    for key, series in per_user.items():
        out.loc[load, key] = series[load]
    for key, column in (("y", "output_tokens_per_s"), ("y_low", "output_tokens_per_s_ci_low"),
                        ("y_high", "output_tokens_per_s_ci_high")):
        out.loc[load, key] = numeric(out, column)[load]
    out["load"] = load
    out = out[out["x"].notna() & out["y"].notna() & (out["x"] > 0)].copy()
    out["point"] = [point_label(r) for r in out.to_dict("records")]
    return out


def front_of(pts: pd.DataFrame) -> list:
    """Index labels of `pts` (from points) on the front, by x ascending."""
    records = pts[["x", "x_low", "x_high", "y", "y_low", "y_high"]].to_dict("records")
    return [pts.index[i] for i in pareto_front(records)]


SIDE_OFFSETS = {"top right": (1, 1), "bottom right": (1, -1), "top left": (-1, 1), "bottom left": (-1, -1),
                "top center": (0, 1.4), "bottom center": (0, -1.4)}
LABEL_BOX = (0.07, 0.08)  # a front number's box, in fractions of the axes (a narrow card's plot, 11 px text)


def label_sides(pts: pd.DataFrame, front: list, x_top: float, y_top: float) -> dict:
    """A side for each front number, none on another number or on a front marker: placed in front order,
    each takes the first side whose box is clear of those already placed (axes span 0..x_top, 0..y_top); None
    for a number crowded out on every side."""
    w, h = LABEL_BOX
    where = {i: (pts.loc[i, "x"] / x_top, pts.loc[i, "y"] / y_top) for i in front}
    placed, out = [], {}

    def box(i, side):
        (x, y), (dx, dy) = where[i], SIDE_OFFSETS[side]
        cx, cy = x + dx * (w / 2 + 0.01), y + dy * (h / 2 + 0.01)
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    def clear(b):
        hits_box = any(b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3] for o in placed)
        hits_marker = any(b[0] < x < b[2] and b[1] < y < b[3] for x, y in where.values())
        return not hits_box and not hits_marker

    for i in front:
        boxes = [(side, box(i, side)) for side in SIDE_OFFSETS]
        side, chosen = next(((s, b) for s, b in boxes if clear(b)), (None, None))
        if chosen is not None:  # no clear side: the number stays in the table and the hover, never on a neighbour
            placed.append(chosen)
        out[i] = side
    return out

"""Figures on a noisy machine: no axis below zero, unstable rows marked, speedups rounded to what
their interval supports."""
from __future__ import annotations

import numpy as np
import pandas as pd

from views import charts, table

from store import archive


def noisy_rows() -> pd.DataFrame:
    """A busy CPU: spreads larger than the medians, intervals reaching below zero in older files' std."""
    base = {c: np.nan for c in archive.COLUMNS} | dict(status="ok", engine="hf", model="m", run_id="r1",
                                                     quantization="none", attention="sdpa", dtype="float32",
                                                     notes="", unstable=False)
    rows = [
        base | dict(method="standard", setting="greedy", batch_size=1, tokens_per_s_per_sequence_median=10.0,
                    tokens_per_s_per_sequence_std=25.0, tokens_per_s_per_sequence_ci_low=0.5,
                    tokens_per_s_per_sequence_ci_high=40.0, aggregate_tokens_per_s_median=10.0,
                    aggregate_tokens_per_s_std=30.0, latency_ms_median=100.0, ttft_ms_median=20.0,
                    tpot_ms_median=2.0, tpot_ms_p90=9.0, speedup_vs_standard=1.0, unstable=True),
        base | dict(method="batched", setting="batch_size=4", batch_size=4, tokens_per_s_per_sequence_median=8.0,
                    tokens_per_s_per_sequence_std=20.0, aggregate_tokens_per_s_median=32.0,
                    aggregate_tokens_per_s_std=90.0, latency_ms_median=125.0, ttft_ms_median=30.0,
                    tpot_ms_median=3.0, speedup_vs_standard=0.8134, speedup_vs_standard_ci_low=0.42,
                    speedup_vs_standard_ci_high=1.61, unstable=True),
        base | dict(method="batched", setting="batch_size=1", batch_size=1, tokens_per_s_per_sequence_median=9.0,
                    aggregate_tokens_per_s_median=9.0, aggregate_tokens_per_s_std=50.0, latency_ms_median=110.0,
                    ttft_ms_median=25.0, speedup_vs_standard=1.234567, speedup_vs_standard_ci_low=1.2301,
                    speedup_vs_standard_ci_high=1.2390),
    ]
    return pd.DataFrame(rows)


def y_axes(fig):
    return [fig.layout[k] for k in fig.layout if k.startswith("yaxis")]


def test_no_axis_goes_below_zero_and_no_whisker_either():
    df = noisy_rows()
    for name, draw in charts.FIGURES.items():
        fig = draw(df)
        for axis in y_axes(fig):
            assert axis.rangemode in ("nonnegative", "tozero") or (axis.range and axis.range[0] >= 0), \
                (name, axis.rangemode, axis.range)
        for trace in fig.data:
            error = getattr(trace, "error_y", None)
            if error is not None and error.array is not None and trace.y is not None:
                minus = error.arrayminus if error.arrayminus is not None else error.array
                assert all(v - m >= -1e-9 for v, m in zip(trace.y, minus) if v is not None and v == v), name


def test_unstable_rows_are_hatched_and_marked():
    fig = charts.tokens_per_s(noisy_rows())
    bars = fig.data[0]
    assert list(bars.marker.pattern.shape) == ["x", "", "x"]  # sorted by batch size
    assert "unstable" in bars.hovertext[0] and bars.text[0] == "!"


def test_speedup_labels_carry_only_the_digits_their_interval_supports():
    df = noisy_rows()
    fig = charts.speedup(df)
    labels = dict(zip(fig.data[0].x, fig.data[0].text))
    assert labels["batched [batch_size=4]"] == "0.8× n.s."  # CI 0.42..1.61 contains 1: no difference shown
    assert labels["batched [batch_size=1]"] == "1.235×"
    row = df.iloc[1].to_dict()
    assert table.CELLS["speedup"](row, "speedup_vs_standard") == "0.8x n.s."

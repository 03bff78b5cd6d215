"""Machines told apart and CPU memory shown: CPU model, cores, RAM and GPU driver in every row;
the process's peak RSS per call, drawn in the memory chart when a row has no GPU figures."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch

from views import charts

from store import archive
from metrics.environment import environment
from metrics.rows import COLUMNS
from metrics import METRICS, TRACKERS
from metrics.rss import PeakRSS


def test_rows_carry_cpu_model_cores_ram_and_driver():
    env = environment("cpu")
    for column in ("gpu_driver", "cpu_model", "cpu_count", "ram_gib"):
        assert column in COLUMNS and column in env
    assert env["cpu_model"] and env["device_name"] == env["cpu_model"]  # a CPU row is named by its CPU model
    assert env["cpu_count"] >= 1 and env["ram_gib"] > 0
    if not torch.cuda.is_available():
        assert env["gpu_driver"] == "" and env["gpu_count"] == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the per-call reset needs Linux's clear_refs")
def test_peak_rss_is_the_calls_own_peak():
    assert PeakRSS in METRICS and PeakRSS in TRACKERS
    with PeakRSS() as big:
        block = bytearray(300 * 1024 * 1024)
        block[::4096] = b"x" * len(block[::4096])  # touch every page, so it is resident
        del block
    with PeakRSS() as small:
        pass
    assert big.mib - small.mib > 200, (big.mib, small.mib)  # reset between calls: the second saw no block


def test_memory_chart_shows_rss_for_rows_without_gpu_figures():
    base = {c: np.nan for c in archive.COLUMNS} | dict(status="ok", engine="hf", model="m", run_id="r1", notes="",
                                                     quantization="none", attention="sdpa", dtype="float32")
    rows = pd.DataFrame([base | dict(method="standard", setting="greedy", batch_size=1, peak_rss_mib=812.0),
                         base | dict(method="batched", setting="batch_size=4", batch_size=4, peak_rss_mib=901.0)])
    fig = charts.memory(rows)
    assert list(fig.data[0].y) == [812.0, 901.0] and "RSS" in fig.layout.title.text
    gpu = charts.memory(rows.assign(peak_allocated_mib=[100.0, 200.0]))
    assert list(gpu.data[0].y) == [100.0, 200.0] and "GPU" in gpu.layout.title.text

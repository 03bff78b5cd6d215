"""Timings are recovered from a model with known delays, through the real runner."""
import time

import pytest

import bench.runner
from conftest import tiny_config
from metrics.stats import median, percentile, stdev
from metrics.timing import time_per_output_token

PREFILL_S, STEP_S = 0.30, 0.10


def with_delays(load):
    """The tiny models, with the target sleeping a known time per forward: longer for the prefill."""
    def loader(*args, **kwargs):
        models = load(*args, **kwargs)

        started = {}

        def start(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            started["deadline"] = time.perf_counter() + (PREFILL_S if ids.shape[1] > 1 else STEP_S)

        def finish(module, args, kwargs, output):
            # Sleep until the deadline, so each forward lasts exactly its delay whatever the real compute.
            time.sleep(max(0.0, started["deadline"] - time.perf_counter()))

        models.target.register_forward_pre_hook(start, with_kwargs=True)
        models.target.register_forward_hook(finish, with_kwargs=True)
        return models
    return loader


def test_ttft_and_tpot_recovered_within_ten_percent(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.runner, "load_models", with_delays(bench.runner.load_models))
    config = tiny_config(tmp_path, methods=["standard"], prompts=["Explain speculative decoding"],
                         max_new_tokens=6, warmup=1, repetitions=3)
    [row] = bench.runner.run_all(config)
    assert row["status"] == "ok"
    assert row["ttft_ms_median"] / 1000 == pytest.approx(PREFILL_S, rel=0.10)
    assert row["tpot_ms_median"] / 1000 == pytest.approx(STEP_S, rel=0.10)
    assert row["latency_ms_median"] / 1000 == pytest.approx(PREFILL_S + 5 * STEP_S, rel=0.10)
    assert row["calls"] == 3  # warm-up excluded
    assert row["tokens_per_s_per_sequence_median"] == pytest.approx(6 / (row["latency_ms_median"] / 1000), rel=0.05)


def test_tpot_definition_and_statistics():
    assert time_per_output_token(1.0, 0.1, 10) == pytest.approx(0.1)
    assert time_per_output_token(1.0, 0.1, 1) != time_per_output_token(1.0, 0.1, 1)  # NaN: no decode steps
    assert median([3, 1, 2, float("nan")]) == 2
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == pytest.approx(9.1)
    assert stdev([2.0, 2.0]) == 0.0

"""The measurement protocol as a specification: real batch sizes, interleaved seeded order, intervals that
cover the truth, paired speedups, adaptive repetitions, honest empty cells.

A stand-in engine drives a virtual clock by known amounts (plus seeded noise), so the statistics are
checked against exact truths without a single timing assumption about this machine."""
import math
import random
import threading
import types

import numpy as np
import pandas as pd
import pytest
import torch

import bench.runner
import metrics.timing
from bench.runner import Stopped, run, run_all
from conftest import tiny_config
from decoding.types import Generation
from metrics.stats import bootstrap_ci, geometric_mean, percentile, stdev


class Clock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class StandIn:
    """An engine whose calls take `base_s * slowdown[method]` of virtual time, times seeded noise."""

    name = "standin"

    def __init__(self, models, clock: Clock, slowdown: dict, noise: float, log: list):
        self.models, self.clock, self.slowdown, self.log = models, clock, slowdown, log
        self.rng = random.Random(1)
        self.noise = noise

    def generate(self, request, probe):
        kind = ("nucleus" if request.do_sample and not request.use_draft else
                "batched" if request.input_ids.shape[0] > 1 else "standard")
        self.log.append(kind)
        seconds = 0.1 * self.slowdown.get(kind, 1.0) * math.exp(self.rng.gauss(0, self.noise))
        self.clock.now += seconds * 0.1
        probe.first_token()
        self.clock.now += seconds * 0.9
        n = request.input_ids.shape[0]
        return Generation(torch.full((n, request.max_new_tokens), 7), self.models.eos_token_ids)


@pytest.fixture
def stand_in(monkeypatch):
    """Returns a function (slowdown, noise) -> the list the engine logs call kinds to."""
    def install(slowdown=None, noise=0.02):
        clock, log = Clock(), []
        monkeypatch.setattr(metrics.timing, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
        monkeypatch.setattr(bench.runner, "make_engine",
                            lambda name, models, config=None: StandIn(models, clock, slowdown or {}, noise, log))
        return log
    return install


def by_method(rows):
    return {r["method"] if r["method"] != "batched" else r["setting"]: r for r in rows}


def test_a_batch_size_the_workload_cannot_fill_grows_the_workload(tmp_path, stand_in):
    stand_in()
    config = tiny_config(tmp_path, methods=["batched"], completions_per_prompt=[2, 1], batch_sizes=[1, 4],
                         repetitions=2, warmup=0)
    rows = by_method(run_all(config))
    four = rows["batch_size=4"]
    assert four["batch_size"] == 4 and four["sequences"] == 4 and four["calls"] == 2  # one 4-row call per repetition
    assert "grown from 3 to 4 sequences" in four["notes"]
    assert rows["batch_size=1"]["sequences"] == 3 and rows["batch_size=1"]["calls"] == 6
    outputs = pd.read_json(tmp_path / "outputs.jsonl", lines=True)
    assert len(outputs[outputs["setting"] == "batch_size=4"]) == 4  # the added completion's text is kept too


def test_every_preset_batch_size_really_runs():
    from bench.config import Config, preset_names, preset_path, read_json
    from scenarios.per_call import workload

    for name in preset_names():
        config = Config.from_dict(read_json(preset_path(name)), check_models=False)
        for b in config.batch_sizes if "batched" in config.methods else []:
            items, _ = workload(config, b)
            assert len(items) % b == 0 and len(items) >= b, (name, b)


def test_interleaved_order_is_seeded_and_not_standard_first(tmp_path, stand_in):
    orders = []
    for seed in (3, 3, 4):
        log = stand_in()
        run_all(tiny_config(tmp_path, methods=["standard", "nucleus", "batched"], batch_sizes=[2],
                            prompts=["a"], repetitions=6, warmup=0, seed=seed))
        orders.append(log)
    assert orders[0] == orders[1]  # the same seed measures in the same order
    assert orders[0] != orders[2]
    firsts = orders[0][::3]  # one call per row per repetition: the first call of each repetition
    assert set(firsts) != {"standard"}, "standard ran first in every repetition"


def test_bootstrap_interval_covers_the_true_median_about_95_percent():
    rng = np.random.default_rng(0)
    true_median = math.exp(1.0)  # lognormal(1, 0.5)
    covered = 0
    for trial in range(200):
        sample = rng.lognormal(1.0, 0.5, size=40)
        low, high = bootstrap_ci([[x] for x in sample], seed=trial, resamples=1000)
        covered += low <= true_median <= high
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_a_known_slowdown_gives_a_paired_speedup_interval_around_it(tmp_path, stand_in):
    stand_in({"nucleus": 1.2}, noise=0.05)
    rows = by_method(run_all(tiny_config(tmp_path, methods=["standard", "nucleus"], repetitions=8, warmup=0)))
    slow = rows["nucleus"]
    assert slow["speedup_vs_standard_ci_low"] <= 1 / 1.2 <= slow["speedup_vs_standard_ci_high"]
    assert slow["speedup_vs_standard_ci_high"] < 1.0
    assert rows["standard"]["speedup_vs_standard"] == pytest.approx(1.0)


def test_no_slowdown_is_no_significant_difference(tmp_path, stand_in):
    from views.table import speedup

    stand_in({"nucleus": 1.0}, noise=0.05)
    rows = by_method(run_all(tiny_config(tmp_path, methods=["standard", "nucleus"], repetitions=8, warmup=0)))
    same = rows["nucleus"]
    assert same["speedup_vs_standard_ci_low"] <= 1.0 <= same["speedup_vs_standard_ci_high"]
    assert speedup(same, "speedup_vs_standard").endswith("n.s.")


def test_unstable_rows_are_flagged(tmp_path, stand_in):
    stand_in(noise=0.6)
    noisy = run_all(tiny_config(tmp_path, methods=["standard"], repetitions=3, warmup=0))[0]
    stand_in(noise=0.001)
    quiet = run_all(tiny_config(tmp_path, methods=["standard"], repetitions=3, warmup=0))[0]
    assert noisy["unstable"] is True and quiet["unstable"] is False


def test_adaptive_protocol_stops_when_narrow_and_goes_on_when_noisy(tmp_path, stand_in):
    stand_in(noise=0.005)
    quiet = run_all(tiny_config(tmp_path, methods=["standard"], target_ci=0.05, min_repetitions=3,
                                max_repetitions=12, warmup=0))[0]
    assert quiet["repetitions"] == 3  # narrow at the first check
    stand_in(noise=0.8)
    noisy = run_all(tiny_config(tmp_path, methods=["standard"], prompts=["a"], target_ci=0.01, min_repetitions=3,
                                max_repetitions=12, warmup=0))[0]
    assert noisy["repetitions"] == 12 and noisy["calls"] == 12


def test_percentiles_and_spread_need_enough_calls():
    assert math.isnan(percentile([1, 2, 3, 4, 5, 6], 90))  # would be the maximum in disguise
    assert percentile(list(range(1, 11)), 90) == pytest.approx(9.1)
    assert math.isnan(stdev([3.0]))
    assert geometric_mean([2, 8]) == pytest.approx(4.0)


def test_energy_and_bandwidth_columns_are_empty_on_the_cpu_not_zero(tmp_path, stand_in):
    stand_in()
    row = run_all(tiny_config(tmp_path, methods=["standard"], repetitions=2, warmup=0))[0]
    for column in ("energy_j_median", "joules_per_token", "watts_mean", "mbu", "copy_bandwidth_gbs",
                   "device_ms_median"):
        assert column in row and math.isnan(row[column]), column
    df = pd.read_csv(tmp_path / "runs.csv")
    assert df[["energy_j_median", "mbu"]].isna().all().all()


def test_stop_keeps_rows_with_whole_repetitions_and_says_so(tmp_path, stand_in):
    stand_in()
    stop = threading.Event()
    config = tiny_config(tmp_path, methods=["standard", "nucleus"], repetitions=3, warmup=0)
    finished = []
    with pytest.raises(Stopped):
        for event in run(config, stop):
            if isinstance(event, bench.runner.RowDone):
                finished.append(event.row)
            elif event.repetition == 2 and event.message.count("repetition"):
                stop.set()  # the user clicks Stop during the second repetition
    assert {r["method"] for r in finished} == {"standard", "nucleus"}
    assert all("stopped after" in r["notes"] and r["repetitions"] in (1, 2) for r in finished)
    assert len(pd.read_csv(config.results)) == 2

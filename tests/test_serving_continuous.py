"""Continuous batching in process (transformers' ContinuousBatchingManager) driven by the load scenario, on the tiny
model: every request finishes with its TTFT recorded, and with every request arriving at once it serves 8 requests
in less time than 8 sequential standard calls."""
import time

import pytest

from conftest import PROMPTS

MODEL = "tiny/target"
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def continuous_run(tmp_path_factory):
    from bench.config import Config
    from bench.runner import run_all

    config = Config.from_dict(dict(
        model=MODEL, methods=["standard"], engine=["continuous"], prompts=PROMPTS, max_new_tokens=NEW_TOKENS,
        device="cpu", dtype="float32", request_rate=["inf"], num_requests=8, warmup_requests=2,
        cb_num_blocks=64, cb_block_size=16, results=str(tmp_path_factory.mktemp("cb") / "runs.csv")))
    (row,) = run_all(config)
    return config, row


def test_every_request_finishes_with_its_ttft(continuous_run):
    from store.requests import load_requests

    config, row = continuous_run
    assert row["status"] == "ok", row["error"]
    assert row["requests"] == 8 and row["failed_requests"] == 0 and row["new_tokens"] == NEW_TOKENS
    records = load_requests(config.results)
    assert len(records) == 8 and all(r["status"] == "ok" for r in records)
    assert all(r["first_token"] > r["sent"] and len(r["token_times"]) == NEW_TOKENS for r in records)
    assert all(r["queue"] is not None and r["queue"] >= 0 for r in records)
    assert row["ttft_ms_median"] > 0 and row["itl_ms_median"] > 0 and row["batch_size"] == config.max_batch_size


def test_eight_requests_at_once_take_less_than_eight_sequential_standard_calls(continuous_run):
    import torch

    from models.loading import load_models
    from models.prompts import tokenize_prompts
    from decoding import METHODS
    from decoding.types import Inputs
    from engines.hf import HFEngine
    from metrics.timing import CallTimer

    config, row = continuous_run
    models = load_models(MODEL, None, device="cpu", dtype="float32")
    engine, settings = HFEngine(models), config.settings()
    ids = tokenize_prompts(models.tokenizer, config)  # the prompts exactly as the load row sent them
    calls = [Inputs(torch.tensor([ids[i % len(ids)]]), torch.ones(1, len(ids[i % len(ids)]), dtype=torch.long),
                    (i % len(ids),), (0,)) for i in range(8)]
    with CallTimer(models.device) as probe:  # a warm-up call, as the load row had its warm-up requests
        METHODS["standard"](calls[0], settings, engine, probe)
    started = time.perf_counter()
    for inputs in calls:
        with CallTimer(models.device) as probe:
            METHODS["standard"](inputs, settings, engine, probe)
    sequential_s = time.perf_counter() - started
    # Both totals measured here: the load's first arrival to its last token, and eight calls back to back.
    assert row["duration_s"] < sequential_s


def test_static_batching_makes_arrivals_wait_for_the_whole_batch(tmp_path):
    """The baseline under load: with max_batch_size 2 and 4 requests at once, the second pair waits for the first
    generate call to finish, and that wait is its queue time."""
    from bench.config import Config
    from store.requests import load_requests
    from bench.runner import run_all

    config = Config.from_dict(dict(
        model=MODEL, methods=["standard"], engine=["hf"], prompts=PROMPTS[:2], max_new_tokens=8, device="cpu",
        dtype="float32", request_rate=["inf"], num_requests=4, warmup_requests=1, max_batch_size=2,
        results=str(tmp_path / "runs.csv")))
    (row,) = run_all(config)
    assert row["status"] == "ok", row["error"]
    assert row["batch_size"] == 2 and row["requests"] == 4 and row["new_tokens"] == 8
    records = sorted(load_requests(config.results), key=lambda r: r["queue"])
    early, late = records[:2], records[2:]
    assert all(r["queue"] >= max(e["end"] for e in early) - r["sent"] - 1e-3 for r in late)
    assert min(r["first_token"] for r in late) > max(e["end"] for e in early)


def test_a_load_runs_texts_carry_their_dataset_prompt(tmp_path):
    """Samples shows what each text answers: for a load run that is the dataset's line, not a config prompt."""
    import json
    from html import escape

    from store import archive
    from bench.config import Config
    from views.samples import samples_html
    from bench.runner import run_all

    dataset = tmp_path / "mix.jsonl"
    lines = [{"prompt": "def add(a, b):\n    return", "output_tokens": 6},
             {"prompt": "import os\nimport", "output_tokens": 6}]
    dataset.write_text("".join(json.dumps(x) + "\n" for x in lines))
    config = Config.from_dict(dict(
        model=MODEL, methods=["standard"], engine=["hf"], dataset=str(dataset), max_new_tokens=6, device="cpu",
        dtype="float32", concurrency=[1], num_requests=2, warmup_requests=1, results=str(tmp_path / "runs.csv")))
    (row,) = run_all(config)
    assert row["status"] == "ok", row["error"]
    records = archive.load_outputs(config.results)
    assert sorted(r["prompt"] for r in records) == sorted(x["prompt"] for x in lines)
    page = samples_html(records, row["run_id"], None, 0)
    assert "def add(a, b):" in page and escape(config.prompts[0]) not in page

"""The runner end to end on the tiny models: rows, figures, CSV, outputs, OOM and errors."""
import json

import pandas as pd
import pytest
import torch

import bench.runner
from store import archive
from bench.runner import run_all, total_rows
from decoding import METHODS
from conftest import tiny_config


def test_every_method_gives_an_ok_row_with_honest_figures(tmp_path):
    config = tiny_config(tmp_path, completions_per_prompt=[2, 1], batch_sizes=[1, 3],
                         speculative_modes=["greedy", "sampling"])
    rows = run_all(config)
    assert len(rows) == total_rows(config) == 9  # 7 methods; batched and speculative sweep two points each
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    by = {(r["method"], r["setting"]): r for r in rows}
    std = by[("standard", "greedy")]
    assert std["speedup_vs_standard"] == 1.0
    assert std["calls"] == 3 * config.repetitions  # 3 sequences per repetition, warm-up excluded
    assert std["new_tokens"] == config.max_new_tokens
    batch3 = by[("batched", "batch_size=3")]
    assert batch3["calls"] == config.repetitions  # the 3 sequences in one call
    # Aggregate counts all rows of a call; per-sequence counts one: never the same figure at batch 3.
    assert batch3["aggregate_tokens_per_s_median"] > 2 * batch3["tokens_per_s_per_sequence_median"]
    assert by[("beam_search", "beams=4,return=2")]["num_return_sequences"] == 2
    spec = by[("speculative", "greedy,k=5")]
    assert spec["drafted_tokens"] > 0 and 0 <= spec["acceptance_rate"] <= 1
    assert spec["mean_accepted_tokens"] >= 1
    for r in rows:
        assert r["latency_ms_median"] > r["ttft_ms_median"] > 0
        assert r["latency_ms_ci_low"] <= r["latency_ms_median"] <= r["latency_ms_ci_high"]
        assert r["latency_ms_p90"] != r["latency_ms_p90"] if r["calls"] < 10 else r["latency_ms_p90"] >= r["latency_ms_median"]
        assert r["torch_version"] == torch.__version__ and r["hostname"]

    df = archive.load_rows(config.results)
    assert len(df) == 9 and set(df["run_id"]) == {rows[0]["run_id"]}
    outputs = [json.loads(line) for line in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    standard_texts = [o for o in outputs if o["method"] == "standard"]
    assert [(o["prompt_index"], o["completion_index"]) for o in standard_texts] == [(0, 0), (0, 1), (1, 0)]
    beams = [o for o in outputs if o["method"] == "beam_search"]
    assert len(beams) == 3 * 2 and {o["sequence_index"] for o in beams} == {0, 1}
    assert all(o["new_tokens"] == config.max_new_tokens and isinstance(o["text"], str) for o in outputs)


def test_out_of_memory_is_a_row_and_the_run_goes_on(tmp_path, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(METHODS["nucleus"], "generate", no_memory)
    rows = run_all(tiny_config(tmp_path, methods=["standard", "nucleus", "batched"]))
    assert [r["status"] for r in rows] == ["ok", "oom", "ok"]
    assert "out of memory" in rows[1]["error"]
    assert len(archive.load_rows(tmp_path / "runs.csv")) == 3


def test_model_load_failure_is_recorded_per_row(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("weights file is corrupt")

    monkeypatch.setattr(bench.runner, "load_models", broken)
    rows = run_all(tiny_config(tmp_path, methods=["standard", "batched"]))
    assert [r["status"] for r in rows] == ["error", "error"]
    assert "model load failed" in rows[0]["error"] and "corrupt" in rows[0]["error"]


def test_prompt_length_fixes_the_prompt_tokens(tmp_path):
    rows = run_all(tiny_config(tmp_path, methods=["standard"], prompt_length=40, repetitions=1))
    assert rows[0]["prompt_tokens"] == 40


def test_stop_event_keeps_finished_rows(tmp_path):
    """Rows of one variant are measured interleaved; Stop keeps every row with a whole repetition."""
    import threading

    stop = threading.Event()
    config = tiny_config(tmp_path, methods=["standard", "nucleus", "batched"])
    events = bench.runner.run(config, stop)
    finished = []
    with pytest.raises(bench.runner.Stopped):
        for event in events:
            if isinstance(event, bench.runner.RowDone):
                finished.append(event.row)
            elif event.repetition == 2:
                stop.set()  # the user clicks Stop once the second repetition has begun
    assert len(finished) == 3 and all("stopped after 1 of 2 repetitions" in r["notes"] for r in finished)
    assert pd.read_csv(config.results)["method"].tolist() == ["standard", "nucleus", "batched"]


def test_prompt_length_keeps_the_chat_template_whole(tmp_path, tiny_models):
    import dataclasses

    from models.prompts import tokenize_prompts

    tokenizer = tiny_models.tokenizer
    template = "{% for m in messages %}<|im_end|>user: {{ m['content'] }}<|im_end|>{% endfor %}assistant:"
    tokenizer.chat_template = template
    try:
        models = dataclasses.replace(tiny_models, tokenizer=tokenizer)
        config = tiny_config(tmp_path, prompts=["Hi", "Explain speculative decoding in detail please"], prompt_length=30)
        ids = tokenize_prompts(models.tokenizer, config)
        suffix = tokenizer("<|im_end|>assistant:", add_special_tokens=False).input_ids
        for prompt_ids in ids:
            assert len(prompt_ids) == 30
            assert prompt_ids[-len(suffix):] == suffix  # the generation prompt is never cut off
    finally:
        tokenizer.chat_template = None


def test_warm_up_covers_the_longest_prompt_of_each_batch_size(tmp_path, monkeypatch):
    seen = []
    original = METHODS["standard"].generate

    def spy(inputs, settings, engine, probe):
        seen.append(inputs.input_ids.shape[1])
        return original(inputs, settings, engine, probe)

    monkeypatch.setattr(METHODS["standard"], "generate", spy)
    config = tiny_config(tmp_path, methods=["standard"], prompts=["Hi", "word " * 40], warmup=1, repetitions=1)
    run_all(config)
    assert seen[0] == max(seen)  # the one warm-up call ran the longest prompt
    assert len(seen) == 4 and seen[3] == seen[1]  # then 2 measured calls, then the traced one on the first unit

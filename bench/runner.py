"""The one benchmark loop every consumer (CLI, dashboard, tests, scripts) calls.

    for event in run(config):   # Progress while working, RowDone after each row
        ...

It knows no method, engine or metric by name: for each model variant (quantization x attention) it
loads the models once, then for each engine measures every point of the scenario, appends the row
to the store and yields it. Tokenizing happens here, before any clock starts.
"""
from __future__ import annotations

import gc
import math
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from bench import store
from bench.config import Config
from bench.models import LoadedModels, load_models
from bench.rows import add_speedups, base_row, one_line
from bench.variants import variants
from decoding import BASELINE
from engines import make_engine
from metrics.memory import is_out_of_memory
from scenarios import SCENARIOS
from scenarios.context import Context, Progress, Stopped  # noqa: F401 (Progress, Stopped: part of the API)

SCENARIO = SCENARIOS["per_call"]


@dataclass
class RowDone:
    row: dict
    outputs: list = field(default_factory=list)


def points(config: Config) -> list:
    return SCENARIO.points(config)


def total_rows(config: Config) -> int:
    return len(variants(config)) * len(config.engine) * len(points(config))


def run(config: Config, stop_event: threading.Event | None = None, run_id: str | None = None):
    """Yields Progress and RowDone events; every RowDone row is already appended to the CSV."""
    run_id = run_id or datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    total, done = total_rows(config), 0
    for quantization, attention in variants(config):
        yield Progress(f"loading {config.model} ({quantization}, {attention})", done, total)
        try:
            models = load_models(
                config.model, config.draft_model if config.needs_draft() else None, device=config.device,
                dtype=config.dtype, quantization=quantization, quantize_draft=config.quantize_draft,
                attention=attention, random_weights=config.random_weights)
        except Exception as e:  # a model that fails to load is recorded per row, and the run goes on
            for engine_name in config.engine:
                for point in points(config):
                    row = base_row(config, run_id, point, engine_name, quantization, attention, None)
                    row.update(status="oom" if is_out_of_memory(e) else "error",
                               error=one_line(f"model load failed: {e}"))
                    store.append_row(config.results, row)
                    done += 1
                    yield RowDone(row)
            continue
        try:
            prompts = tokenize_prompts(models, config)
            for engine_name in config.engine:
                ctx = Context(config, run_id, models, make_engine(engine_name, models), engine_name, prompts,
                              stop_event, done, total)
                baseline = None
                for point in points(config):
                    ctx.done_rows = done
                    yield ctx.progress(f"{point.method} [{point.setting}] on {engine_name}", point)
                    row = base_row(config, run_id, point, engine_name, quantization, attention, models)
                    outputs = yield from SCENARIO.measure(ctx, point, row)
                    if point.method == BASELINE and row["status"] == "ok":
                        baseline = row
                    add_speedups(row, baseline)
                    store.append_row(config.results, row)
                    store.append_outputs(config.results, outputs)
                    done += 1
                    yield RowDone(row, outputs)
                del ctx
        finally:
            del models
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def tokenize_prompts(models: LoadedModels, config: Config) -> list[list[int]]:
    """Token ids of each prompt, chat template applied when the tokenizer has one. With prompt_length N
    the user text is cut or repeated so that the whole prompt, template included, is exactly N tokens."""
    tok = models.tokenizer
    templated = config.chat_template and getattr(tok, "chat_template", None)
    prefix, suffix = [], []
    if templated:
        marker = "\u2063PROMPT\u2063"  # split the template around the user text, so it is never cut
        text = tok.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                       add_generation_prompt=True, enable_thinking=False)
        before, after = text.split(marker)
        prefix = tok(before, add_special_tokens=False).input_ids
        suffix = tok(after, add_special_tokens=False).input_ids
    out = []
    for prompt in config.prompts:
        body = tok(prompt, add_special_tokens=not templated).input_ids
        if config.prompt_length:
            n = max(1, config.prompt_length - len(prefix) - len(suffix))
            body = (body * math.ceil(n / len(body)))[:n]
        out.append(prefix + body + suffix)
    return out


def run_all(config: Config, stop_event: threading.Event | None = None) -> list[dict]:
    """Runs to the end and returns the rows (what tests and scripts usually want)."""
    return [e.row for e in run(config, stop_event) if isinstance(e, RowDone)]

"""The one benchmark loop every consumer (CLI, dashboard, tests, scripts) calls.

    for event in run(config):   # Progress while working, RowDone after each method x setting
        ...

Per row: warm-up calls (excluded), then `repetitions` passes over the workload, each call wrapped in
a CallTimer and PeakMemory; figures are medians and spread over the measured calls. Tokenizing
happens before and decoding to text after the timed calls.
"""
from __future__ import annotations

import functools
import gc
import itertools
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch

from bench import store
from bench.config import Config
from bench.environment import environment
from bench.models import LoadedModels, load_models
from decoding import METHODS
from decoding.types import Inputs, UnsupportedSetting
from engines import make_engine
from metrics.memory import PeakMemory, is_out_of_memory
from metrics.stats import median, percentile, stdev
from metrics.timing import CallTimer, time_per_output_token

# standard runs first in every variant: the others' speedups are relative to it.
ORDER = ("standard", "nucleus", "beam_search", "batched", "speculative", "prompt_lookup")
RANDOM_WEIGHTS_NOTE = "random weights: acceptance figures are meaningless"


class Stopped(Exception):
    """The user asked to stop; finished rows are already stored."""


@dataclass
class Progress:
    message: str
    done_rows: int
    total_rows: int
    method: str = ""
    setting: str = ""
    repetition: int = 0
    repetitions: int = 0


@dataclass
class RowDone:
    row: dict
    outputs: list = field(default_factory=list)


@dataclass(frozen=True)
class Point:
    """One row to measure: a method at one setting, on one engine and model variant."""

    method: str
    setting: str
    batch_size: int = 1
    do_sample: bool = False


def points(config: Config) -> list[Point]:
    out = []
    for method in sorted(config.methods, key=ORDER.index):
        if method == "batched":
            out += [Point(method, f"batch_size={b}", b, config.batched_do_sample) for b in config.batch_sizes]
        elif method == "speculative":
            out += [Point(method, f"{mode},k={config.num_draft_tokens}", 1, mode == "sampling")
                    for mode in config.speculative_modes]
        elif method == "beam_search":
            out.append(Point(method, f"beams={config.num_beams},return={config.num_return_sequences}"))
        elif method == "prompt_lookup":
            out.append(Point(method, f"lookup={config.prompt_lookup_num_tokens}"))
        else:
            out.append(Point(method, "greedy" if method == "standard" else f"top_p={config.top_p},T={config.temperature}",
                             do_sample=method == "nucleus"))
    return out


def variants(config: Config) -> list[tuple[str, str]]:
    return list(itertools.product(config.quantization, config.attention))


def total_rows(config: Config) -> int:
    return len(variants(config)) * len(config.engine) * len(points(config))


def run(config: Config, stop_event: threading.Event | None = None, run_id: str | None = None):
    """Yields Progress and RowDone events; every RowDone row is already appended to the CSV."""
    run_id = run_id or datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    total = total_rows(config)
    done = 0
    for quantization, attention in variants(config):
        yield Progress(f"loading {config.model} ({quantization}, {attention})", done, total)
        try:
            models = load_models(
                config.model, config.draft_model if config.needs_draft() else None, device=config.device,
                dtype=config.dtype, quantization=quantization, quantize_draft=config.quantize_draft,
                attention=attention, random_weights=config.random_weights)
        except Exception as e:  # a model that fails to load is recorded per row, and the run goes on
            status = "oom" if is_out_of_memory(e) else "error"
            for engine_name in config.engine:
                for point in points(config):
                    row = base_row(config, run_id, point, engine_name, quantization, attention, None)
                    row.update(status=status, error=one_line(f"model load failed: {e}"))
                    store.append_row(config.results, row)
                    done += 1
                    yield RowDone(row)
            continue
        try:
            prompts = tokenize_prompts(models, config)
            for engine_name in config.engine:
                engine = make_engine(engine_name, models)
                standard = None
                for point in points(config):
                    yield Progress(f"{point.method} [{point.setting}] on {engine_name}", done, total,
                                   point.method, point.setting)
                    row, outputs = yield from measure_point(
                        config, run_id, models, engine, engine_name, point, prompts, quantization, attention,
                        stop_event, done, total)
                    if point.method == "standard" and row["status"] == "ok":
                        standard = row
                    add_speedups(row, standard)
                    store.append_row(config.results, row)
                    store.append_outputs(config.results, outputs)
                    done += 1
                    yield RowDone(row, outputs)
                del engine
        finally:
            del models
            gc.collect()
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


def work_units(config: Config, prompts: list[list[int]], batch_size: int, models: LoadedModels) -> list[Inputs]:
    """prompts x completions, cut into left-padded batches of batch_size (the last may be smaller)."""
    items = [(p, c) for p, n in enumerate(config.completions()) for c in range(n)]
    units = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        width = max(len(prompts[p]) for p, _ in chunk)
        ids = [[models.pad_token_id] * (width - len(prompts[p])) + prompts[p] for p, _ in chunk]
        mask = [[0] * (width - len(prompts[p])) + [1] * len(prompts[p]) for p, _ in chunk]
        units.append(Inputs(torch.tensor(ids, device=models.device), torch.tensor(mask, device=models.device),
                            tuple(p for p, _ in chunk), tuple(c for _, c in chunk)))
    return units


def measure_point(config, run_id, models, engine, engine_name, point, prompts, quantization, attention,
                  stop_event, done, total):
    """Warm-up, then the measured repetitions of one row. A generator: yields Progress, returns (row, outputs)."""
    row = base_row(config, run_id, point, engine_name, quantization, attention, models)
    settings = config.settings()
    method = METHODS[point.method]
    if point.method == "speculative":
        method = functools.partial(method, do_sample=point.do_sample)
    units = work_units(config, prompts, point.batch_size, models)
    calls, outputs = [], []
    try:
        warm_start = time.perf_counter()
        compiled_before = getattr(engine, "compile_seconds", float("nan"))
        # Warm up each batch size on its longest prompt: a smaller last batch or a longer prompt (a bigger
        # static cache on the fast engine) must not compile or allocate inside a measured call.
        longest: dict[int, Inputs] = {}
        for u in units:
            if u.batch_size not in longest or u.input_ids.shape[1] > longest[u.batch_size].input_ids.shape[1]:
                longest[u.batch_size] = u
        shapes = longest.values()
        for _ in range(config.warmup):
            for unit in shapes:
                with CallTimer(models.device, stop_event) as probe:
                    method(unit, settings, engine, probe)
                check_stop(stop_event)
        row["warmup_s"] = time.perf_counter() - warm_start
        for rep in range(config.repetitions):
            yield Progress(f"{point.method} [{point.setting}] on {engine_name}: repetition {rep + 1}/{config.repetitions}",
                           done, total, point.method, point.setting, rep + 1, config.repetitions)
            for unit in units:
                with PeakMemory(models.device) as memory, CallTimer(models.device, stop_event) as timer:
                    generation = method(unit, settings, engine, timer)
                check_stop(stop_event)
                calls.append((unit, generation, timer.latency_s, timer.ttft_s, memory))
        # The engine's compile time is cumulative; this row's share is what its warm-up added.
        row["compile_s"] = getattr(engine, "compile_seconds", float("nan")) - compiled_before
    except Stopped:
        raise
    except Exception as e:
        if models.device.type == "cuda":
            torch.cuda.empty_cache()
        row.update(status="oom" if is_out_of_memory(e) else "error", error=one_line(e))
        return row, []
    row.update(summarize(calls, settings.max_new_tokens))
    notes = set(models.notes)
    for _, generation, *_ in calls:
        notes.update(generation.notes)
    if models.random_weights and row["drafted_tokens"]:
        notes.add(RANDOM_WEIGHTS_NOTE)
    row["notes"] = "; ".join(sorted(notes))
    outputs = texts(run_id, point, engine_name, quantization, attention, models, calls[: len(units)])
    return row, outputs


def check_stop(stop_event):
    if stop_event is not None and stop_event.is_set():
        raise Stopped()


def summarize(calls, max_new_tokens: int) -> dict:
    latencies, ttfts, tpots, per_seq, aggregate, drafted, accepted, rounds = [], [], [], [], [], 0, 0, 0
    prompt_tokens, new_tokens = [], []
    for unit, gen, latency, ttft, _ in calls:
        latencies.append(latency)
        ttfts.append(ttft)
        # Decode steps run as long as the longest sequence of the call.
        tpots.append(time_per_output_token(latency, ttft, max(gen.new_tokens)))
        per_seq += [n / latency for n in gen.new_tokens]
        aggregate.append(sum(gen.new_tokens) / latency)
        drafted, accepted, rounds = drafted + gen.drafted, accepted + gen.accepted, rounds + gen.verify_steps
        prompt_tokens += unit.attention_mask.sum(dim=1).tolist()
        new_tokens += gen.new_tokens
    ms = 1000.0
    out = {
        "status": "ok", "calls": len(calls),
        "prompt_tokens": sum(prompt_tokens) / len(prompt_tokens),
        "new_tokens": sum(new_tokens) / len(new_tokens),
        "latency_ms_median": median(latencies) * ms, "latency_ms_p90": percentile(latencies, 90) * ms,
        "latency_ms_std": stdev(latencies) * ms,
        "ttft_ms_median": median(ttfts) * ms, "ttft_ms_p90": percentile(ttfts, 90) * ms,
        "tpot_ms_median": median(tpots) * ms, "tpot_ms_p90": percentile(tpots, 90) * ms,
        "tokens_per_s_per_sequence_median": median(per_seq), "tokens_per_s_per_sequence_std": stdev(per_seq),
        "aggregate_tokens_per_s_median": median(aggregate), "aggregate_tokens_per_s_std": stdev(aggregate),
        "peak_allocated_mib": max(c[4].allocated_mib for c in calls),
        "peak_reserved_mib": max(c[4].reserved_mib for c in calls),
        "start_allocated_mib": max(c[4].start_mib for c in calls),
        "drafted_tokens": drafted, "accepted_tokens": accepted,
        "acceptance_rate": accepted / drafted if drafted else float("nan"),
        # Tokens per target verification forward, the bonus token included (Spec-Bench's tau).
        "mean_accepted_tokens": (accepted + rounds) / rounds if rounds else float("nan"),
    }
    return out


def add_speedups(row: dict, standard: dict | None) -> None:
    if row["status"] != "ok" or standard is None:
        row["speedup_vs_standard"] = row["throughput_vs_standard"] = float("nan")
        return
    row["speedup_vs_standard"] = row["tokens_per_s_per_sequence_median"] / standard["tokens_per_s_per_sequence_median"]
    row["throughput_vs_standard"] = row["aggregate_tokens_per_s_median"] / standard["aggregate_tokens_per_s_median"]


def texts(run_id, point, engine_name, quantization, attention, models, calls) -> list[dict]:
    """Decode the first repetition's sequences to text, long after the clocks stopped."""
    records = []
    for unit, gen, *_ in calls:
        per_input = gen.sequences.shape[0] // unit.batch_size
        for i, (seq, n) in enumerate(zip(gen.sequences, gen.new_tokens)):
            row = i // per_input
            records.append({
                "run_id": run_id, "method": point.method, "setting": point.setting, "engine": engine_name,
                "quantization": quantization, "attention": attention,
                "prompt_index": unit.prompt_indices[row], "completion_index": unit.completion_indices[row],
                "sequence_index": i % per_input,
                "text": models.tokenizer.decode(seq[:n].tolist(), skip_special_tokens=True), "new_tokens": n,
            })
    return records


def base_row(config: Config, run_id, point: Point, engine_name, quantization, attention, models) -> dict:
    device = models.device if models else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sampling = point.do_sample
    row = {c: float("nan") for c in store.COLUMNS}
    row.update({
        "run_id": run_id, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "ok", "error": "", "method": point.method, "setting": point.setting, "engine": engine_name,
        "model": config.model, "draft_model": config.draft_model if point.method == "speculative" else "",
        "dtype": str(models.dtype).replace("torch.", "") if models else config.dtype,
        "quantization": quantization, "attention": attention, "device": device.type,
        "random_weights": config.random_weights, "batch_size": point.batch_size, "do_sample": sampling,
        "temperature": config.temperature if sampling else "", "top_p": config.top_p if sampling else "",
        "top_k": config.top_k if sampling else "",
        "num_beams": config.num_beams if point.method == "beam_search" else 1,
        "num_return_sequences": config.num_return_sequences if point.method == "beam_search" else 1,
        "num_draft_tokens": config.num_draft_tokens if point.method == "speculative" else
        (config.prompt_lookup_num_tokens if point.method == "prompt_lookup" else ""),
        "max_new_tokens": config.max_new_tokens, "stop_at_eos": config.stop_at_eos,
        "num_prompts": len(config.prompts), "sequences": sum(config.completions()),
        "warmup": config.warmup, "repetitions": config.repetitions, "notes": "",
    })
    row.update(environment(device.type))
    return row


def one_line(error) -> str:
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) and not isinstance(
        error, UnsupportedSetting) else str(error)
    return " ".join(text.split())[:500]


def run_all(config: Config, stop_event: threading.Event | None = None) -> list[dict]:
    """Runs to the end and returns the rows (what tests and scripts usually want)."""
    return [e.row for e in run(config, stop_event) if isinstance(e, RowDone)]

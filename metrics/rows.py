"""From measured calls to CSV rows: the columns, a row's settings, its figures, speedups and texts.

A row is a plain dict keyed by COLUMNS. Its settings come from the config and the sweep point, its
figures from the metrics (metrics/), its environment from metrics/environment.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import metrics
from decoding.method import Point
from decoding.types import Generation, Inputs, UnsupportedSetting
from metrics.stats import geometric_mean, geometric_mean_ci

RANDOM_WEIGHTS_NOTE = "random weights: acceptance figures are meaningless"

IDENTITY = ["run_id", "timestamp", "status", "error", "method", "setting", "engine"]
SETTINGS = [
    "run_name", "run_tags", "run_notes",
    "engine_options", "model", "draft_model", "dtype", "quantization", "attention", "device", "random_weights",
    "batch_size", "do_sample", "temperature", "top_p", "top_k", "num_beams", "num_return_sequences",
    "num_draft_tokens", "max_new_tokens", "stop_at_eos", "num_prompts", "sequences", "warmup", "repetitions", "calls",
]
DERIVED = ["speedup_vs_standard", "speedup_vs_standard_ci_low", "speedup_vs_standard_ci_high",
           "throughput_vs_standard", "throughput_vs_standard_ci_low", "throughput_vs_standard_ci_high",
           "greedy_match", "first_divergence", "warmup_s", "compile_s", "token_times_ms", "notes"]
ENVIRONMENT = [
    "device_name", "device_memory_gib", "gpu_count", "gpu_driver", "cpu_model", "cpu_count", "ram_gib",
    "torch_version", "transformers_version",
    "bitsandbytes_version", "cuda_version", "python_version", "hostname",
]
COLUMNS = IDENTITY + SETTINGS + metrics.COLUMNS + DERIVED + ENVIRONMENT
# Columns of free text: read back as written, so a run named "nan" or "NA" stays a name, never a missing value.
TEXT_COLUMNS = ["run_id", "timestamp", "error", "setting", "run_name", "run_tags", "run_notes", "engine_options",
                "model", "draft_model", "server_command", "server_command_run", "server_kind",
                "server_spec_method", "endpoint", "token_times_ms", "workload", "ttft_ms_by_turn",
                "tpot_ms_by_turn", "notes", "device_name",
                "gpu_driver", "cpu_model", "hostname", "regime"]
# The base columns' descriptions, as each metric's `help` holds its own (docs/columns.md, scripts/reference.py).
HELP = {
    **dict.fromkeys(("run_id", "timestamp"), "the invocation (UTC time the row was started)"),
    **dict.fromkeys(("run_name", "run_tags", "run_notes"),
                    "the run's `name`, `tags` and `run_notes` as it started; renamed, re-tagged or hidden later in "
                    "`runs_meta.json` beside the CSV (History), never in the CSV"),
    **dict.fromkeys(("status", "error"), "`ok`, `oom` or `error`, and the one-line reason"),
    **dict.fromkeys(("method", "setting"), "decoding method and the sweep point that tells its rows apart (e.g. "
                                           "`batch_size=4`, `greedy,k=5`)"),
    "engine": "`hf`, `hf_compiled` or `fast` (or a serving engine: `continuous`, `server`)",
    "engine_options": "the engine's own config keys as `key=value` pairs (e.g. `compile=true, fast_fuse=true`), so a "
                      "figure always says how it was made",
    **dict.fromkeys(("model", "draft_model", "dtype", "quantization", "attention", "device", "random_weights"),
                    "what ran"),
    **dict.fromkeys(("batch_size", "do_sample", "temperature", "top_p", "top_k", "num_beams", "num_return_sequences",
                     "num_draft_tokens"),
                    "method settings (`num_draft_tokens` is k, or the lookup length for prompt_lookup)"),
    **dict.fromkeys(("max_new_tokens", "stop_at_eos", "num_prompts", "sequences", "warmup", "repetitions"),
                    "workload and protocol (`sequences` = sequences per repetition, grown to fill whole batches; "
                    "`repetitions` = how many this row really ran)"),
    "calls": "measured method calls in the row (repetitions × calls per repetition)",
    **dict.fromkeys(("speedup_vs_standard", "speedup_vs_standard_ci_low", "speedup_vs_standard_ci_high"),
                    "per-sequence tok/s against the `standard` row of the same run, engine, quantization and "
                    "attention, paired by prompt, completion and repetition: geometric mean of the ratios and its 95% "
                    "bootstrap interval"),
    **dict.fromkeys(("throughput_vs_standard", "throughput_vs_standard_ci_low", "throughput_vs_standard_ci_high"),
                    "the same for aggregate tok/s"),
    **dict.fromkeys(("greedy_match", "first_divergence"),
                    "share of sequences token-identical to `standard`'s greedy text for the same prompt and completion "
                    "(same engine and variant), and the median first differing token of the others; lossless methods "
                    "below 1.0 get a warning note"),
    **dict.fromkeys(("warmup_s", "compile_s"),
                    "wall time of the warm-up calls; compile/capture time of the `hf_compiled` and `fast` engines "
                    "(never in the figures)"),
    "token_times_ms": "latency detail: ms from the start of one traced call (run after the measured ones, on the row's "
                      "first batch, every step timed and so a little slower) to each new token of its first sequence, "
                      "space separated; tokens a speculative round accepted together share one time. Drawn as the "
                      "token timeline and the inter-token latency histogram",
    "notes": "e.g. \"random weights: acceptance figures are meaningless\"",
    **dict.fromkeys(("device_name", "device_memory_gib", "gpu_count", "torch_version", "transformers_version",
                     "bitsandbytes_version", "cuda_version", "python_version", "hostname"),
                    "where the row was measured (`device_name`: the GPU's name, or on the CPU its model name from "
                    "`/proc/cpuinfo`)"),
    **dict.fromkeys(("gpu_driver", "cpu_model", "cpu_count", "ram_gib"),
                    "what tells machines apart: the NVIDIA driver (NVML; empty without a GPU), the CPU model name, the "
                    "cores this process may use, the machine's RAM"),
}


@dataclass
class Call:
    """One measured method call: its inputs, what the engine returned, and the trackers around it."""

    unit: Inputs
    generation: Generation
    trackers: tuple
    repetition: int = 0

    def tracker(self, kind: type):
        return next(t for t in self.trackers if isinstance(t, kind))


def base_row(config, run_id: str, point: Point, engine: str, quantization: str, attention: str, models) -> dict:
    """Everything but the figures: what ran, where, and how it was measured."""
    import torch

    from metrics.environment import environment

    device = models.device if models else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sampling = point.do_sample
    row = {c: float("nan") for c in COLUMNS}
    row.update({
        "run_id": run_id, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "ok", "error": "", "method": point.method, "setting": point.setting, "engine": engine,
        "model": config.model, "draft_model": "",
        "dtype": str(models.dtype).replace("torch.", "") if models else config.dtype,
        "quantization": quantization, "attention": attention, "device": device.type,
        "random_weights": config.random_weights, "batch_size": point.batch_size, "do_sample": sampling,
        "temperature": config.temperature if sampling else "", "top_p": config.top_p if sampling else "",
        "top_k": config.top_k if sampling else "", "num_beams": 1, "num_return_sequences": 1, "num_draft_tokens": "",
        "max_new_tokens": config.max_new_tokens, "stop_at_eos": config.stop_at_eos,
        "run_name": config.name or "", "run_tags": config.tags or "", "run_notes": config.run_notes or "",
        "num_prompts": len(config.prompts), "sequences": sum(config.completions()),
        "warmup": config.warmup, "repetitions": config.repetitions, "notes": "",
    })
    row.update(point.params)
    row.update(environment(device.type))
    return row


def figures(calls: list[Call], ctx, row: dict) -> dict:
    """The row's figures from its measured calls, and the notes the loader and engines left."""
    out = {"status": "ok", "calls": len(calls), **metrics.summarize(calls, ctx, row)}
    notes = set(filter(None, str(row.get("notes") or "").split("; "))) | set(ctx.models.notes)
    for call in calls:
        notes.update(call.generation.notes)
    if ctx.models.random_weights and out["drafted_tokens"]:
        notes.add(RANDOM_WEIGHTS_NOTE)
    out["notes"] = "; ".join(sorted(notes))
    return out


def per_item(calls: list[Call], figure) -> dict[tuple, float]:
    """(prompt, completion, repetition) -> the figure of that sequence (the mean over its returned beams)."""
    from metrics.timing import CallTimer

    values: dict[tuple, list[float]] = {}
    for call in calls:
        latency = call.tracker(CallTimer).latency_s
        per_input = len(call.generation.new_tokens) // call.unit.batch_size
        for i, n in enumerate(call.generation.new_tokens):
            key = (call.unit.prompt_indices[i // per_input], call.unit.completion_indices[i // per_input],
                   call.repetition)
            values.setdefault(key, []).append(figure(n, latency, call))
    return {k: sum(v) / len(v) for k, v in values.items()}


SPEEDUPS = {  # column -> the per-sequence figure whose ratio to the baseline's is the speedup
    "speedup_vs_standard": lambda n, latency, call: n / latency,
    "throughput_vs_standard": lambda n, latency, call: sum(call.generation.new_tokens) / latency,
}


def add_speedups(row: dict, calls: list[Call], baseline_calls: list[Call] | None) -> None:
    """Paired speedups: each sequence against the baseline's run of the same prompt and completion in the
    same repetition (measured close in time, so drift cancels), aggregated by a geometric mean with a
    bootstrap interval. Items the baseline never ran (a workload grown to fill a batch) are not paired."""
    for column, figure in SPEEDUPS.items():
        row[column] = row[f"{column}_ci_low"] = row[f"{column}_ci_high"] = float("nan")
        if row["status"] != "ok" or not baseline_calls:
            continue
        mine, base = per_item(calls, figure), per_item(baseline_calls, figure)
        ratios = [mine[k] / base[k] for k in mine if k in base and base[k] > 0]
        row[column] = geometric_mean(ratios)
        row[f"{column}_ci_low"], row[f"{column}_ci_high"] = geometric_mean_ci(ratios)


def output_records(row: dict, tokenizer, calls: list[Call], prompts: list[str] | None = None) -> list[dict]:
    """Every sequence of these calls as text, decoded long after the clocks stopped, with the prompt it answers
    (as configured), so Samples and reports show it after the dashboard that ran it is gone."""
    records = []
    for call in calls:
        gen, unit = call.generation, call.unit
        per_input = gen.sequences.shape[0] // unit.batch_size
        for i, (seq, n) in enumerate(zip(gen.sequences, gen.new_tokens)):
            item = i // per_input
            records.append({
                **{k: row[k] for k in ("run_id", "method", "setting", "engine", "quantization", "attention")},
                "prompt_index": unit.prompt_indices[item], "completion_index": unit.completion_indices[item],
                "sequence_index": i % per_input,
                "text": tokenizer.decode(seq[:n].tolist(), skip_special_tokens=True), "new_tokens": n,
                **({"prompt": prompts[unit.prompt_indices[item]]} if prompts else {}),
            })
    return records


def one_line(error) -> str:
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) and not isinstance(
        error, UnsupportedSetting) else str(error)
    return " ".join(text.split())[:500]

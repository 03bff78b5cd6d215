"""The per-call scenario: each row is warm-up calls, then `repetitions` measured passes over the
workload (prompts x completions, cut into batches), every call wrapped in the metric trackers."""
from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack

import metrics
from bench.rows import Call, figures, one_line, output_records
from decoding import METHODS
from decoding.types import Inputs
from metrics.memory import is_out_of_memory
from metrics.timing import CallTimer
from scenarios.context import Context, Stopped, check_stop


def points(config) -> list:
    """Every method's sweep points, in registry order (the baseline first)."""
    return [p for name in METHODS if name in config.methods for p in METHODS[name].points(config)]


def work_units(ctx: Context, batch_size: int) -> list[Inputs]:
    """prompts x completions, cut into left-padded batches of batch_size (the last may be smaller)."""
    import torch

    prompts, pad, device = ctx.prompts, ctx.models.pad_token_id, ctx.models.device
    items = [(p, c) for p, n in enumerate(ctx.config.completions()) for c in range(n)]
    units = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        width = max(len(prompts[p]) for p, _ in chunk)
        ids = [[pad] * (width - len(prompts[p])) + prompts[p] for p, _ in chunk]  # (b, width)
        mask = [[0] * (width - len(prompts[p])) + [1] * len(prompts[p]) for p, _ in chunk]  # (b, width)
        units.append(Inputs(torch.tensor(ids, device=device), torch.tensor(mask, device=device),
                            tuple(p for p, _ in chunk), tuple(c for _, c in chunk)))
    return units


def warm_up_units(units: list[Inputs]) -> list[Inputs]:
    """The longest prompt of each batch size: a smaller last batch or a longer prompt (a bigger static cache
    on the fast engine) must not compile or allocate inside a measured call."""
    longest: dict[int, Inputs] = {}
    for u in units:
        if u.batch_size not in longest or u.input_ids.shape[1] > longest[u.batch_size].input_ids.shape[1]:
            longest[u.batch_size] = u
    return list(longest.values())


def measure(ctx: Context, point, row: dict):
    """Warm-up, then the measured repetitions of one row. A generator: yields Progress, returns outputs
    (the texts of the first repetition) after filling `row` with figures or with the error."""
    config, device = ctx.config, ctx.models.device
    method = METHODS[point.method]
    if method.engines is not None and ctx.engine_name not in method.engines:
        row.update(status="error", error=f"{point.method} runs on the {' or '.join(method.engines)} engine only: "
                                         f"set engine {method.engines[0]!r} for {point.method}")
        return []
    settings = dataclasses.replace(config.settings(), **point.overrides)
    units = work_units(ctx, point.batch_size)
    calls: list[Call] = []
    try:
        warm_start = time.perf_counter()
        compiled_before = getattr(ctx.engine, "compile_seconds", float("nan"))
        for _ in range(config.warmup):
            for unit in warm_up_units(units):
                with CallTimer(device, ctx.stop_event) as probe:
                    method(unit, settings, ctx.engine, probe, **point.call)
                check_stop(ctx.stop_event)
        row["warmup_s"] = time.perf_counter() - warm_start
        for rep in range(config.repetitions):
            yield ctx.progress(f"{point.method} [{point.setting}] on {ctx.engine_name}: repetition "
                               f"{rep + 1}/{config.repetitions}", point, rep + 1)
            for unit in units:
                trackers = tuple(t(device, ctx.stop_event) for t in metrics.TRACKERS)
                probe = next(t for t in trackers if isinstance(t, CallTimer))  # it also tells the engine when to stop
                with ExitStack() as stack:
                    for tracker in reversed(trackers):
                        stack.enter_context(tracker)
                    generation = method(unit, settings, ctx.engine, probe, **point.call)
                check_stop(ctx.stop_event)
                calls.append(Call(unit, generation, trackers))
        # The engine's compile time is cumulative; this row's share is what its warm-up added.
        row["compile_s"] = getattr(ctx.engine, "compile_seconds", float("nan")) - compiled_before
    except Stopped:
        raise
    except Exception as e:
        if device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
        row.update(status="oom" if is_out_of_memory(e) else "error", error=one_line(e))
        return []
    row.update(figures(calls, ctx.models))
    return output_records(row, ctx.models.tokenizer, calls[: len(units)])

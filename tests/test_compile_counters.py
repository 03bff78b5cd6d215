"""Every row of a compiling engine says what torch compiled, from torch's own counters, and a measured call that
compiled is noted and marks the row unstable. The compiled path runs here for real: the fast engine compiled with
inductor on the CPU (no CUDA graphs), one small model, one test that compiles (slow on 2 cores)."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from conftest import RANDOM_TARGET, tiny_config  # noqa: E402
from metrics.compiles import CompileCounters, delta, dirty, snapshot  # noqa: E402


def context(config, models, engine, name="fast"):
    from models.prompts import tokenize_prompts
    from scenarios.context import ScenarioContext

    return ScenarioContext(config, "run", models, engine, name, tokenize_prompts(models.tokenizer, config))


def jobs_for(ctx, config):
    from bench.runner import new_row
    from scenarios.per_call import Job, points

    return [Job(ctx, p, new_row(config, "run", p, ctx.engine_name, "none", "sdpa", ctx.models)) for p in points(config)]


def progress(message, job, fraction):
    return message


def test_a_compile_inside_a_measured_call_is_counted_noted_and_marks_the_row_unstable(tmp_path):
    from engines.fast import FastEngine
    from models.loading import load_models
    from scenarios.per_call import measure, measure_repetition, work_units

    torch._dynamo.reset()
    config = tiny_config(tmp_path, model=RANDOM_TARGET, methods=["standard"], prompts=["Explain speculative decoding"],
                         completions_per_prompt=1, max_new_tokens=6, warmup=1, repetitions=2, engine=["fast"])
    models = load_models(RANDOM_TARGET, None, device="cpu", dtype="float32")
    engine = FastEngine(models, compile_cpu=True)
    assert engine.compile and engine.compile_options.get("coordinate_descent_tuning")
    ctx = context(config, models, engine)
    [job] = jobs_for(ctx, config)
    list(measure([job], progress))
    assert job.row["status"] == "ok", job.row["error"]
    clean = CompileCounters.summarize(job.calls, ctx, job.row)
    # The warm-up compiled the decode step; the measured calls replayed it and compiled nothing.
    assert job.row["compile_s"] > 0 and clean["compiled_graphs"] >= 1
    assert clean["measured_compiles"] == 0 and clean["measured_cudagraph_records"] == 0 and "unstable" not in clean
    assert "unstable: a measured call" not in job.row["notes"]

    # A deliberately changed shape: a prompt longer than the cache the warm-up sized, so the engine grows its cache
    # and the step compiles again inside the measured call.
    long_prompt = list(range(3, 3 + 140))
    ctx.prompts.append(long_prompt)
    job.units = work_units(ctx, [(len(ctx.prompts) - 1, 0)], 1)
    measure_repetition(job)
    dirty_row = CompileCounters.summarize(job.calls, ctx, job.row)
    assert dirty_row["measured_compiles"] >= 1 and dirty_row["unstable"] is True
    assert f"repetition {job.repetitions}, batch 1 x {len(long_prompt)} prompt tokens" in job.row["notes"]
    assert "compile(s)/recompile(s)" in job.row["notes"] and "unstable" in job.row["notes"]


def test_engines_that_never_compile_leave_the_columns_empty(tmp_path, tiny_models):
    from engines.hf import HFEngine
    from scenarios.per_call import measure

    config = tiny_config(tmp_path, methods=["standard"], prompts=["Hi"], completions_per_prompt=1, max_new_tokens=4,
                         warmup=1, repetitions=1)
    ctx = context(config, tiny_models, HFEngine(tiny_models), "hf")
    [job] = jobs_for(ctx, config)
    list(measure([job], progress))
    out = CompileCounters.summarize(job.calls, ctx, job.row)
    assert all(v != v for v in out.values())  # NaN: nothing of hf is compiled, so there is nothing to count


def test_counters_see_a_compile_and_a_graph_break():
    """The counters the tracker reads are torch's: a plain compile counts a compile and a graph; a graph break
    (data-dependent Python control flow) counts too."""
    torch._dynamo.reset()

    def broken(x):
        y = x + 1
        if y.sum().item() > 0:  # a host read: dynamo breaks the graph here
            return y * 2
        return y

    before = snapshot()
    torch.compile(broken, backend="eager")(torch.ones(3))
    counts = delta(before, snapshot())
    assert counts["compiles"] >= 1 and counts["graphs"] >= 1 and counts["graph_breaks"] >= 1 and dirty(counts)
    assert not dirty(delta(snapshot(), snapshot()))


def test_fast_steps_compile_fullgraph_so_a_graph_break_fails_loudly():
    from engines.fast.engine import compiled

    def breaks(x):
        if x.sum().item() > 0:
            return x * 2
        return x

    with pytest.raises(Exception, match="(?i)graph break|unsupported|data-dependent|item"):
        compiled(breaks, ())(torch.ones(2))


def test_inductor_tuning_is_the_fast_engines_own_and_never_process_wide(tiny_models):
    import torch._inductor.config as inductor

    from engines.fast import FastEngine
    from engines.fast.steps import compile_options

    before = inductor.coordinate_descent_tuning
    engine = FastEngine(tiny_models, compile_cpu=True)
    assert inductor.coordinate_descent_tuning == before  # hf_compiled, built beside it, compiles with the defaults
    assert engine.compile_options == compile_options(False, True)
    assert compile_options(True, False) == {"triton.cudagraphs": True}  # CUDA graphs: mode="reduce-overhead"
    assert any("coordinate_descent_tuning=True" in n for n in engine.notes)  # the row says how it compiled
    assert FastEngine(tiny_models, fast_tuning=False, compile_cpu=True).compile_options == {}

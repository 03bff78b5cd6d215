"""The defects a GPU would hit (issue 22), each shown on the CPU where it can be: version-gated behaviour against the
installed transformers with the other branch faked, caches sized for the largest k up front, one persistent static
cache per shape, fused weights before anything compiles, the attention a row names, the continuous engine's cache key,
energy over whole repetitions, and the bytes MBU counts."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from conftest import RANDOM_DRAFT, RANDOM_TARGET, make_inputs, tiny_config  # noqa: E402
from decoding import METHODS, Settings  # noqa: E402
from decoding.types import NullProbe, UnsupportedSetting  # noqa: E402


def run(method, engine, inputs, settings=Settings(max_new_tokens=8), **call):
    return METHODS[method](inputs, settings, engine, NullProbe(), **call)


# -- 1. hf_compiled drafting needs transformers 5.24 --------------------------------------------------------------


def test_hf_compiled_refuses_drafting_below_5_24_with_a_reason(tiny_models, monkeypatch):
    import engines.hf_compiled as hfc

    assert hfc.transformers_version() >= hfc.STATIC_DRAFTING  # the installed one runs it (the other tests)
    x = make_inputs(tiny_models, [1])
    engine = hfc.HFCompiledEngine(tiny_models)
    monkeypatch.setattr(hfc, "transformers_version", lambda: (5, 23))
    for method, call in (("speculative", {"do_sample": False}), ("prompt_lookup", {})):
        with pytest.raises(UnsupportedSetting, match=r"transformers >= 5\.24 .*this is 5\.23.*engine 'hf' or 'fast'"):
            run(method, engine, x, **call)
    with pytest.raises(UnsupportedSetting, match="step_time_ratio"):
        engine.step_time_ratio(x)
    assert run("standard", engine, x).sequences.shape[1] == 8  # what 5.17-5.23 run fine stays


# -- 3. fused at construction --------------------------------------------------------------------------------------


def test_fast_engine_fuses_when_built_not_on_its_first_call():
    """Another engine compiled before the fast engine's first call must find the parameters it captured."""
    from engines.fast import FastEngine
    from models.loading import load_models

    models = load_models(RANDOM_TARGET, RANDOM_DRAFT, device="cpu", dtype="float32")
    attn = models.target.model.layers[0].self_attn
    assert attn.q_proj.weight.untyped_storage().data_ptr() != attn.v_proj.weight.untyped_storage().data_ptr()
    FastEngine(models)
    for model in (models.target, models.draft):
        a = model.model.layers[0].self_attn
        assert a.q_proj.weight.untyped_storage().data_ptr() == a.v_proj.weight.untyped_storage().data_ptr()


# -- 6. the attention a row names is the attention that ran ------------------------------------------------------


def test_eager_attention_runs_the_models_own_forward_and_says_so():
    from engines.fast import FastEngine
    from engines.fast.model import HFForward
    from models.loading import load_models

    models = load_models(RANDOM_TARGET, None, device="cpu", dtype="float32", attention="eager")
    engine = FastEngine(models)
    assert isinstance(engine._forward(models.target), HFForward)
    assert any("attention 'eager'" in n and "SDPA" in n for n in engine.notes)
    x = make_inputs(models, [0])
    from engines.hf import HFEngine

    assert torch.equal(run("standard", engine, x).sequences, run("standard", HFEngine(models), x).sequences)


# -- 4. caches sized for the largest k before any row warms up -----------------------------------------------------


def test_a_drafting_row_never_replaces_the_cache_a_standard_row_runs_on(tmp_path, tiny_models):
    """standard needs L + 40 + 1 slots (under 128); prompt lookup with k = 10 needs L + 40 + 11 (over 128 for this
    prompt). Without the reservation its warm-up would grow the shared target cache, and standard's next measured
    call would run on a new cache (on a GPU: compile and capture inside the timer)."""
    from engines.fast import FastEngine
    from scenarios.per_call import measure
    from test_compile_counters import context, jobs_for

    config = tiny_config(tmp_path, methods=["standard", "prompt_lookup"], prompts=["a b c " * 20],
                         completions_per_prompt=1, max_new_tokens=40, warmup=1, repetitions=2,
                         prompt_lookup_num_tokens=10)
    ctx = context(config, tiny_models, FastEngine(tiny_models))
    length = len(ctx.prompts[0])
    assert length + 40 + 1 <= 128 < length + 40 + 11, length  # the boundary this test is about
    jobs = jobs_for(ctx, config)
    caches = []
    original = ctx.engine._cache

    def spy(role, model, batch, need):
        cache = original(role, model, batch, need)
        caches.append((role, cache.serial))
        return cache

    ctx.engine._cache = spy
    list(measure(jobs, progress=lambda message, job, fraction: message))
    assert all(j.row["status"] == "ok" for j in jobs), [j.row["error"] for j in jobs]
    assert len({serial for role, serial in caches if role == "target"}) == 1  # one cache, never replaced
    assert ctx.engine._caches[("target", id(tiny_models.target), 1)].max_len == 256


# -- 5. hf_compiled: one persistent static cache per shape -------------------------------------------------------


def test_hf_compiled_reuses_one_static_cache_per_shape_across_calls(tiny_models):
    """transformers makes a new StaticCache per generate call; new buffer addresses would re-record CUDA graphs
    inside measured calls. The engine hands generate its own, reset in place, so calls of one shape see the same
    buffers even with another shape in between, and the tokens stay hf's."""
    from engines.hf import HFEngine
    from engines.hf_compiled import HFCompiledEngine

    engine, hf = HFCompiledEngine(tiny_models), HFEngine(tiny_models)
    one, two = make_inputs(tiny_models, [1]), make_inputs(tiny_models, [0, 1])

    def addresses():
        return {key: [layer.keys.data_ptr() for layer in cache.layers] for key, cache in engine._static_caches.items()}

    first = run("standard", engine, one)
    seen = addresses()
    from decoding.types import Request

    engine.generate(Request(two.input_ids, two.attention_mask, 8, 8), NullProbe())  # another shape in between
    again = run("standard", engine, one)
    after = addresses()
    assert len(engine._static_caches) == 2
    assert all(after[key] == ptrs for key, ptrs in seen.items())  # the batch-1 cache kept its buffers
    assert torch.equal(first.sequences, again.sequences) and torch.equal(first.sequences,
                                                                          run("standard", hf, one).sequences)
    assert engine.held_bytes() > 0 and getattr(again, "reads", {}).get("target_slots", 0) % 128 == 0


# -- 7. continuous batching: the block-size key this transformers has ---------------------------------------------


def test_continuous_picks_the_cache_key_its_transformers_has():
    import dataclasses as dc

    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    from engines.continuous import block_size_key

    installed = {f.name for f in dc.fields(ContinuousBatchingConfig)}
    assert block_size_key(installed) in installed
    assert block_size_key({"block_size", "num_blocks"}) == "block_size"  # 5.17's ContinuousBatchingConfig
    assert block_size_key({"page_size", "num_blocks"}) == "page_size"
    with pytest.raises(UnsupportedSetting, match="cb_block_size"):
        block_size_key({"num_blocks"})


# -- 9. energy over whole repetitions, at the counter's resolution -------------------------------------------------


def test_energy_is_measured_over_repetitions_and_refused_below_the_counters_resolution(monkeypatch, tiny_models):
    """A counter that moves every 10 ms: 50 ms calls are too short for a per-call figure (fewer than 10 updates),
    but their repetition of 4 calls (200 ms) is long enough for J/token and watts. The readings are set by hand,
    as the counter would give them; the arithmetic is the meter's."""
    import metrics.energy as energy
    from decoding.types import Generation
    from metrics.rows import Call
    from metrics.timing import CallTimer

    monkeypatch.setattr(energy, "update_period_s", lambda source, handle=None: 0.010)
    x = make_inputs(tiny_models, [0])
    calls = []
    for rep in range(2):
        for i in range(4):
            meter = energy.EnergyMeter(torch.device("cpu"))
            meter.source = "rapl"
            t0 = rep * 1.0 + i * 0.05
            meter.start_j, meter.end_j, meter.start_t, meter.end_t = 100 * t0, 100 * (t0 + 0.05), t0, t0 + 0.05
            meter.joules = meter.end_j - meter.start_j
            timer = CallTimer(torch.device("cpu"))
            timer.start, timer.end = t0, t0 + 0.05
            gen = Generation(torch.ones(1, 10, dtype=torch.long), (99,))
            calls.append(Call(x, gen, (timer, meter), rep))
    out = energy.EnergyMeter.summarize(calls)
    assert out["energy_resolution_ms"] == pytest.approx(10.0)
    assert out["energy_j_median"] != out["energy_j_median"]  # 50 ms < 10 updates: refused
    assert out["watts_mean"] == pytest.approx(100.0) and out["joules_per_token"] == pytest.approx(100 * 0.2 / 40)
    assert energy.nvml_uuid(torch.device("cpu")) is None or energy.nvml_uuid(torch.device("cpu")).startswith("GPU-")


# -- 10. MBU counts what is really read ---------------------------------------------------------------------------


def test_weight_bytes_count_the_4bit_scales():
    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    from metrics.bandwidth import weight_bytes

    packed, state = F.quantize_4bit(torch.randn(64, 128), quant_type="nf4", compress_statistics=False)
    layer = torch.nn.Module()
    layer.weight = bnb.nn.Params4bit(packed, requires_grad=False, quant_state=state, quant_type="nf4")
    scales = state.absmax.numel() * state.absmax.element_size() + state.code.numel() * state.code.element_size()
    assert weight_bytes(layer) == packed.numel() + scales
    assert 0.12 <= state.absmax.numel() * 4 / packed.numel() <= 0.13  # "about 12% of the NF4 bytes"


def test_fast_engine_reports_every_forward_it_ran_at_its_caches_length(tiny_models):
    """The fast loops run k draft steps per round however many drafts are offered, and attend over the whole static
    cache: `reads` says so, and MBU counts it (metrics/bandwidth.py)."""
    from engines.fast import FastEngine

    x = make_inputs(tiny_models, [1])
    k = 5
    settings = Settings(max_new_tokens=12, num_draft_tokens=k)
    for nosync in (True, False):
        g = run("speculative", FastEngine(tiny_models, fast_nosync=nosync), x, settings, do_sample=False)
        reads = g.reads
        assert reads["target_slots"] % 128 == 0 and reads["draft_slots"] == reads["target_slots"]
        assert reads["draft_forwards"] >= k * g.drafts.rounds + 1 > g.drafts.drafted_all  # k per round, not offered
        assert reads["target_forwards"] >= g.drafts.target_forwards
    standard = run("standard", FastEngine(tiny_models), x, dataclasses.replace(settings))
    assert standard.reads == {"target_slots": 128}


# -- part 3: the regime each engine's rows ran in ------------------------------------------------------------------


def test_regime_from_mbu_and_the_tables_footer():
    """On the recorded H100 eager generate read the 4B weights at 3-8% of copy bandwidth, the fast engine at 56%."""
    from metrics.bandwidth import regime
    from views.table import regime_notes

    assert (regime(0.05), regime(0.2), regime(0.56), regime(float("nan"))) == ("host-bound", "mixed",
                                                                                "bandwidth-bound", "")
    rows = [dict(status="ok", engine="hf", mbu=0.04, regime="host-bound"),
            dict(status="ok", engine="hf", mbu=0.06, regime="host-bound"),
            dict(status="ok", engine="fast", mbu=0.56, regime="bandwidth-bound")]
    [line] = regime_notes(rows)
    assert "hf host-bound (MBU 0.04-0.06)" in line and "fast bandwidth-bound (MBU 0.56)" in line
    assert "not measured here" in regime_notes([dict(status="ok", engine="hf", mbu=float("nan"), regime="")])[0]

"""The `hf_compiled` engine on the CPU (float32, static cache, nothing compiled): the `hf` engine's tokens on a static
cache, through the engine and through the runner; and the profile table of benchmarks/profile_decode.py on a CPU
trace. Nothing here times anything."""
import dataclasses
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from bench.runner import run_all  # noqa: E402
from conftest import ROOT, tiny_config  # noqa: E402
from decoding import METHODS, Settings  # noqa: E402
from decoding.types import NullProbe, Request  # noqa: E402
from engines.hf import HFEngine  # noqa: E402
from engines.hf_compiled import CACHE_ROUND, HFCompiledEngine  # noqa: E402

S = Settings(max_new_tokens=24)


def run(method, engine, inputs, settings=S, **call):
    return METHODS[method](inputs, settings, engine, NullProbe(), **call)


@pytest.fixture(scope="module")
def compiled(tiny_models):
    return HFCompiledEngine(tiny_models)


@pytest.fixture(scope="module")
def hf(tiny_models):
    return HFEngine(tiny_models)


def texts(models, generation):
    return models.tokenizer.batch_decode(generation.sequences, skip_special_tokens=True)


@pytest.mark.parametrize("prompt", [0, 1, 2])
def test_standard_greedy_equals_hf(tiny_models, inputs, compiled, hf, prompt):
    x = inputs([prompt])
    ours, ref = run("standard", compiled, x), run("standard", hf, x)
    assert torch.equal(ours.sequences, ref.sequences)
    assert texts(tiny_models, ours) == texts(tiny_models, ref)
    assert ours.engine == "hf_compiled" and ours.new_tokens == [S.max_new_tokens]


def test_batched_left_padded_greedy_equals_hf(tiny_models, inputs, compiled, hf):
    x = inputs([0, 1, 2])  # three prompt lengths: two rows are left-padded
    assert len(set(x.attention_mask.sum(dim=1).tolist())) == 3
    ours, ref = run("batched", compiled, x), run("batched", hf, x)
    assert torch.equal(ours.sequences, ref.sequences)
    assert texts(tiny_models, ours) == texts(tiny_models, ref)


@pytest.mark.parametrize("method,call", [("nucleus", {}), ("typical", {}), ("beam_search", {}),
                                         ("speculative", {}), ("speculative", {"do_sample": True}),
                                         ("prompt_lookup", {})])
def test_every_other_method_runs_on_a_static_cache_with_hf_tokens(tiny_models, inputs, compiled, hf, method, call):
    """The calls are the hf engine's; only the cache differs, so seeded sampling and drafting match too."""
    x = inputs([1])
    ours, ref = run(method, compiled, x, **call), run(method, hf, x, **call)
    assert torch.equal(ours.sequences, ref.sequences)
    assert (ours.drafts.drafted, ours.drafts.accepted, ours.drafts.rounds) == \
        (ref.drafts.drafted, ref.drafts.accepted, ref.drafts.rounds)


def test_the_target_sees_a_static_cache_and_hf_keeps_its_dynamic_one(tiny_models, inputs, compiled, hf, monkeypatch):
    target = tiny_models.target
    seen = []
    forward = type(target).forward

    def spy(self, *args, **kwargs):
        if self is target:
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            seen.append((type(cache).__name__, cache.get_max_length() if cache is not None else None))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(target), "forward", spy)
    x = inputs([1])
    run("standard", compiled, x)
    lengths = {length for kind, length in seen}
    assert {kind for kind, _ in seen} == {"StaticCache"}
    # One length for the whole call, rounded up, with room for the prompt and every new token.
    assert len(lengths) == 1 and lengths.pop() % CACHE_ROUND == 0
    assert "generate" not in vars(target)  # the switch to a static cache lasts one call
    seen.clear()
    run("standard", hf, x)
    assert {kind for kind, _ in seen} == {"DynamicCache"}


def test_cache_length_grows_per_row_shape_only(tiny_models, inputs, compiled):
    """A longer request of one shape must not change the cache length (so the graphs) of another."""
    engine = HFCompiledEngine(tiny_models)
    x = inputs([1])
    short = Request(x.input_ids, x.attention_mask, 8, 8)
    longer = dataclasses.replace(short, max_new_tokens=3 * CACHE_ROUND, min_new_tokens=3 * CACHE_ROUND)
    batch = inputs([0, 1])
    first, key = engine._cache_length(short)
    assert engine._cache_length(Request(batch.input_ids, batch.attention_mask, 3 * CACHE_ROUND, 0))[0] > first
    assert engine._cache_length(short) == (first, key)
    grown, _ = engine._cache_length(longer)
    assert grown > first and engine._cache_length(short)[0] == grown  # shorter requests of that shape reuse it


def test_cpu_runs_uncompiled_and_says_so(inputs, compiled):
    g = run("standard", compiled, inputs([0]))
    assert compiled.compile is False and compiled.compile_seconds == 0.0
    assert any("without torch.compile" in n for n in g.notes)


def test_step_time_ratio_leaves_the_engine_as_it_was(tiny_models, inputs, compiled):
    x = inputs([1])
    before = run("standard", compiled, x)
    c = compiled.step_time_ratio(x)
    assert c > 0
    assert torch.equal(run("standard", compiled, x).sequences, before.sequences)


def test_a_model_without_static_cache_support_is_refused(tiny_models, inputs, compiled, monkeypatch):
    monkeypatch.setattr(type(tiny_models.target), "_supports_default_dynamic_cache", classmethod(lambda cls: False))
    with pytest.raises(ValueError, match="cannot run it on a static cache"):
        run("standard", compiled, inputs([0]))


def test_runner_rows_beside_hf(tmp_path):
    config = tiny_config(tmp_path, engine=["hf", "hf_compiled"], repetitions=1, batch_sizes=[2],
                         methods=["standard", "batched", "speculative", "prompt_lookup"])
    rows = run_all(config)
    by = {(r["engine"], r["method"]): r for r in rows}
    assert len(rows) == 8
    for method in ("standard", "batched", "speculative", "prompt_lookup"):
        assert by[("hf_compiled", method)]["status"] == "ok", by[("hf_compiled", method)]["error"]
        assert by[("hf", method)]["status"] == "ok", by[("hf", method)]["error"]
    ours = by[("hf_compiled", "standard")]
    assert ours["compile_s"] == 0.0  # a number, nothing compiled on the CPU
    assert "without torch.compile" in ours["notes"]
    assert ours["speedup_vs_standard"] == 1.0  # relative to its own engine's standard
    outputs = [json.loads(x) for x in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    by_engine = {}
    for o in outputs:
        by_engine.setdefault((o["method"], o["prompt_index"], o["completion_index"]), {})[o["engine"]] = o["text"]
    assert by_engine and all(t["hf"] == t["hf_compiled"] for t in by_engine.values()), by_engine


def test_runner_error_row_says_why(tmp_path, monkeypatch):
    from transformers import Qwen3ForCausalLM

    monkeypatch.setattr(Qwen3ForCausalLM, "_supports_default_dynamic_cache", classmethod(lambda cls: False))
    rows = run_all(tiny_config(tmp_path, engine=["hf_compiled"], methods=["standard"], repetitions=1))
    assert [r["status"] for r in rows] == ["error"]
    assert "cannot run it on a static cache" in rows[0]["error"] and "engine 'hf'" in rows[0]["error"]


def test_engines_preset_compares_the_three_engines_at_three_batch_sizes():
    preset = json.loads((ROOT / "presets" / "engines.json").read_text())
    assert preset["engine"] == ["hf", "hf_compiled", "fast"]
    assert preset["batch_sizes"] == [1, 8, 32]


# -- benchmarks/profile_decode.py and fast_engine.py --profile, on the CPU -----------------------------------------


def load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_script("profile_decode")


@pytest.fixture(scope="module")
def script():
    return load_script("fast_engine")


@pytest.mark.parametrize("name,kind", [
    ("nvjet_hsh_128x256_64x4_2x1_v_bz_coopB_TNN", "GEMV/GEMM"),
    ("void gemv2T_kernel_val<int, int, __nv_bfloat16, __nv_bfloat16, float, 128, 16, 4, 4, false>", "GEMV/GEMM"),
    ("triton_tem_fused_mm_2", "GEMV/GEMM"),
    ("void pytorch_flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4>>", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x128_rf_sm80", "attention"),
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_3", "norms"),
    ("triton_poi_fused_add_cat_index_copy_mul_neg_slice_5", "rotary"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::ArgMaxOps<float>>>", "sampling"),
    ("Memcpy DtoD (Device -> Device)", "copies"),
    ("triton_poi_fused_index_put_7", "copies"),
    ("triton_poi_fused_mul_silu_4", "other"),
    ("aten::mm", "GEMV/GEMM"), ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::rsqrt", "norms"), ("aten::argmax", "sampling"), ("aten::copy_", "copies"),
])
def test_kernel_kinds_by_name(bench, name, kind):
    assert bench.kernel_kind(name) == kind


def test_profile_table_counts_time_gaps_and_bytes_of_a_device_trace(bench):
    """A hand-made trace of two steps: three kernels each, one overlap, one gap; a kernel outside the window."""
    range_ = {"ph": "X", "cat": "user_annotation", "name": bench.DECODE_RANGE, "ts": 1000.0, "dur": 100.0}
    kernels = [("nvjet_gemm", 1000, 20), ("triton_red_fused_add_mean_mul_pow_rsqrt_0", 1015, 10),  # overlaps by 5
               ("flash_fwd_kernel", 1030, 10),  # after a 5 µs gap
               ("nvjet_gemm", 1050, 20), ("triton_red_fused_argmax_1", 1070, 5), ("Memcpy DtoD", 1075, 5),
               ("nvjet_gemm", 900, 50)]  # the prefill's: before the window
    events = [range_] + [{"ph": "X", "cat": "kernel", "name": n, "ts": float(t), "dur": float(d)}
                         for n, t, d in kernels]
    events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaGraphLaunch", "ts": 1001.0, "dur": 1.0})
    table = bench.profile_table({"traceEvents": events}, 2, weight_bytes_per_step=1e6, copy_bw=1e12)
    by = {r["kind"]: r for r in table["rows"]}
    assert [r["kind"] for r in table["rows"]] == list(bench.KIND_ORDER)
    assert by["GEMV/GEMM"]["us_per_step"] == 20 and by["GEMV/GEMM"]["kernels_per_step"] == 1
    assert (by["norms"]["us_per_step"], by["attention"]["us_per_step"], by["sampling"]["us_per_step"],
            by["copies"]["us_per_step"], by["other"]["us_per_step"]) == (5, 5, 2.5, 2.5, 0)
    assert table["kernel_us"] == 35 and sum(r["us_per_step"] for r in table["rows"]) == 35
    assert table["busy_us"] == 32.5 and table["idle_us"] == 7.5 and table["gaps_per_step"] == 1  # gaps: 5 + 10
    assert table["step_us"] == 50 and table["graph_launches_per_step"] == 0.5
    assert table["step_gb_s"] == pytest.approx(1e6 / 50e-6 / 1e9)  # 20 GB/s: weights over the wall step
    assert table["gemm_pct_copy_bw"] == pytest.approx(100 * 1e6 / 20e-6 / 1e12)
    assert "GEMV/GEMM" in bench.profile_markdown("t", table)


def test_profile_of_cpu_decode_steps(bench, tiny_models, tmp_path):
    from engines.fast import FastEngine
    from metrics.bandwidth import weight_bytes

    ids, mask = bench.random_prompt(tiny_models, 16)
    path = tmp_path / "profile" / "fast_tiny.json"
    trace = bench.profile_decode(FastEngine(tiny_models), tiny_models, ids, mask, 20, path)
    assert json.loads(path.read_text())["traceEvents"]
    table = bench.profile_table(trace, 20, weight_bytes(tiny_models.target), 1e10)
    by = {r["kind"]: r for r in table["rows"]}
    assert table["source"].startswith("CPU operators")
    assert by["GEMV/GEMM"]["us_per_step"] > 0 and by["attention"]["us_per_step"] > 0
    assert by["sampling"]["kernels_per_step"] >= 1  # the argmax of each step
    assert sum(r["us_per_step"] for r in table["rows"]) == pytest.approx(table["kernel_us"])
    assert sum(r["pct_of_kernel_time"] for r in table["rows"]) == pytest.approx(100)
    assert table["busy_us"] + table["idle_us"] <= table["step_us"] * 1.001
    assert table["step_gb_s"] > 0


def test_benchmark_script_runs_on_the_cpu(script, tmp_path):
    code = script.main(["--device", "cpu", "--models", "tiny/target", "--quick", "--skip-hf", "--skip-speculative",
                        "--prompt-tokens", "16", "--new-tokens", "8", "--runs", "2", "--profile", "--profile-steps",
                        "4", "--out-dir", str(tmp_path)])
    assert code == 0
    report = (tmp_path / "fast_engine.md").read_text()
    assert "| hf_compiled | standard | target |" in report and "| fast | standard | target |" in report
    assert "### fast, target" in report and "### hf_compiled, target" in report
    assert (tmp_path / "profile" / "fast_target.json").exists() and (tmp_path / "profile.csv").exists()

"""typical, the seventh method, added in its own file and a registry line: what it must do."""
import dataclasses

import pandas as pd
import torch

from bench.runner import run_all
from conftest import tiny_config
from decoding import METHODS, Settings
from decoding.types import NullProbe
from engines.hf import HFEngine

S = Settings(max_new_tokens=16, temperature=1.0)


def sample(models, x, **changes):
    return METHODS["typical"](x, dataclasses.replace(S, **changes), HFEngine(models), NullProbe()).sequences


def test_typical_p_one_is_plain_temperature_sampling(tiny_models, inputs):
    # typical_p = 1 keeps every token, so the draw is nucleus sampling with top_p = 1 and the same seed.
    x = inputs([0])
    plain = METHODS["nucleus"](x, dataclasses.replace(S, top_p=1.0, top_k=0), HFEngine(tiny_models), NullProbe())
    assert torch.equal(sample(tiny_models, x, typical_p=1.0), plain.sequences)


def test_a_tiny_typical_mass_keeps_one_token_so_the_seed_no_longer_matters(tiny_models, inputs):
    x = inputs([1])
    a, b = sample(tiny_models, x, typical_p=1e-6, seed=1), sample(tiny_models, x, typical_p=1e-6, seed=2)
    assert torch.equal(a, b)
    # ...while with the whole mass the two seeds draw different texts: typical_p really reaches generate.
    assert not torch.equal(sample(tiny_models, x, typical_p=1.0, seed=1), sample(tiny_models, x, typical_p=1.0, seed=2))


def test_typical_rows_on_hf_and_a_clear_error_on_fast(tmp_path):
    rows = run_all(tiny_config(tmp_path, methods=["standard", "typical"], engine=["hf", "fast"], typical_p=0.5,
                               repetitions=1))
    by = {(r["engine"], r["method"]): r for r in rows}
    assert by[("hf", "typical")]["status"] == "ok" and by[("hf", "typical")]["setting"] == "typical_p=0.5,T=0.7"
    assert by[("hf", "typical")]["do_sample"] is True
    assert by[("fast", "typical")]["status"] == "error"
    assert "runs on the hf engine (or hf_compiled) only" in by[("fast", "typical")]["error"]
    assert set(pd.read_csv(tmp_path / "runs.csv")["method"]) == {"standard", "typical"}

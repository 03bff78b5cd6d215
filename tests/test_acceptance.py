"""Acceptance means the same thing on both engines (metrics/drafts.py): rounds and tau, acceptance per draft position,
a forced run's natural EOS; and the speedup predicted from them (metrics/prediction.py). Tiny models, float32, on the
CPU. Nothing here asserts a time."""
import copy
import dataclasses
import math

import pytest
import torch

from decoding import METHODS, Settings
from decoding.types import NullProbe, Request, UnsupportedSetting
from engines.fast import FastEngine
from engines.hf import HFEngine
from metrics.drafts import DraftCounts, Round, count_rounds
from metrics.prediction import (constant_rate_tokens_per_round, expected_tokens_per_round, parse_positions,
                                prediction_columns, predicted_speedup)
from test_fast_engine import context_free_models

ENGINES = (HFEngine, FastEngine)


@dataclasses.dataclass
class Call:
    generation: object


def summarize(generations) -> dict:
    return DraftCounts.summarize([Call(g) for g in generations])


def speculative(engine, x, settings, do_sample=False):
    return METHODS["speculative"](x, settings, engine, NullProbe(), do_sample=do_sample)


def noisy_draft(models, scale=0.1, seed=0):
    """The target with noise on its output head: a draft that agrees with it often, not always."""
    draft = copy.deepcopy(models.target)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = draft.lm_head.weight
        w.add_(torch.randn(w.shape, generator=generator) * w.std() * scale)
    return dataclasses.replace(models, draft=draft)


# -- 1. speculative sampling on hf: the draft's distribution is warped once, as the target's ------------------------


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_sampling_with_the_target_as_its_own_draft_accepts_almost_everything(tiny_models, inputs, engine):
    """transformers 5.x applied temperature and top-p twice to the draft (about 0.6 acceptance at T=0.7,
    top_p=0.9); with q = p every draft must be accepted, up to rounding."""
    models = dataclasses.replace(tiny_models, draft=tiny_models.target)
    settings = Settings(max_new_tokens=32, temperature=0.7, top_p=0.9, num_draft_tokens=4)
    row = summarize([speculative(engine(models), inputs([p]), settings, do_sample=True) for p in (0, 1)])
    assert row["drafted_tokens"] > 0
    assert row["acceptance_rate"] >= 0.95, row


# -- 2. tau: tokens per round, rounds defined alike ---------------------------------------------------------------


def test_tau_is_the_same_on_both_engines_within_one_token_per_call(tiny_models, inputs):
    models = noisy_draft(tiny_models)
    settings = Settings(max_new_tokens=24, num_draft_tokens=3)
    runs = {e.name: [speculative(e(models), inputs([p]), settings) for p in (0, 1, 2)] for e in ENGINES}
    for hf, fast in zip(runs["hf"], runs["fast"]):
        assert torch.equal(hf.sequences, fast.sequences)  # greedy: the same workload, token for token
        # Tokens made inside rounds: the fast engine's first token comes from a prefill that verified nothing (the
        # hf engine verifies its first drafts in the prefill forward); either engine may end on a plain step.
        assert 0 <= (hf.drafts.accepted + hf.drafts.rounds) - (fast.drafts.accepted + fast.drafts.rounds) <= 2
    tau = {name: summarize(gens)["mean_accepted_tokens"] for name, gens in runs.items()}
    rounds = min(sum(g.drafts.rounds for g in gens) for gens in runs.values())
    assert abs(tau["hf"] - tau["fast"]) <= 3 / rounds, tau  # one token per call, over the rounds
    for gens in runs.values():
        assert 0 < summarize(gens)["acceptance_rate"] < 1  # a draft that really agrees only sometimes


def test_rounds_without_drafts_are_not_rounds(tiny_models, inputs):
    """An identical draft: every round makes k + 1 tokens, and a last token with no room left to draft (here on the
    hf engine) is a plain target step, not a round, so tau is exactly k + 1."""
    models = dataclasses.replace(tiny_models, draft=tiny_models.target)
    settings = Settings(max_new_tokens=17, num_draft_tokens=3)
    for engine in ENGINES:
        g = speculative(engine(models), inputs([0]), settings)
        assert summarize([g])["mean_accepted_tokens"] == 4.0, engine.name
        assert g.drafts.target_forwards > g.drafts.rounds  # the plain step (and the fast prefill) ran, uncounted


# -- 3. acceptance per draft position ------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_identical_draft_accepts_every_position(tiny_models, inputs, engine):
    models = dataclasses.replace(tiny_models, draft=tiny_models.target)
    gens = [speculative(engine(models), inputs([p]), Settings(max_new_tokens=20, num_draft_tokens=3)) for p in (0, 2)]
    assert summarize(gens)["acceptance_by_position"] == "1.00|1.00|1.00"


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_disagreeing_draft_accepts_no_position(engine):
    models = context_free_models()
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():  # the premise: both ignore the context, and their greedy tokens differ
        assert models.target(ids).logits[0, -1].argmax() != models.draft(ids).logits[0, -1].argmax()
    request = Request(ids, torch.ones_like(ids), max_new_tokens=20, min_new_tokens=20, use_draft=True,
                      num_draft_tokens=3)
    row = summarize([engine(models).generate(request, NullProbe())])
    assert row["drafted_tokens"] > 0 and row["acceptance_by_position"] == "0.00|0.00|0.00"


def test_positions_are_counted_over_the_rounds_that_offered_them():
    rounds = [Round(0, 3, 3), Round(4, 3, 1), Round(6, 2, 0)]
    assert count_rounds(rounds, 3) == (8, 4, 3, (2, 1, 1), (3, 3, 2))
    # Natural EOS at new token 5: the second round keeps its draft for token 4, the third starts after it.
    assert count_rounds(rounds, 3, natural_eos=5) == (4, 4, 2, (2, 1, 1), (2, 1, 1))
    assert count_rounds([], 2) == (0, 0, 0, (0, 0), (0, 0))


def test_rows_that_draft_nothing_have_no_acceptance(tiny_models, inputs):
    row = summarize([METHODS["standard"](inputs([0]), Settings(max_new_tokens=4), HFEngine(tiny_models), NullProbe())])
    for column in ("acceptance_rate", "mean_accepted_tokens", "acceptance_by_position", "draft_step_ratio",
                   "predicted_speedup"):
        assert math.isnan(row[column]), column


# -- 4. a forced length counts acceptance before the natural EOS ---------------------------------------------------


@pytest.mark.parametrize("method", ["speculative", "prompt_lookup"])
def test_forced_length_counts_acceptance_only_before_the_natural_eos(tiny_models, inputs, method):
    """EOS redefined as the token greedy decoding emits at index 3: with min_new_tokens = max_new_tokens it is masked
    there, and what the target agrees on after it is the forced tail."""
    x = inputs([1])
    settings = Settings(max_new_tokens=16, num_draft_tokens=3)
    free = METHODS["standard"](x, settings, FastEngine(tiny_models), NullProbe()).sequences[0].tolist()
    eos = free[3]
    assert free.index(eos) == 3
    models = dataclasses.replace(tiny_models, eos_token_ids=(eos,), draft=tiny_models.target)
    standard = METHODS["standard"](x, settings, FastEngine(models), NullProbe()).sequences
    for engine in ENGINES:
        g = METHODS[method](x, settings, engine(models), NullProbe())
        assert torch.equal(g.sequences, standard), engine.name  # the count changes, never the tokens
        assert g.drafts.natural_eos == 3, engine.name
        d = g.drafts
        assert d.drafted <= 3 and d.drafted <= d.drafted_all, engine.name  # drafts for tokens 0..2 at most
        if method == "speculative":
            assert g.drafts.accepted == g.drafts.drafted > 0 and g.drafts.rounds == 1, engine.name
            assert g.drafts.drafted_all > 3, engine.name  # the tail was drafted, and verified, but not counted
    # Without a natural EOS nothing is cut.
    g = speculative(HFEngine(dataclasses.replace(tiny_models, draft=tiny_models.target)), x, settings)
    assert g.drafts.natural_eos is None and g.drafts.drafted == g.drafts.drafted_all


# -- 5. the predicted speedup --------------------------------------------------------------------------------------


def test_expected_tokens_and_predicted_speedup_by_hand():
    assert expected_tokens_per_round([0.5, 0.25]) == 1.75  # 1 + 0.5 + 0.25
    assert constant_rate_tokens_per_round(0.5, 2) == 1.75  # (1 - 0.5^3) / (1 - 0.5)
    assert expected_tokens_per_round([0.5, float("nan")]) == 1.5  # a position never offered adds nothing
    assert predicted_speedup([0.9, 0.8, 0.6], c=0.1) == pytest.approx(3.3 / 1.3)  # (1 + 2.3) / (3 * 0.1 + 1)
    # Leviathan et al.'s closed form at alpha = 0.8, k = 5, c = 0.05: (1 - 0.8^6) / (0.2 * 1.25) = 2.951424.
    assert predicted_speedup([0.8 ** i for i in range(1, 6)], c=0.05) == pytest.approx(2.951424)
    assert predicted_speedup([1.0] * 4, c=1.0) == 1.0  # a draft as slow as the target cannot help, however good
    assert predicted_speedup([0.5, 0.25], c=0.0) == 1.75  # free drafts (prompt lookup)
    assert predicted_speedup([0.5], c=0.5, k=2) == 1.5 / 2  # k from the row: positions never offered still cost
    assert parse_positions("0.91|0.80|nan")[:2] == [0.91, 0.80] and parse_positions(float("nan")) == []


class StubEngine:
    def __init__(self, c):
        self.c, self.seen = c, []

    def step_time_ratio(self, unit, **sampling):
        if self.c is None:
            raise AssertionError("drafts that need no model must not be timed")
        self.seen.append(sampling)
        return self.c


def test_prediction_columns_of_each_kind_of_row():
    base = dict(status="ok", acceptance_by_position="0.50|0.25", num_draft_tokens=2, do_sample=True,
                temperature=0.7, top_p=0.9, top_k=0)
    engine = StubEngine(0.25)
    out = prediction_columns(dict(base, method="speculative"), engine, unit=None)
    assert out == {"draft_step_ratio": 0.25, "predicted_speedup": pytest.approx(1.75 / 1.5)}
    assert engine.seen == [dict(do_sample=True, temperature=0.7, top_p=0.9, top_k=0)]
    out = prediction_columns(dict(base, method="prompt_lookup"), StubEngine(None), unit=None)
    assert out == {"draft_step_ratio": 0.0, "predicted_speedup": 1.75}
    for row in (dict(base, method="standard", acceptance_by_position=float("nan")),
                dict(base, method="speculative", status="error")):
        assert all(math.isnan(v) for v in prediction_columns(row, StubEngine(None), unit=None).values())


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_step_time_ratio_runs_on_both_engines_without_disturbing_them(tiny_models, inputs, engine):
    e = engine(tiny_models)
    x = inputs([1])
    settings = Settings(max_new_tokens=8, num_draft_tokens=3)
    before = speculative(e, x, settings)
    caches = dict(getattr(e, "_caches", {}))
    for sampling in ({}, dict(do_sample=True, temperature=0.7, top_p=0.9)):
        c = e.step_time_ratio(x, **sampling)
        assert c > 0 and math.isfinite(c)
    assert getattr(e, "_caches", {}) == caches  # the requests' caches (and their warm graphs) are kept
    after = speculative(e, x, settings)
    assert torch.equal(before.sequences, after.sequences) and before.drafts.accepted == after.drafts.accepted
    no_draft = engine(dataclasses.replace(tiny_models, draft=None))
    with pytest.raises(UnsupportedSetting, match="c = 0"):
        no_draft.step_time_ratio(x)


# -- 6. a sweep over k ---------------------------------------------------------------------------------------------


def test_runner_sweeps_k_with_a_row_per_k(tmp_path):
    from bench.runner import run_all
    from conftest import tiny_config

    rows = run_all(tiny_config(tmp_path, methods=["standard", "speculative", "prompt_lookup"],
                               num_draft_tokens=[2, 3], max_new_tokens=8, repetitions=1))
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    spec = {r["setting"]: r for r in rows if r["method"] == "speculative"}
    assert sorted(spec) == ["greedy,k=2", "greedy,k=3"]
    for k in (2, 3):
        row = spec[f"greedy,k={k}"]
        assert row["num_draft_tokens"] == k
        assert len(parse_positions(row["acceptance_by_position"])) == k  # each call really drafted k per round

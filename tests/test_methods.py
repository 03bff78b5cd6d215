"""Invariants of the decoding methods on the hf engine, with tiny random models on the CPU."""
import dataclasses

import torch

from conftest import greedy_tokens
from decoding import METHODS
from decoding import Settings
from decoding.types import NullProbe, UnsupportedSetting
from decoding.types import count_new_tokens
from engines.hf import HFEngine

import pytest

S = Settings(max_new_tokens=20)


def run(method, models, inputs, settings=S):
    return METHODS[method](inputs, settings, HFEngine(models), NullProbe())


def test_standard_matches_hand_written_greedy(tiny_models, inputs):
    x = inputs([0])
    expected = greedy_tokens(tiny_models, x.input_ids, S.max_new_tokens)[:, x.input_ids.shape[1]:]
    assert torch.equal(run("standard", tiny_models, x).sequences, expected)


@pytest.mark.parametrize("prompt", [0, 1, 2])
def test_speculative_and_prompt_lookup_greedy_equal_standard(tiny_models, inputs, prompt):
    x = inputs([prompt])
    standard = run("standard", tiny_models, x).sequences
    spec = run("speculative", tiny_models, x)
    lookup = run("prompt_lookup", tiny_models, x)
    assert torch.equal(spec.sequences, standard)
    assert torch.equal(lookup.sequences, standard)
    assert spec.drafts.drafted > 0 and spec.drafts.rounds > 0  # really speculated: counted, not estimated


def test_batched_left_padded_equals_single_prompts(tiny_models, inputs):
    x = inputs([0, 1, 2])
    assert len(set(x.attention_mask.sum(1).tolist())) == 3  # mixed lengths, so padding is exercised
    batch = run("batched", tiny_models, x)
    for row, prompt in enumerate([0, 1, 2]):
        assert torch.equal(batch.sequences[row], run("standard", tiny_models, inputs([prompt])).sequences[0])


def test_beam_search_one_beam_is_greedy_and_n_beams_return_n(tiny_models, inputs):
    x = inputs([1])
    one = run("beam_search", tiny_models, x, dataclasses.replace(S, num_beams=1, num_return_sequences=1))
    assert torch.equal(one.sequences, run("standard", tiny_models, x).sequences)
    many = run("beam_search", tiny_models, x, dataclasses.replace(S, num_beams=4, num_return_sequences=3))
    assert many.sequences.shape == (3, S.max_new_tokens)
    assert len({tuple(s.tolist()) for s in many.sequences}) == 3  # distinct beams


def test_beam_search_refuses_more_sequences_than_beams(tiny_models, inputs):
    with pytest.raises(UnsupportedSetting, match="at most num_beams"):
        run("beam_search", tiny_models, inputs([0]), dataclasses.replace(S, num_beams=2, num_return_sequences=3))


def test_nucleus_is_seeded_and_tiny_top_p_is_greedy(tiny_models, inputs):
    x = inputs([0])
    hot = dataclasses.replace(S, temperature=1.5, top_p=0.99)
    a, b = run("nucleus", tiny_models, x, hot), run("nucleus", tiny_models, x, hot)
    assert torch.equal(a.sequences, b.sequences)
    other_seed = run("nucleus", tiny_models, x, dataclasses.replace(hot, seed=7))
    assert not torch.equal(a.sequences, other_seed.sequences)
    greedy_like = run("nucleus", tiny_models, x, dataclasses.replace(S, top_p=1e-9))
    assert torch.equal(greedy_like.sequences, run("standard", tiny_models, x).sequences)


def test_forced_length_is_honoured_by_every_method(tiny_models, inputs):
    for method in METHODS:
        x = inputs([0, 1]) if method == "batched" else inputs([0])
        g = run(method, tiny_models, x)
        assert g.sequences.shape[1] == S.max_new_tokens, method
        assert all(n == S.max_new_tokens for n in g.new_tokens), method


def test_token_counts_exclude_padding_after_eos_and_the_prompt(tiny_models, inputs):
    x = inputs([0, 1])
    free = run("batched", tiny_models, x)
    # Make the 4th token row 0 generates an EOS: row 0 then stops at 4 tokens, row 1 goes on.
    eos = int(free.sequences[0, 3])
    assert eos not in free.sequences[1].tolist()[:S.max_new_tokens]
    models = dataclasses.replace(tiny_models, eos_token_ids=(eos,))
    g = run("batched", models, x, dataclasses.replace(S, stop_at_eos=True))
    assert g.new_tokens == [4, S.max_new_tokens]
    assert (g.sequences[0, 4:] == tiny_models.pad_token_id).all()  # the rest of the row is padding
    assert count_new_tokens(torch.tensor([[5, 9, 9], [9, 5, 5], [5, 5, 5]]), (9,)) == [2, 1, 3]


def test_identical_draft_is_accepted_fully(tiny_models, inputs):
    models = dataclasses.replace(tiny_models, draft=tiny_models.target)
    g = run("speculative", models, inputs([0]), dataclasses.replace(S, num_draft_tokens=4))
    assert g.drafts.drafted > 0 and g.drafts.accepted == g.drafts.drafted
    assert g.drafts.rounds == 4  # 20 tokens, 4 drafted + 1 bonus per target forward


def test_speculative_refuses_batches_with_a_clear_message(tiny_models, inputs):
    with pytest.raises(UnsupportedSetting, match="batch size 1 only"):
        run("speculative", tiny_models, inputs([0, 1]))


def test_speculative_sampling_runs_lossless_path(tiny_models, inputs):
    from decoding.speculative import speculative

    x = inputs([0])
    a = speculative(x, S, HFEngine(tiny_models), NullProbe(), do_sample=True)
    b = speculative(x, S, HFEngine(tiny_models), NullProbe(), do_sample=True)
    assert torch.equal(a.sequences, b.sequences) and a.new_tokens == [S.max_new_tokens]


def test_token_counting_waits_until_after_the_call(tiny_models, inputs):
    """Counting reads the device: with a fixed length no engine counts inside the timed call."""
    from engines.fast import FastEngine

    for engine in (HFEngine(tiny_models), FastEngine(tiny_models)):
        g = METHODS["batched"](inputs([0, 1]), S, engine, NullProbe())
        assert g._new_tokens is None, engine.name
        assert g.new_tokens == [S.max_new_tokens] * 2


def test_speculative_sweeps_every_mode_and_k(tmp_path):
    from bench.config import Config, ConfigError

    base = dict(model="tiny/target", draft_model="tiny/draft", results=str(tmp_path / "r.csv"),
                speculative_modes=["greedy", "sampling"])
    config = Config.from_dict(dict(base, num_draft_tokens=[2, 4]), check_models=False)
    points = METHODS["speculative"].points(config)
    assert [p.setting for p in points] == ["greedy,k=2", "greedy,k=4", "sampling,k=2", "sampling,k=4"]
    assert [p.do_sample for p in points] == [False, False, True, True]
    assert [p.overrides for p in points] == [{"num_draft_tokens": k} for k in (2, 4, 2, 4)]
    assert [p.params["num_draft_tokens"] for p in points] == [2, 4, 2, 4]
    # Each call gets one k: the point's override replaces the list in the Settings.
    assert dataclasses.replace(config.settings(), **points[1].overrides).num_draft_tokens == 4
    single = Config.from_dict(dict(base, num_draft_tokens=5), check_models=False)
    assert single.num_draft_tokens == 5
    assert [p.setting for p in METHODS["speculative"].points(single)] == ["greedy,k=5", "sampling,k=5"]
    for bad in ([0], [2, 2], 65):
        with pytest.raises(ConfigError, match="num_draft_tokens"):
            Config.from_dict(dict(base, num_draft_tokens=bad), check_models=False)

"""Quality beside speed: the degeneration measures by hand, NLL that ranks greedy above sampling, and the
lossless check run in every run."""
import math
from html import escape

import pytest

from bench.runner import run_all
from conftest import tiny_config
from metrics.quality import distinct_2, first_difference, repetition_rate


def test_degeneration_measures_match_hand_counts():
    assert distinct_2([1, 2, 1, 2, 1]) == pytest.approx(2 / 4)  # bigrams 12 21 12 21: two distinct of four
    assert distinct_2([5, 6, 7]) == 1.0
    assert math.isnan(distinct_2([3]))
    # 4-grams of 1 2 3 4 1 2 3 4: 1234 2341 3412 4123 1234 -> one repeat of five
    assert repetition_rate([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 / 5)
    assert repetition_rate([9, 9, 9, 9, 9, 9]) == pytest.approx(2 / 3)  # 9999 x3: the last two repeat
    assert math.isnan(repetition_rate([1, 2, 3]))
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("quality")


@pytest.fixture(scope="module")
def rows(run_dir):
    tmp = run_dir
    config = tiny_config(tmp, methods=["standard", "nucleus", "batched", "speculative", "prompt_lookup"],
                         speculative_modes=["greedy"], temperature=1.0, top_p=1.0, completions_per_prompt=2,
                         batch_sizes=[2], max_new_tokens=16, repetitions=1)
    return {r["method"]: r for r in run_all(config)}


def test_lossless_methods_match_greedy_and_sampling_does_not(rows):
    for method in ("standard", "speculative", "prompt_lookup"):
        assert rows[method]["greedy_match"] == 1.0, method
        assert "below 1.0" not in rows[method]["notes"]
    assert rows["nucleus"]["greedy_match"] < 1.0 and rows["nucleus"]["first_divergence"] >= 0


def test_greedy_text_is_likelier_than_sampled_text_under_the_target(rows):
    assert rows["standard"]["target_nll"] <= rows["nucleus"]["target_nll"]
    assert rows["speculative"]["target_nll"] == pytest.approx(rows["standard"]["target_nll"])


def test_quality_columns_on_every_row(rows):
    for r in rows.values():
        for column in ("target_nll", "distinct_2", "repetition_rate", "heldout_ppl", "greedy_match"):
            assert r[column] == r[column], (r["method"], column)  # not NaN
        assert r["heldout_ppl"] == rows["standard"]["heldout_ppl"]  # one figure per model variant


def test_each_text_knows_where_it_leaves_greedy(rows, run_dir):
    """outputs.jsonl marks, per text, whether it equals standard greedy's and which characters its first
    differing token decodes to; the Samples page highlights exactly those characters."""
    from store import archive
    from views.samples import samples_html

    records = archive.load_outputs(run_dir / "runs.csv")
    by = {}
    for r in records:
        by.setdefault(r["method"], []).append(r)
    assert all(r["greedy_match"] for m in ("speculative", "prompt_lookup") for r in by[m])
    assert all("diverges_at" not in r for m in ("speculative", "prompt_lookup") for r in by[m])
    differing = [r for r in by["nucleus"] if not r["greedy_match"]]
    assert differing and len(differing) == round((1 - rows["nucleus"]["greedy_match"]) * len(by["nucleus"]))
    for r in differing:
        greedy = next(g for g in by["standard"] if (g["prompt_index"], g["completion_index"])
                      == (r["prompt_index"], r["completion_index"]))
        start, end = r["diverges_chars"]
        assert r["text"][:start] == greedy["text"][:start]  # the same text up to the mark
        assert start < end <= len(r["text"]) or start == end == len(r["text"])
        assert 0 <= r["diverges_at"] < r["new_tokens"] or r["diverges_at"] == r["new_tokens"] < 16
    page = samples_html(records, rows["nucleus"]["run_id"], None, 0)
    assert page.count('class="bench-diverge"') == sum(1 for r in differing if r["completion_index"] == 0)
    assert "= greedy" in page and "&ne; greedy at" in page


def test_texts_carry_their_prompt_so_samples_show_it_without_the_session(rows, run_dir):
    from store import archive
    from views.samples import samples_html
    from conftest import PROMPTS

    records = archive.load_outputs(run_dir / "runs.csv")
    assert all(r["prompt"] == PROMPTS[r["prompt_index"]] for r in records)
    page = samples_html(records, rows["standard"]["run_id"], None, 0)  # no prompts from a dashboard session
    assert all(escape(p) in page for p in PROMPTS[:2]) and "prompt 1" not in page

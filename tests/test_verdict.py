"""The verdict (views/verdict.py) on synthetic rows: nothing whose interval holds 1 is called faster, ties are
named as ties, each warning fires exactly when its cause is there, and the CLI, the Results card and the HTML
report say the same words (one function)."""
from __future__ import annotations

import copy
import re
from html import unescape
from types import SimpleNamespace

import pandas as pd
import pytest

from decoding import BASELINE, METHODS
from views.verdict import verdict

LOSSLESS = next(name for name, spec in METHODS.items() if spec.drafts)  # a drafting method, greedy: lossless
OTHER = next(name for name, spec in METHODS.items() if name != BASELINE and not spec.drafts)


def row(method=BASELINE, setting="greedy", tps=100.0, lo=95.0, hi=105.0, speedup=None, s_lo=None, s_hi=None,
        **more) -> dict:
    base = method == BASELINE
    r = {
        "run_id": "run1", "run_name": "", "status": "ok", "error": "", "method": method, "setting": setting,
        "engine": "hf", "model": "tiny/target", "quantization": "none", "attention": "sdpa", "do_sample": False,
        "batch_size": 1, "timestamp": "2025-01-01T00:00:00+00:00",
        "max_new_tokens": 32, "num_prompts": 3, "prompt_tokens": 63.3, "dtype": "float32", "device": "cpu",
        "device_name": "Test CPU", "cpu_model": "Test CPU", "random_weights": False, "unstable": False,
        "tokens_per_s_per_sequence_median": tps, "tokens_per_s_per_sequence_ci_low": lo,
        "tokens_per_s_per_sequence_ci_high": hi, "aggregate_tokens_per_s_median": tps,
        "aggregate_tokens_per_s_ci_low": lo, "aggregate_tokens_per_s_ci_high": hi,
        "speedup_vs_standard": 1.0 if base else speedup, "speedup_vs_standard_ci_low": 1.0 if base else s_lo,
        "speedup_vs_standard_ci_high": 1.0 if base else s_hi, "greedy_match": 1.0, "target_nll": 1.9,
        "heldout_ppl": 10.0, "peak_rss_mib": 450.0, "notes": "",
    }
    r.update(more)
    return r


def answer(v, topic: str) -> str:
    return next(a.text for a in v.answers if a.topic == topic)


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("s_lo, s_hi", [(0.9, 1.8), (0.95, 1.05), (1.0, 1.4), (0.6, 1.0)])
def test_a_speedup_whose_interval_holds_1_is_never_called_faster(s_lo, s_hi):
    rows = [row(), row(LOSSLESS, "greedy,k=4", tps=130, lo=80, hi=180, speedup=1.3, s_lo=s_lo, s_hi=s_hi)]
    fastest = answer(verdict(rows), "Fastest for one user")
    assert "no measurable difference from standard (n.s." in fastest
    assert "faster" not in fastest
    assert "a tie between 2 rows" in fastest  # the standard row cannot be told apart from it either


def test_a_significant_speedup_is_named_with_its_interval():
    rows = [row(), row(LOSSLESS, "greedy,k=4", tps=150, lo=140, hi=160, speedup=1.5, s_lo=1.3, s_hi=1.7)]
    fastest = answer(verdict(rows), "Fastest for one user")
    assert fastest.startswith(f"{LOSSLESS} [greedy,k=4] on hf 150.0 tok/s per sequence (95% CI 140.0-160.0)")
    assert "1.5x standard's speed (95% CI 1.30-1.70x, faster)" in fastest and "tie" not in fastest
    assert "greedy match 100%" in fastest and "NLL +0.00 vs standard" in fastest


def test_the_paired_interval_decides_even_when_the_rows_own_intervals_overlap():
    rows = [row(lo=60, hi=140), row(LOSSLESS, "greedy,k=4", tps=150, lo=90, hi=210, speedup=1.5, s_lo=1.2, s_hi=1.8)]
    assert "tie" not in answer(verdict(rows), "Fastest for one user")


def test_ties_at_the_top_are_named_as_ties():
    # Different engines: no paired ratio between them, so their own intervals decide.
    rows = [row(tps=100, lo=90, hi=110), row(tps=104, lo=95, hi=115, engine="fast"),
            row(tps=60, lo=55, hi=65, engine="other")]
    fastest = answer(verdict(rows), "Fastest for one user")
    assert fastest.startswith("a tie between 2 rows (their intervals overlap). Highest median: standard [greedy] "
                              "on fast 104.0")
    assert "Tied with it: standard [greedy] on hf (100.0 tok/s)." in fastest and "on other" not in fastest
    apart = [row(tps=100, lo=90, hi=110), row(tps=140, lo=120, hi=160, engine="fast")]
    assert "tie" not in answer(verdict(apart), "Fastest for one user")


def test_throughput_names_batch_size_and_the_per_sequence_speed_it_costs():
    rows = [row(), row(OTHER, "x", tps=50, lo=48, hi=52, batch_size=8, aggregate_tokens_per_s_median=400,
                       aggregate_tokens_per_s_ci_low=380, aggregate_tokens_per_s_ci_high=420,
                       throughput_vs_standard=4.0, throughput_vs_standard_ci_low=3.8, throughput_vs_standard_ci_high=4.2)]
    text = answer(verdict(rows), "Highest throughput")
    assert f"{OTHER} [x] on hf at batch size 8: 400.0 tok/s in all (95% CI 380.0-420.0)" in text
    assert "4.0x standard's throughput (95% CI 3.80-4.20x, faster)" in text
    assert "each sequence gets 50.0 tok/s, 50% less than the fastest one-user row (100.0)" in text


def load_row(rate, goodput, **more):
    figures = dict(request_rate=rate, goodput=goodput, request_throughput=rate * 0.95, slo_ttft_ms=500.0,
                   slo_tpot_ms=25.0, sender_lagged=False, unstable=float("nan"),
                   tokens_per_s_per_sequence_median=float("nan"), aggregate_tokens_per_s_median=float("nan"))
    return row(OTHER, f"rate={rate}", engine="continuous", **(figures | more))


def test_load_rows_get_goodput_and_capacity_only_when_the_columns_have_values():
    rows = [load_row(1.0, 0.9), load_row(4.0, 2.5), load_row(8.0, 1.0)]
    v = verdict(rows)
    assert "at 4 req/s offered: 2.50 req/s within TTFT <= 500 ms and TPOT <= 25 ms" in answer(v, "Under load")
    assert "Capacity" not in [a.topic for a in v.answers]
    rows[2].update(capacity_rps=3.2, capacity_rps_ci_low=2.7)
    assert "sustains 3.20 req/s" in answer(verdict(rows), "Capacity")
    assert "(one-sided 95% lower bound 2.70 req/s)" in answer(verdict(rows), "Capacity")


def test_cost_and_quantization_only_when_present():
    rows = [row(), row(quantization="bnb-4bit", heldout_ppl=11.0, peak_rss_mib=300.0)]
    v = verdict(rows)
    assert not [a for a in v.answers if "Cheapest" in a.topic]
    memory = answer(v, "Memory and quantization")
    assert "lowest peak process RAM: standard [greedy] on hf bnb-4bit, 300 MiB" in memory
    assert "bnb-4bit held-out perplexity 11.00 vs 10.00 unquantized (+10.0%)" in memory
    for r, c in zip(rows, (2.0, 3.0)):
        r.update(cost_per_million_tokens=c, cost_per_million_tokens_ci_low=c * 0.9,
                 cost_per_million_tokens_ci_high=c * 1.1, currency="EUR")
    assert answer(verdict(rows), "Cheapest per million tokens") == "standard [greedy] on hf 2.00 EUR (95% CI 1.80-2.20)"


# Each warning: a change of clean rows that causes it, and a word that only it says.
CAUSES = {
    "every row is unstable": lambda rows: [r.update(unstable=True) for r in rows],
    "most rows": lambda rows: [r.update(unstable=True) for r in rows[:2]],
    "load generator lagged": lambda rows: rows.append(load_row(2.0, 1.0, sender_lagged=True)),
    "random weights": lambda rows: rows[1].update(random_weights=True),
    "different workloads": lambda rows: rows[2].update(max_new_tokens=64),
    "is lossless": lambda rows: rows[1].update(greedy_match=0.75),
    "rows failed": lambda rows: rows.append(row(OTHER, "y", status="oom", error="out of memory")),
}


def clean_rows() -> list[dict]:
    return [row(), row(LOSSLESS, "greedy,k=4", tps=120, lo=110, hi=130, speedup=1.2, s_lo=1.1, s_hi=1.3),
            row(OTHER, "x", tps=90, lo=85, hi=95, speedup=0.9, s_lo=0.85, s_hi=0.95),
            load_row(2.0, 1.5)]


def test_clean_rows_get_no_warning():
    assert verdict(clean_rows()).warnings == []


@pytest.mark.parametrize("cause", list(CAUSES))
def test_each_warning_fires_when_its_cause_is_there_and_not_otherwise(cause):
    rows = clean_rows()
    CAUSES[cause](rows)
    said = verdict(rows).warnings
    assert [w for w in said if cause in w] and len(said) == 1, said


@pytest.mark.parametrize("change", [
    dict(device="cuda"), dict(dtype="bfloat16"), dict(num_prompts=5), dict(prompt_tokens=80.0),
    dict(device_name="Other CPU"),
])
def test_every_workload_key_counts(change):
    rows = clean_rows()
    rows[1].update(change)
    assert any("different workloads" in w and next(iter(change)) in w for w in verdict(rows).warnings)


def test_near_misses_do_not_warn():
    rows = clean_rows()
    rows[0].update(unstable=True)  # one of three: not most
    rows[1].update(greedy_match=0.5, do_sample=True)  # sampled drafting is not lossless
    rows[2].update(greedy_match=0.0)  # not a drafting method
    rows[3].update(max_new_tokens=64)  # load rows are compared among themselves
    assert verdict(rows).warnings == []


def test_history_holds_each_run_against_the_baseline():
    base = [row(run_id="a", run_name="before")]
    same = [row(run_id="b", run_name="after", tps=102, lo=96, hi=108)]
    faster = [row(run_id="b", run_name="after", tps=150, lo=145, hi=155)]
    text = answer(verdict(base + same, "a"), "Against the baseline run")
    assert "no measurable difference (n.s.: +2.0%" in text and "(run after)" in text
    assert "+50.0% tok/s per sequence (95% CI" in answer(verdict(base + faster, "a"), "Against the baseline run")
    assert "Against the baseline run" not in [a.topic for a in verdict(base + same).answers]
    assert "**Verdict**" in verdict(base + same, "a").markdown()


def visible_text(html: str) -> str:
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return words(unescape(re.sub(r"<[^>]+>", " ", html)))


def test_cli_results_card_and_report_show_the_same_verdict(monkeypatch, capsys, tmp_path):
    import bench.runner
    from bench.cli import headless
    from bench.dashboard.results_page import summary_with_verdict
    from store import archive
    from views.report import report_html

    rows = clean_rows()
    rows[0].update(unstable=True, random_weights=True)
    v = verdict(rows)
    assert v.warnings and len(v.answers) >= 3
    monkeypatch.setattr(bench.runner, "total_rows", lambda config: len(rows))
    monkeypatch.setattr(bench.runner, "run",
                        lambda config, stop: iter([bench.runner.RowDone(copy.deepcopy(r)) for r in rows]))
    headless(SimpleNamespace(results=str(tmp_path / "runs.csv")))
    cli = words(capsys.readouterr().out)
    card = visible_text(summary_with_verdict(copy.deepcopy(rows)))
    df = pd.DataFrame(rows, columns=list(dict.fromkeys([*archive.COLUMNS, *rows[0], *rows[-1]])))
    html = report_html(df)
    report = visible_text(html)
    assert html.index('class="bench-verdict"') < html.index('id="runs"')  # the report's first section
    for line in v.lines():
        assert words(line) in cli and words(line) in card and words(line) in report, line

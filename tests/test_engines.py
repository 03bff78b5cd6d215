"""Both engines through the one runner: the same rows, the same tokens, and beam search never switched silently."""
import json

from bench.runner import run_all
from conftest import tiny_config


def test_hf_and_fast_engines_side_by_side(tmp_path):
    config = tiny_config(tmp_path, engine=["hf", "fast"], batch_sizes=[2], repetitions=1,
                         methods=["standard", "beam_search", "batched", "speculative", "prompt_lookup"])
    rows = run_all(config)
    by = {(r["engine"], r["method"]): r for r in rows}
    assert len(rows) == 10
    for method in ("standard", "batched", "speculative", "prompt_lookup"):
        assert by[("fast", method)]["status"] == "ok", by[("fast", method)]["error"]
        assert by[("hf", method)]["status"] == "ok"
    # Beam search is not run on the fast engine, and the row says so instead of switching engines.
    assert by[("fast", "beam_search")]["status"] == "error"
    assert "hf engine" in by[("fast", "beam_search")]["error"]
    assert by[("fast", "standard")]["speedup_vs_standard"] == 1.0  # relative to its own engine's standard
    # Greedy texts are the same whichever engine produced them.
    outputs = [json.loads(x) for x in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    texts = {}
    for o in outputs:
        if o["method"] in ("standard", "batched", "speculative", "prompt_lookup"):
            texts.setdefault((o["method"], o["prompt_index"], o["completion_index"]), set()).add(o["text"])
    assert texts and all(len(t) == 1 for t in texts.values())

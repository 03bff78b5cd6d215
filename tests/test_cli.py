"""The headless tiny preset, as a user runs it: every method ok in the CSV, texts in outputs.jsonl."""
import json
import os
import subprocess
import sys

import pandas as pd

from conftest import ROOT


def test_tiny_preset_end_to_end(tmp_path):
    csv_path = tmp_path / "runs.csv"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "app.py", "--preset", "tiny", "--results", str(csv_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    df = pd.read_csv(csv_path)
    assert set(df["method"]) == {"standard", "nucleus", "beam_search", "batched", "speculative", "prompt_lookup",
                                 "typical"}
    assert (df["status"] == "ok").all()
    assert "tok/s/seq" in result.stdout and "agg tok/s" in result.stdout
    outputs = [json.loads(x) for x in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    assert {o["method"] for o in outputs} == set(df["method"])
    assert all(o["run_id"] == df["run_id"][0] for o in outputs)


def test_help_shows_defaults():
    result = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for text in ("max_new_tokens", "default 128", "temperature", "default 0.7", "num_beams", "seed", "tiny"):
        assert text in result.stdout

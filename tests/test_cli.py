"""The headless tiny preset, as a user runs it: every method ok in the CSV, texts in outputs.jsonl."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

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
    verdict = result.stdout.split("\nVerdict:\n", 1)[1]  # under the table (views/verdict.py)
    assert "Fastest for one user: " in verdict and "Highest throughput: " in verdict
    assert ("Warning: every row is unstable" in verdict) == bool(df["unstable"].all())
    outputs = [json.loads(x) for x in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    assert {o["method"] for o in outputs} == set(df["method"])
    assert all(o["run_id"] == df["run_id"][0] for o in outputs)


def test_help_shows_defaults():
    result = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for text in ("max_new_tokens", "default 128", "temperature", "default 0.7", "num_beams", "seed", "tiny"):
        assert text in result.stdout


def start_long_run(tmp_path):
    """A run of the random tiny pair with far more repetitions than the test waits for."""
    from conftest import PROMPTS, RANDOM_TARGET

    config = tmp_path / "long.json"
    config.write_text(json.dumps({"model": RANDOM_TARGET, "methods": ["standard", "batched"], "batch_sizes": [2],
                                  "prompts": PROMPTS[:2], "max_new_tokens": 8, "device": "cpu", "dtype": "float32",
                                  "repetitions": 1000, "results": str(tmp_path / "runs.csv")}))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "app.py", "--config", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(proc, text: str, timeout: float = 240.0) -> str:
    """Reads stderr (tqdm redraws with \\r) until `text` appears."""
    import time

    seen, deadline = "", time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline and proc.poll() is None, seen[-2000:]
        seen += proc.stderr.read(1)
    return seen


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_like_the_stop_button_and_keeps_whole_repetitions(tmp_path, sig):
    import signal

    proc = start_long_run(tmp_path)
    wait_for(proc, "repetition 3/")  # the first two interleaved passes over every row are done
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert "stopped: 2 rows with their whole repetitions kept" in err
    df = pd.read_csv(tmp_path / "runs.csv")
    assert len(df) == 2 and (df["status"] == "ok").all() and (df["repetitions"] >= 2).all()
    assert df["notes"].str.contains("of 1000 repetitions").all()
    assert "tok/s/seq" in out  # the table of what was kept


def test_a_second_ctrl_c_aborts_at_once(tmp_path):
    import signal
    import time

    proc = start_long_run(tmp_path)
    wait_for(proc, "repetition 2/")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert "stopping:" in err

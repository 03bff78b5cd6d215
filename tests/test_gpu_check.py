"""benchmarks/gpu_check.sh: valid bash, at most 8 files in $OUT, and its summary reads real runner rows (the whole dry
run takes minutes on 2 cores: `OUT=$(mktemp -d) bash benchmarks/gpu_check.sh --dry-run`, docs/gpu.md)."""
import re
import subprocess
import sys

from conftest import ROOT, tiny_config

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_the_script_parses_and_writes_at_most_8_files_into_out():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    names = set(re.findall(r'\$OUT/([A-Za-z0-9_.-]+)', text))
    assert len(names) <= 8, names  # the device run brings back 8 files at most
    assert {"summary.txt", "runs.csv", "check.txt", "correctness.txt"} <= names
    # The compile cache lives inside the repo, where git ignores it, so a rerun on a warm machine hits it.
    assert 'TORCHINDUCTOR_CACHE_DIR="$PWD/.cache/inductor"' in text
    assert ".cache/" in (ROOT / ".gitignore").read_text().split()


def test_the_summary_passes_correct_rows_and_names_a_failing_one(tmp_path):
    from bench.runner import run_all

    config = tiny_config(tmp_path, engine=["fast"], methods=["standard", "speculative"], prompts=["Hi there"],
                         completions_per_prompt=1, max_new_tokens=6, repetitions=1, name="gpu_check correctness")
    rows = run_all(config)
    assert all(r["status"] == "ok" for r in rows)
    summary = [sys.executable, str(ROOT / "benchmarks" / "gpu_summary.py"), config.results]
    out = subprocess.run(summary, capture_output=True, text=True, check=True).stdout
    assert "correctness: PASS (2 rows" in out and "speculative" in out

    import pandas as pd

    df = pd.read_csv(config.results)
    df.loc[df["method"] == "speculative", "measured_compiles"] = 1  # as a compile inside a measured call would read
    df.to_csv(config.results, index=False)
    out = subprocess.run(summary, capture_output=True, text=True, check=True).stdout
    assert "correctness: FAIL" in out and ": speculative" in out

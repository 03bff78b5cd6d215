"""`python app.py --check`: one line per item, GPU items saying "no GPU" here, exit 1 when the preset misses
something it needs. Run as a user runs it, in a subprocess."""
import os
import subprocess
import sys

from conftest import ROOT


def check(*flags):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "app.py", "--check", *flags], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def lines(out: str) -> dict[str, str]:
    """item name -> its line"""
    return {line.split()[1]: line for line in out.splitlines() if line.startswith("  ") and len(line.split()) > 1}


def test_the_tiny_preset_has_everything_here_and_gpu_items_say_why_not(tmp_path):
    done = check("--preset", "tiny", "--results", str(tmp_path / "runs.csv"))
    assert done.returncode == 0, done.stdout + done.stderr
    items = lines(done.stdout)
    for name in ("torch", "transformers", "compile", "model", "draft_model", "disk"):
        assert items[name].lstrip().startswith("ok"), items[name]
    if "CPU-only" in items["torch"]:
        for name in ("gpu", "bitsandbytes", "flash-attn", "nvml"):
            assert items[name].lstrip().startswith("--") and "no GPU" in items[name], items[name]
    assert "a compiled function ran" in items["compile"]  # really run, not imported


def test_a_missing_model_fails_with_what_to_do_and_exit_code_1(tmp_path):
    done = check("--preset", "tiny", "--model", "nobody/no-such-model", "--results", str(tmp_path / "runs.csv"))
    assert done.returncode == 1, done.stdout + done.stderr
    model = lines(done.stdout)["model"]
    assert model.lstrip().startswith("FAIL") and "nobody/no-such-model" in model and "-> download it" in model
    assert "missing: see the FAIL lines" in done.stdout
    assert "Traceback" not in done.stderr

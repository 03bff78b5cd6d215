"""Form and config wording: a typo in a config key is refused whole with a suggestion, in the CLI
and the dashboard alike; form errors name the label beside the key; an empty box is not JSON's null;
device cuda without CUDA is refused before anything loads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.dashboard.form import check
from bench.config import Config, ConfigError
from bench.dashboard.form import form_words

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_key_is_refused_with_the_closest_key_in_the_cli(tmp_path):
    config = tmp_path / "typo.json"
    config.write_text(json.dumps({"model": "tiny/target", "max_new_token": 5}))
    env = {k: v for k, v in os.environ.items()} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "app.py", "--config", str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown config key 'max_new_token': did you mean max_new_tokens?" in lines[0]
    assert "nothing was applied" in lines[0]


def test_unknown_key_without_a_close_one_lists_the_allowed_keys():
    with pytest.raises(ConfigError) as e:
        Config.from_dict({"zzzz": 1}, check_models=False)
    assert "did you mean" not in str(e.value) and "allowed: model," in str(e.value)


def test_form_words_put_the_label_beside_the_key_and_call_an_empty_box_empty():
    message = "config key 'num_return_sequences' must be an integer in 1..64, got null"
    assert form_words(message) == "Returned sequences (num_return_sequences) must be an integer in 1..64, got an empty box"
    assert form_words("config key 'nope' is odd") == "config key 'nope' is odd"  # not a form field: left alone


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_form_check_refuses_cuda_without_cuda():
    problem = check({"device": "cuda"})
    assert problem.startswith("config key 'device': 'cuda' asked for") and "'cpu'" in problem
    assert check({"device": "cpu"}) == ""

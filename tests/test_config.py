"""Bad configs: one line naming the key, exit code 2, no traceback."""
import json
import os
import subprocess
import sys

import pytest

from bench.config import Config, ConfigError
from conftest import ROOT

BASE = {"model": "tiny/target", "draft_model": "tiny/draft", "device": "cpu"}


def cli(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("content, names", [
    ("{not json", "not valid JSON"),
    (json.dumps(dict(BASE, colour="blue")), "'colour'"),
    (json.dumps(dict(BASE, max_new_tokens="many")), "'max_new_tokens'"),
    (json.dumps(dict(BASE, top_p=1.5)), "'top_p'"),
    (json.dumps(dict(BASE, repetitions=0)), "'repetitions'"),
    (json.dumps(dict(BASE, methods=["standard", "telepathy"])), "'methods'"),
    (json.dumps(dict(BASE, batch_sizes=[4, -1])), "'batch_sizes'"),
    (json.dumps(dict(BASE, model="acme/not-a-model")), "'model'"),
    (json.dumps(dict(BASE, num_beams=2, num_return_sequences=3)), "'num_return_sequences'"),
    (json.dumps([1, 2]), "JSON object"),
])
def test_bad_config_file_exits_2_naming_the_key(tmp_path, content, names):
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = cli("--config", str(path))
    assert result.returncode == 2
    assert names in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_config_file_and_unknown_preset_exit_2():
    missing = cli("--config", "no/such/file.json")
    assert missing.returncode == 2 and "no/such/file.json" in missing.stderr and "not found" in missing.stderr
    preset = cli("--preset", "nope")
    assert preset.returncode == 2 and "unknown preset 'nope'" in preset.stderr and "tiny" in preset.stderr


def test_bad_flag_value_exits_2():
    result = cli("--preset", "tiny", "--max-new-tokens", "ten")
    assert result.returncode == 2 and "--max-new-tokens" in result.stderr and "Traceback" not in result.stderr


def test_flags_override_preset_keys(tmp_path):
    from bench.cli import config_dict, parser

    args = parser().parse_args(["--preset", "tiny", "--methods", "standard,batched", "--max-new-tokens", "7",
                                "--model", "tiny/draft", "--draft-model", "tiny/target", "--results", str(tmp_path / "r.csv"),
                                "--engine", "hf,fast"])
    config = Config.from_dict(config_dict(args))
    assert config.methods == ["standard", "batched"] and config.max_new_tokens == 7
    assert (config.model, config.draft_model, config.results) == ("tiny/draft", "tiny/target", str(tmp_path / "r.csv"))
    assert config.engine == ["hf", "fast"] and config.batch_sizes == [1, 2, 6]  # the rest from the preset


def test_every_preset_is_valid():
    from bench.config import preset_names, preset_path, read_json

    assert {"tiny", "quick", "standard", "full"} <= set(preset_names())
    for name in preset_names():
        Config.from_dict(read_json(preset_path(name)), check_models=False)


def test_flash_attention_without_the_package_names_the_fix():
    from models.loading import flash_attn_available

    if flash_attn_available():
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ConfigError, match="pip install flash-attn"):
        Config.from_dict(dict(BASE, attention="flash_attention_2"))


def test_speculative_without_draft_is_refused():
    with pytest.raises(ConfigError, match="'draft_model'"):
        Config.from_dict(dict(BASE, draft_model=None, methods=["speculative"]))


@pytest.mark.parametrize("args, names", [
    (["--prompt", "  "], "'prompts' has an empty prompt"),
    (["--results", "/proc/no/runs.csv"], "'results'"),
    (["--engine", "fast", "--warmup", "0"], "'warmup'"),
    (["--batch-sizes", "1,x"], "comma-separated list of integers"),
    (["--max-new-tokens", "32768"], "context of 4096 tokens"),
    (["--prompt", "word " * 5000], "'prompts'"),
    (["--device", "cuda"], "'device'"),
])
def test_bad_flags_exit_2_before_anything_runs(args, names):
    result = cli("--preset", "tiny", *args)
    assert result.returncode == 2 and names in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_prompts_are_used_exactly_as_written():
    config = Config.from_dict(dict(BASE, prompts=["  leading and trailing spaces  "]))
    assert config.prompts == ["  leading and trailing spaces  "]


@pytest.mark.parametrize("key, typed, meant", [("quantization", "4bit", "bnb-4bit"), ("methods", ["standrd"], "standard"),
                                               ("engine", "hf-compiled", "hf_compiled")])
def test_a_near_miss_choice_names_the_one_meant(key, typed, meant):
    with pytest.raises(ConfigError) as e:
        Config.from_dict({key: typed}, check_models=False)
    assert str(e.value).endswith(f"did you mean {meant}?") and f"config key '{key}'" in str(e.value)
    with pytest.raises(ConfigError) as far:
        Config.from_dict({key: "zzzz"}, check_models=False)
    assert "did you mean" not in str(far.value)


def results_path(tmp_path, kind: str):
    path = tmp_path / f"{kind}.csv"
    if kind == "fifo":
        os.mkfifo(path)  # opening it for append would wait for a reader for ever
    elif kind == "long_first_line":
        path.write_text("a" * 200_000 + "\n1\n")  # past the csv module's 128 KiB field limit
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")  # a read never ends
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind, names", [("fifo", "not a regular file"), ("long_first_line", "runs past 64 KiB"),
                                         ("dev_zero", "not a regular file"), ("folder", "is a folder")])
def test_a_results_path_that_is_no_regular_file_is_one_line_and_exit_2(tmp_path, kind, names):
    """A FIFO hung the run until killed, and a long first line or /dev/zero gave a csv traceback. The subprocess
    timeout only guards against the hang; nothing here times the refusal."""
    path = results_path(tmp_path, kind)
    result = cli("--preset", "tiny", "--results", str(path))
    assert result.returncode == 2, result.stderr
    assert names in result.stderr and "config key 'results'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not path.with_name("outputs.jsonl").exists()  # refused before anything was written


@pytest.mark.parametrize("args, names", [
    (["--bogus-flag", "1"], "unrecognized arguments: --bogus-flag 1"),
    (["--port", "abc"], "argument --port: invalid int value: 'abc'"),
    (["--preset", "tiny", "--max-new-token", "8"], "did you mean --max-new-tokens?"),
])
def test_a_bad_flag_is_one_line_and_an_abbreviation_is_refused_with_the_flag_meant(args, names):
    """argparse printed 31 lines of usage first, and took --max-new-token silently for --max-new-tokens."""
    result = cli(*args)
    assert result.returncode == 2
    assert names in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1

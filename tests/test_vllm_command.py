"""The tool starts a real vLLM (CPU) itself: `python app.py --preset vllm-cpu` with a `--server-command` whose JSON
`--speculative-config` is given on the command line, under the `speculative` method with no local draft model.
One server for the module (the tool starts and stops it); the GPU preset's commands are checked against the
installed vLLM's own flags and speculative-config keys. Needs scripts/setup-vllm.sh's build."""
import csv
import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from engines.server.spec import flag_values
from fixtures.vllm import NGRAM, SETUP, require_vllm, serve_command


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    require_vllm()
    results = tmp_path_factory.mktemp("cli") / "runs.csv"
    command = serve_command("--enable-per-request-metrics", f"--speculative-config '{NGRAM}'", model="{model}")
    argv = [sys.executable, "app.py", "--preset", "vllm-cpu", "--methods", "speculative", "--server-command", command,
            "--concurrency", "1,4", "--num-requests", "8", "--max-new-tokens", "24", "--results", str(results)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    with open(results, newline="") as f:
        rows = list(csv.DictReader(f)) if results.exists() else []
    return done, command, rows


def test_a_json_speculative_config_on_the_command_line_reaches_vllm(cli_run):
    done, command, rows = cli_run
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["error"] for r in rows]
    for row in rows:
        assert row["method"] == "speculative"  # runs with no local draft model: the server drafts
        assert row["server_command"] == command  # the template, as configured
        run = row["server_command_run"]  # and the command that really ran
        assert "{port}" not in run and "{model}" not in run and "models/tiny/target" in run
        assert json.loads(shlex.split(run)[shlex.split(run).index("--speculative-config") + 1])["method"] == "ngram"


def test_server_rows_say_what_the_server_drafted(cli_run):
    _, _, rows = cli_run
    for row in rows:
        assert row["server_spec_method"] == "ngram" and float(row["server_k"]) == 4
        assert float(row["num_draft_tokens"]) == 4  # the server's k, not the client's prompt-lookup default
        drafts, accepted = float(row["server_drafts"]), float(row["accepted_tokens"])
        assert drafts > 0 and float(row["drafted_tokens"]) >= drafts
        assert float(row["mean_accepted_tokens"]) == pytest.approx(1 + accepted / drafts, rel=1e-5)
        positions = [float(v) for v in row["acceptance_by_position"].split("|")]
        assert len(positions) == 4 and positions == sorted(positions, reverse=True)
        assert sum(positions) * drafts == pytest.approx(accepted, abs=4 * 5e-4 * drafts)
        assert float(row["server_ttft_ms_mean"]) > 0
        if float(row["duration_s"]) > 0.5:  # sampled every 0.5 s, the first at 0.1 s: a shorter load may have none
            assert float(row["kv_cache_usage_peak"]) > 0


def test_the_tool_leaves_no_vllm_running(cli_run):
    import psutil

    _, _, rows = cli_run
    ports = {flag_values(r["server_command_run"])["--port"] for r in rows}
    time.sleep(1)
    left = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    assert not [c for c in left if "serve" in c and any(f"--port {port}" in c for port in ports)]


def test_the_gpu_preset_commands_parse_and_name_real_vllm_flags_and_keys():
    """vllm-eagle3 needs a GPU; here its commands are checked against this vLLM: every flag is one `vllm serve`
    knows, every --speculative-config key a SpeculativeConfig field and its method one vLLM accepts."""
    require_vllm()
    from bench.config import Config, preset_path, read_json
    from engines.server.spec import server_drafting

    config = Config.from_dict(read_json(preset_path("vllm-eagle3")), check_models=False)
    assert [server_drafting(c).get("method") for c in config.server_command] == [None, "draft_model", "eagle3"]
    vllm = subprocess.run(["bash", str(SETUP), "check"], capture_output=True, text=True).stdout.strip()
    python = os.path.join(os.path.dirname(vllm), "python")
    probe = ("import dataclasses, json, typing\nfrom vllm.config import SpeculativeConfig\n"
             "from vllm.config.speculative import SpeculativeMethod\n"
             "def flat(t):\n    return [x for a in typing.get_args(t) for x in (flat(a) if typing.get_args(a) else [a])]\n"
             "print(json.dumps({'keys': [f.name for f in dataclasses.fields(SpeculativeConfig)],"
             " 'methods': flat(SpeculativeMethod)}))")
    known = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=300,
                                      check=True).stdout.strip().splitlines()[-1])
    helptext = subprocess.run([vllm, "serve", "--help=all"], capture_output=True, text=True, timeout=300).stdout
    for command in config.server_command:
        words = shlex.split(command)
        assert words[:2] == ["vllm", "serve"]
        for flag in flag_values(command):
            assert flag in helptext, f"{flag} is no flag of vllm serve"
        if spec := flag_values(command).get("--speculative-config"):
            spec = json.loads(spec)
            assert set(spec) <= set(known["keys"]) and spec["method"] in known["methods"]

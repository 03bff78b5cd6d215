"""The server engine against a real `transformers serve` on 127.0.0.1 serving the tiny target in float32 on the CPU:
every request recorded, texts non-empty, greedy texts equal to in-process standard's, and no process left behind."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PROMPTS

pytest.importorskip("openai")  # transformers serve needs it (requirements.txt)


class Served:
    def __init__(self, proc: subprocess.Popen, endpoint: str):
        self.proc, self.endpoint = proc, endpoint

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def transformers_serve(tmp_path_factory):
    """One server for the module (the last test stops it, checking it leaves no process behind)."""
    import httpx

    from models.tiny import tiny_path
    from engines.server.process import free_port

    tmp_path = tmp_path_factory.mktemp("serve")
    port = free_port()
    cli = Path(sys.executable).with_name("transformers")
    if not cli.exists():
        cli = Path(shutil.which("transformers") or cli)
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([str(cli), "serve", str(tiny_path("tiny/target")), "--device", "cpu", "--dtype", "float32",
                             "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    served = Served(proc, f"http://127.0.0.1:{port}/v1")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not answer /health in 180 s")
        yield served
    finally:
        served.stop()
        log.close()


def texts_by_prompt(outputs, **match) -> dict[int, str]:
    return {o["prompt_index"]: o["text"] for o in outputs if all(o[k] == v for k, v in match.items())}


def test_sessions_against_transformers_serve(transformers_serve, tmp_path):
    """Multi-turn sessions through a real server: every turn answered, each turn's prompt the history so far
    (longer than the turn before it by at least the answer it carries), TTFT recorded by turn."""
    from collections import defaultdict

    from bench.config import Config
    from bench.runner import run_all
    from store import archive
    from store.requests import load_requests

    config = Config.from_dict(dict(
        model="tiny/target", methods=["standard"], engine=["server"], endpoint=transformers_serve.endpoint,
        workload="sessions", dataset="datasets/sessions.jsonl", session_turns=3, num_requests=3, concurrency=[2],
        warmup_requests=1, max_new_tokens=8, results=str(tmp_path / "runs.csv")))
    (row,) = run_all(config)
    assert row["status"] == "ok", row["error"]
    assert row["sessions"] == 3 and row["turns"] == 9 and row["failed_requests"] == 0
    sessions = defaultdict(list)
    for r in load_requests(config.results, {archive.row_key(row)}):
        sessions[r["session"]].append(r)
    for turns in sessions.values():
        turns.sort(key=lambda r: r["turn"])
        assert [r["turn"] for r in turns] == [0, 1, 2]
        for before, after in zip(turns, turns[1:]):
            assert after["prompt_tokens"] >= before["prompt_tokens"] + before["output_tokens"]
    by_turn = [float(v) for v in row["ttft_ms_by_turn"].split()]
    assert len(by_turn) == 3 and all(v > 0 for v in by_turn)


def test_load_against_transformers_serve(transformers_serve, tmp_path):
    import psutil

    from store import archive
    from bench.config import Config
    from store.requests import load_requests
    from bench.runner import run_all
    from scenarios.load import comparable

    common = dict(model="tiny/target", methods=["standard"], prompts=PROMPTS, max_new_tokens=12, device="cpu",
                  dtype="float32", results=str(tmp_path / "runs.csv"))
    served = Config.from_dict(dict(common, engine=["server"], endpoint=transformers_serve.endpoint,
                                   concurrency=[1, 2], num_requests=8, warmup_requests=1))
    rows = run_all(served)
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["error"] for r in rows]
    assert [r["concurrency"] for r in rows] == [1, 2]
    for row in rows:  # every request recorded, none failed, each with its 12 tokens and their times
        records = load_requests(served.results, {archive.row_key(row)})
        assert len(records) == 8 and all(r["status"] == "ok" for r in records)
        assert all(r["output_tokens"] == 12 and len(r["token_times"]) == 12 for r in records)
        assert all(r["first_token"] >= r["sent"] >= r["scheduled"] for r in records)

    in_process = Config.from_dict(dict(common, engine=["hf"], warmup=0, repetitions=1))
    run_all(in_process)
    outputs = archive.load_outputs(served.results)
    standard = texts_by_prompt(outputs, engine="hf")
    server = texts_by_prompt(outputs, engine="server", setting=rows[0]["setting"])
    assert sorted(server) == sorted(standard) == [0, 1, 2]
    assert all(text.strip() for text in server.values())
    # float32 on the CPU, greedy, fixed length: the server's texts are the in-process texts.
    assert {p: comparable(t) for p, t in server.items()} == {p: comparable(t) for p, t in standard.items()}

    children = psutil.Process(transformers_serve.proc.pid).children(recursive=True)
    transformers_serve.stop()
    assert transformers_serve.proc.poll() is not None
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]

"""A/B of this tool's load generator against `vllm bench serve` on one vLLM server: the same requests (a JSONL of
prompt + output_tokens, sent as plain text, EOS ignored), closed loop at each concurrency, both clients in a random
order in every round (each goes first in half the rounds). Per round and concurrency it keeps each client's TTFT, TPOT and ITL medians (ITL one gap per
event, vLLM's definition) and reports the paired difference (tool - vllm) with its 95% t-interval over rounds.

    python benchmarks/ab_vllm_bench.py                       # starts the tiny target on vLLM CPU (setup-vllm.sh)
    python benchmarks/ab_vllm_bench.py --endpoint http://127.0.0.1:8000/v1 --model-id Qwen/Qwen3-4B \\
        --tokenizer Qwen/Qwen3-4B --vllm vllm --rounds 5 --concurrency 1,4 --dataset datasets/chat_mix.jsonl

Writes ab.json (every round's figures) and ab.md (the table in docs/vllm.md) under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIGURES = (("ttft", "ttft_ms_median", "median_ttft_ms"), ("tpot", "tpot_ms_median", "median_tpot_ms"),
           ("itl", "itl_event_ms_median", "median_itl_ms"))


def start_vllm(log: Path):
    from engines.server.process import ServerProcess, free_port

    port = free_port()
    command = (f"bash {ROOT / 'scripts' / 'setup-vllm.sh'} serve {ROOT / 'models' / 'tiny' / 'target'} "
               f"--host 127.0.0.1 --port {port} --dtype float32 --max-model-len 2048")
    process = ServerProcess(command, log)
    endpoint = f"http://127.0.0.1:{port}/v1"
    process.start(endpoint, 900)
    return process, endpoint


def run_tool(endpoint: str, model: str, dataset: str, c: int, n: int, out: Path) -> dict:
    from bench.config import Config
    from bench.runner import run_all

    config = Config.from_dict(dict(
        model=model, draft_model=None, methods=["standard"], engine=["server"], endpoint=endpoint, dataset=dataset,
        concurrency=[c], num_requests=n, warmup_requests=1, device="cpu", results=str(out / "tool" / "runs.csv")))
    (row,) = run_all(config)
    if row["status"] != "ok":
        raise SystemExit(f"the tool's run failed: {row['error']}")
    return {name: float(row[col]) for name, col, _ in FIGURES}


def run_vllm_bench(vllm: str, endpoint: str, served: str, tokenizer: str, dataset: str, c: int, n: int, out: Path,
                   tag: str) -> dict:
    root = endpoint.rstrip("/").removesuffix("/v1")
    argv = [vllm, "bench", "serve", "--backend", "vllm", "--base-url", root, "--endpoint", "/v1/completions",
            "--model", served, "--tokenizer", tokenizer, "--dataset-name", "custom", "--dataset-path", dataset,
            "--skip-chat-template", "--custom-output-len", "-1", "--num-prompts", str(n), "--max-concurrency", str(c), "--request-rate", "inf",
            "--ignore-eos", "--percentile-metrics", "ttft,tpot,itl,e2el", "--save-result",
            "--result-dir", str(out / "vllm"), "--result-filename", f"{tag}.json"]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode:
        raise SystemExit(f"vllm bench serve failed ({done.returncode}): {done.stderr[-1500:]}")
    result = json.loads((out / "vllm" / f"{tag}.json").read_text())
    return {name: float(result[key]) for name, _, key in FIGURES}


def paired(diffs: list[float]) -> tuple[float, float, float]:
    d = np.asarray(diffs, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return mean, mean - half, mean + half


def table(rounds: list[dict], concurrencies: list[int]) -> str:
    lines = ["| c | figure | tool median (ms) | vllm bench median (ms) | tool − vllm, mean of rounds | 95% CI | "
             "within 5% or 2 ms |", "|---|---|---|---|---|---|---|"]
    for c in concurrencies:
        mine = [r for r in rounds if r["c"] == c]
        for name, _, _ in FIGURES:
            tool = [r["tool"][name] for r in mine]
            ref = [r["vllm"][name] for r in mine]
            mean, low, high = paired([a - b for a, b in zip(tool, ref)])
            close = abs(mean) <= max(0.05 * float(np.median(ref)), 2.0)
            lines.append(f"| {c} | {name.upper()} | {np.median(tool):.2f} | {np.median(ref):.2f} | {mean:+.2f} | "
                         f"[{low:+.2f}, {high:+.2f}] | {'yes' if close else 'no'}"
                         f"{', CI holds 0' if low <= 0 <= high else ''} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", help="a running server's /v1 URL (default: start the tiny target on vLLM CPU)")
    p.add_argument("--model", default="tiny/target", help="this tool's model (its tokenizer counts tokens)")
    p.add_argument("--model-id", help="the served model name (default: the server's first)")
    p.add_argument("--tokenizer", default=str(ROOT / "models" / "tiny" / "target"), help="vllm bench's tokenizer")
    p.add_argument("--vllm", help="the vllm executable (default: scripts/setup-vllm.sh's)")
    p.add_argument("--dataset", default=str(ROOT / "datasets" / "chat_mix.jsonl"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", default="1,4")
    p.add_argument("--num-requests", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "results" / "ab_vllm"))
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    vllm = a.vllm or subprocess.run(["bash", str(ROOT / "scripts" / "setup-vllm.sh"), "check"], capture_output=True,
                                    text=True).stdout.strip()
    if not vllm:
        print("error: no vllm executable: run 'bash scripts/setup-vllm.sh' or pass --vllm", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped A/B stops the server it started
    process, endpoint = (None, a.endpoint) if a.endpoint else start_vllm(out / "server.log")
    try:
        import httpx

        served = a.model_id or httpx.get(endpoint + "/models", timeout=10).json()["data"][0]["id"]
        concurrencies = [int(c) for c in a.concurrency.split(",")]
        rng, rounds = random.Random(a.seed), []
        # Balanced and shuffled: each client goes first in half the rounds of each concurrency, in a random order.
        firsts = {c: rng.sample(["tool", "vllm"] * (a.rounds // 2 + 1), a.rounds) for c in concurrencies}
        for c in concurrencies:
            while abs(firsts[c].count("tool") - firsts[c].count("vllm")) > 1:
                firsts[c] = rng.sample(["tool", "vllm"] * (a.rounds // 2 + 1), a.rounds)
        for r in range(a.rounds):
            for c in concurrencies:
                order = [firsts[c][r], "vllm" if firsts[c][r] == "tool" else "tool"]
                figures = {}
                for who in order:
                    started = time.perf_counter()
                    figures[who] = run_tool(endpoint, a.model, a.dataset, c, a.num_requests, out) if who == "tool" \
                        else run_vllm_bench(vllm, endpoint, served, a.tokenizer, a.dataset, c, a.num_requests, out,
                                            f"r{r}-c{c}")
                    print(f"round {r + 1} c={c} {who}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in figures[who].items())
                          + f" ({time.perf_counter() - started:.0f} s)", flush=True)
                rounds.append({"round": r, "c": c, "order": order, **figures})
    finally:
        if process is not None:
            process.stop()
    (out / "ab.json").write_text(json.dumps({"endpoint": endpoint, "rounds": rounds}, indent=1))
    text = table(rounds, concurrencies)
    (out / "ab.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the load scenario offers, decided from the config alone (no torch, so the config check can use it):
the load points, the workload's keys (scenarios/datasets.py reads the files), and the checks between load keys.

A load point is closed loop (`concurrency` N: N requests in flight, the next sent when one ends) or open
loop (`request_rate` R: arrivals at R requests/s, Poisson or gamma-bursty, `inf` all at once).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from decoding.options import option
from scenarios.datasets import read_conversations

WORKLOADS = ("prompts", "sessions", "random", "shared_prefix")
DEFAULT_INPUT_TOKENS = 128  # random / shared_prefix with no input_tokens set

# The load scenario's own config keys: it runs when concurrency or request_rate is set, or an engine only serves.
OPTIONS = {
    "concurrency": option([], "load: closed loop, requests kept in flight; a list sweeps", "list[int]", lo=1, hi=100000, label="Concurrency"),
    "request_rate": option([], "load: open loop, requests/s arriving at random (Poisson; gamma with burstiness); inf sends all at once; a list sweeps", "list[float]", lo=0.001, hi=math.inf, label="Request rate (req/s)"),
    "burstiness": option(1.0, "load: gamma shape of the arrival gaps; 1 is Poisson, below 1 burstier", "float", lo=0.01, hi=100.0, label="Burstiness"),
    "num_requests": option(0, "load: measured requests per load point; 0: one per prompt x completion (or as many as duration_s allows)", "int", lo=0, hi=1000000, label="Requests per point"),
    "duration_s": option(0.0, "load: stop sending after this many seconds; 0: no limit", "float", lo=0.0, hi=86400.0, label="Duration (s)"),
    "warmup_requests": option(2, "load: requests sent before each load point, not measured", "int", lo=0, hi=10000, label="Warm-up requests"),
    "dataset": option(None, "load: a local file used instead of prompts: plain JSONL ({\"prompt\", \"output_tokens\"} lines, e.g. datasets/chat_mix.jsonl), sessions JSONL ({\"turns\": [{\"user\", \"output_tokens\"}]}, e.g. datasets/sessions.jsonl) or ShareGPT JSON/JSONL ({\"conversations\": [{\"from\", \"value\"}]})", "optstr", label="Dataset file"),
    "workload": option("prompts", "load: what is sent: prompts (the config's prompts or the dataset's first turns), sessions (multi-turn conversations: turn k's prompt is the whole history), random (synthetic prompts of input_tokens tokens) or shared_prefix (prefix_groups groups of prefix_questions prompts sharing a prefix of prefix_tokens)", "str", choices=list(WORKLOADS), label="Workload"),
    "session_turns": option(4, "load: sessions generated from the config's prompts (no dataset): turns per session; with a dataset: the most turns kept per session (0: all)", "int", lo=0, hi=1000, label="Turns per session"),
    "think_time_s": option(0.0, "load: sessions: seconds a user waits after an answer before sending the next turn", "float", lo=0.0, hi=3600.0, label="Think time (s)"),
    "input_tokens": option([], "load: random and shared_prefix workloads: prompt length in tokens of the run's tokenizer (shared_prefix: each question's suffix); a list sweeps it as a load point", "list[int]", lo=1, hi=1000000, label="Prompt length (tokens)"),
    "input_distribution": option("fixed", "load: random workload: prompt lengths fixed at input_tokens, or drawn uniform / normal around it (seeded)", "str", choices=["fixed", "uniform", "normal"], label="Prompt length distribution"),
    "input_spread": option(0.25, "load: random workload: uniform lengths within ±spread × input_tokens; normal: standard deviation spread × input_tokens", "float", lo=0.0, hi=1.0, label="Prompt length spread"),
    "prefix_tokens": option(256, "load: shared_prefix workload: tokens of each group's shared prefix", "int", lo=1, hi=1000000, label="Shared prefix (tokens)"),
    "prefix_groups": option(4, "load: shared_prefix workload: groups, each with its own prefix", "int", lo=1, hi=10000, label="Prefix groups"),
    "prefix_questions": option(8, "load: shared_prefix workload: questions (prompts) per group, each its own suffix", "int", lo=1, hi=10000, label="Questions per group"),
    "too_long": option("skip", "load: a dataset line or session turn longer than the model's context: skip it (counted in the row's notes) or refuse the run", "str", choices=["skip", "refuse"], label="Too long for the context"),
    "slo_ttft_ms": option(0.0, "load: time-to-first-token target for goodput; 0: none", "float", lo=0.0, hi=1e7, label="SLO: TTFT (ms)"),
    "slo_tpot_ms": option(0.0, "load: time-per-output-token target for goodput; 0: none", "float", lo=0.0, hi=1e7, label="SLO: TPOT (ms)"),
    "max_batch_size": option(8, "load: most requests in one batch (static batching of call engines, continuous batching)", "int", lo=1, hi=4096, label="Max batch size"),
    "request_timeout_s": option(600.0, "load: seconds one request may take before it counts as failed", "float", lo=1.0, hi=86400.0, label="Request timeout (s)"),
    "capacity": option(False, "load: search the highest request rate meeting slo_ttft_ms / slo_tpot_ms (a synchronous probe, one at the throughput it measured, then bisection; replaces concurrency and request_rate)", "bool", label="Capacity search"),
    "capacity_by": option("rate", "load: capacity search: what it varies, the open-loop request rate or the closed-loop concurrency (1, doubled, then integer bisection until adjacent)", "str", choices=["rate", "concurrency"], label="Capacity: search by"),
    "capacity_percentile": option(90.0, "load: capacity search: the percentile the SLOs hold at (90: 90% of requests within both targets)", "float", lo=1.0, hi=100.0, label="Capacity: percentile"),
    "capacity_attainment": option(1.0, "load: capacity search: the part of that percentile's share required (1.0: all of it; 0.99 allows 1% slack)", "float", lo=0.01, hi=1.0, label="Capacity: attainment"),
    "capacity_tolerance": option(0.1, "load: capacity search: stop when the bracket between the last rate met and the first missed is within this fraction", "float", lo=0.001, hi=1.0, label="Capacity: tolerance"),
    "capacity_max_probes": option(8, "load: capacity search: most probes (load rows) per search, the synchronous one included", "int", lo=2, hi=100, label="Capacity: probe budget"),
}


@dataclass(frozen=True)
class Load:
    concurrency: int = 0  # > 0: closed loop
    rate: float = 0.0  # > 0: open loop, requests/s (inf: every request at once)
    server: int = -1  # which server_command serves this point (-1: none is started)
    servers: int = 0  # how many commands the run sweeps (a label names the command only when several)
    input_tokens: int = 0  # the synthetic prompt length at this point (random / shared_prefix), 0: not synthetic

    @property
    def label(self) -> str:
        if self.concurrency:
            text = f"concurrency={self.concurrency}"
        else:
            text = f"rate={'inf' if math.isinf(self.rate) else f'{self.rate:g}'}"
        if self.input_tokens:
            text += f", input={self.input_tokens}"
        return text + (f", server={self.server + 1}" if self.servers > 1 else "")


def engine_kinds(names) -> set[str]:
    from engines import ENGINES

    return {getattr(ENGINES[n], "kind", "call") for n in names if n in ENGINES}


def uses_load(config) -> bool:
    """The load scenario runs when load settings are given or an engine only serves (a server, continuous batching)."""
    return bool(config.concurrency or config.request_rate or config.duration_s or config.num_requests
                or getattr(config, "workload", "prompts") != "prompts" or getattr(config, "capacity", False) or engine_kinds(config.engine) - {"call"})


def load_points(config, closed: list[int] | None = None) -> list[Load]:
    """Every load point of the run: each concurrency, then each rate, for each server command.
    closed: concurrencies to use instead of the config's (the batched method's batch sizes become concurrency)."""
    commands = list(config.server_command or [])
    servers = range(len(commands)) if commands else [-1]
    concurrency = closed if closed is not None else list(config.concurrency)
    rates = [] if closed is not None else list(config.request_rate)
    if not concurrency and not rates:
        concurrency = [1]
    lengths = list(config.input_tokens) if config.workload in ("random", "shared_prefix") else []
    if config.workload in ("random", "shared_prefix") and not lengths:
        lengths = [DEFAULT_INPUT_TOKENS]
    n = len(commands)
    return [Load(concurrency=c, server=s, servers=n, input_tokens=i) for s in servers for c in concurrency
            for i in lengths or [0]] + \
        [Load(rate=r, server=s, servers=n, input_tokens=i) for s in servers for r in rates for i in lengths or [0]]


def check_load(config) -> str | None:
    """The one-line reason a combination of load keys cannot run, or None."""
    kinds = {name: engine_kinds([name]) for name in config.engine}
    remote = [n for n, k in kinds.items() if "remote" in k]
    if config.server_command and not remote:
        return "config key 'server_command' starts servers for engine 'server': add it to 'engine'"
    if len(config.server_command or []) > 1 and len(remote) != len(config.engine):
        return ("config key 'server_command' sweeps several commands with engine 'server' alone: "
                "measure in-process engines in a separate run")
    if remote and not config.endpoint and not config.server_command:
        return "config key 'endpoint' is needed by engine 'server' (e.g. http://127.0.0.1:8000/v1), or set server_command"
    if config.endpoint and "{port}" in config.endpoint and not config.server_command:
        return "config key 'endpoint' has {port}, which only a server the tool starts (server_command) fills in"
    if config.endpoint and not str(config.endpoint).startswith(("http://", "https://")):
        return f"config key 'endpoint' must start with http:// or https://, got '{config.endpoint}'"
    if any(math.isinf(r) for r in config.request_rate) and not config.num_requests and config.duration_s:
        return "config key 'request_rate': inf sends every request at once and needs num_requests, not duration_s alone"
    if getattr(config, "capacity", False) and not (config.slo_ttft_ms or config.slo_tpot_ms):
        return "config key 'capacity' searches the rate meeting the SLOs: set slo_ttft_ms or slo_tpot_ms"
    if getattr(config, "capacity_by", "rate") != "rate" and not getattr(config, "capacity", False):
        return "config key 'capacity_by' chooses what the capacity search varies: set capacity too"
    if config.dataset and config.workload in ("random", "shared_prefix"):
        return f"config key 'dataset' gives the prompts, which workload '{config.workload}' makes itself: drop one"
    if config.input_tokens and config.workload not in ("random", "shared_prefix"):
        return "config key 'input_tokens' sets synthetic prompt lengths: set workload to random or shared_prefix"
    if config.think_time_s and config.workload != "sessions":
        return "config key 'think_time_s' is the pause between a session's turns: set workload to sessions"
    if config.dataset:
        try:
            read_conversations(config.dataset)
        except ValueError as e:
            return str(e)
    return None

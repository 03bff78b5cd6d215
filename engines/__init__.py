"""The engines axis: ENGINES is the one list of what turns a Request into a Generation.

An engine's module is imported only when the engine is made, so listing engines (config choices,
--help) loads no torch. To add an engine, write its module and add one line here. An engine's own
settings are its `options`: each becomes a config key, a flag and a form field, reaches the engine's
constructor as a keyword argument, and is written into every row of that engine (`engine_options`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from decoding.options import option

# Whether the compiling engines compile: one key for both, so a run compares them compiled or not, never mixed.
COMPILE = option(True, "fast and hf_compiled engines: compile on CUDA (fast: torch.compile with CUDA graphs; "
                 "hf_compiled: transformers' compiled static-cache forward); false: eager, to see what compiling "
                 "buys (on the CPU nothing is compiled)", "bool",
                 label="Compile (CUDA)")
FAST = {
    "compile": COMPILE,
    "fast_fuse": option(True, "fast engine: run models of a supported layout (Qwen3) through the fused forward "
                        "(one QKV and one gate/up matmul); false: the model's own modules", "bool",
                        label="Fused forward (fast)"),
    "fast_tuning": option(True, "fast engine, compiled: gpt-fast's inductor settings (coordinate-descent tuning of "
                          "kernel launch configs), passed to the fast engine's own torch.compile calls only; false: "
                          "inductor's defaults", "bool",
                        label="Inductor tuning (fast)"),
    "fast_nosync": option(True, "fast engine: speculative and prompt-lookup rounds without a host sync (a "
                          "draft step's graph and a verify's, replayed in order); false: one host sync per round", "bool",
                        label="Rounds without host sync (fast)"),
}
CONTINUOUS = {
    "cb_num_blocks": option(256, "continuous engine: KV cache blocks (the cache holds cb_num_blocks x cb_block_size tokens)", "int", lo=1, hi=10000000, label="KV cache blocks (continuous)"),
    "cb_block_size": option(32, "continuous engine: tokens per KV cache block", "int", lo=4, hi=4096, label="KV block size (continuous)"),
    "cb_prefix_sharing": option(False, "continuous engine: share the KV blocks of a prompt prefix already cached (transformers' block sharing), as a server's prefix cache does; off, every request prefills its whole prompt", "bool", label="Prefix sharing (continuous)"),
}
SERVER = {
    "endpoint": option(None, "server engine: OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 ({port}: the port server_command got)", "optstr", label="Server endpoint"),
    "served_model": option(None, "server engine: model name sent in requests; null: the first one the server lists", "optstr", label="Served model name"),
    "api": option("completions", "server engine: completions (the prompt as the in-process engines see it) or chat (the server applies its template)", "str", choices=("completions", "chat"), label="Server API"),
    "api_key_env": option("OPENAI_API_KEY", "server engine: environment variable holding the API key (never written anywhere)", "str", label="API key variable"),
    "server_command": option([], "server engine: command lines the tool starts, one server at a time ({port}, {model} filled in); a list sweeps", "list[str]", label="Server commands"),
    "server_start_timeout_s": option(600.0, "server engine: seconds a started server has to answer /health or /v1/models", "float", lo=1.0, hi=7200.0, label="Server start timeout (s)"),
}


@dataclass(frozen=True)
class EngineSpec:
    name: str
    help: str  # one line, for --help, the README and the dashboard
    factory: str  # "module:Class", called with the loaded models
    compiles: bool = False  # its first call compiles: a warm-up call is required, so compile time stays out
    # call: generate(request, probe) per call (under load: static batching); serving: takes requests as they
    # arrive (load scenario only); remote: also runs outside this process, so the runner loads no weights for it.
    kind: str = "call"
    options: dict = field(default_factory=dict)  # its own config keys: name -> decoding.options.option(...)


ENGINES: dict[str, EngineSpec] = {e.name: e for e in (
    EngineSpec("hf", "transformers generate, dynamic KV cache, eager", "engines.hf:HFEngine"),
    EngineSpec("hf_compiled", "transformers generate, static KV cache, torch.compile on a GPU", "engines.hf_compiled:HFCompiledEngine", compiles=True, options={"compile": COMPILE}),
    EngineSpec("fast", "our static-KV-cache loop, CUDA graphs on a GPU", "engines.fast:FastEngine", compiles=True, options=FAST),
    EngineSpec("continuous", "transformers continuous batching (paged KV cache), in process, under load", "engines.continuous:ContinuousEngine", kind="serving", options=CONTINUOUS),
    EngineSpec("server", "any OpenAI-compatible HTTP server (vLLM, SGLang, transformers serve, ...), under load", "engines.server.engine:ServerEngine", kind="remote", options=SERVER),
)}


def needs_weights(names) -> bool:
    """Whether any of these engines runs the model in this process."""
    return any(ENGINES[n].kind != "remote" for n in names)


def engine_options(name: str, config) -> dict:
    """The values of the engine's own keys in this config."""
    return {key: getattr(config, key) for key in ENGINES[name].options}


def options_text(options: dict) -> str:
    """A row's `engine_options` cell: key=value pairs, so a figure always says how it was made."""
    return ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items())


def make_engine(name: str, models, config=None):
    """The engine, given its own options from the config (their defaults without one)."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine '{name}': use one of {', '.join(ENGINES)}")
    module, cls = ENGINES[name].factory.split(":")
    options = engine_options(name, config) if config is not None else {}
    return getattr(importlib.import_module(module), cls)(models, **options)

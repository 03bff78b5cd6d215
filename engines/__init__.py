"""The engines axis: ENGINES is the one list of what turns a Request into a Generation.

An engine's module is imported only when the engine is made, so listing engines (config choices,
--help) loads no torch. To add an engine, write its module and add one line here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSpec:
    name: str
    help: str  # one line, for --help, the README and the dashboard
    factory: str  # "module:Class", called with the loaded models
    compiles: bool = False  # its first call compiles: a warm-up call is required, so compile time stays out
    # call: generate(request, probe) per call (under load: static batching); serving: takes requests as they
    # arrive (load scenario only); remote: also runs outside this process, so the runner loads no weights for it.
    kind: str = "call"


ENGINES: dict[str, EngineSpec] = {e.name: e for e in (
    EngineSpec("hf", "transformers generate, dynamic KV cache, eager", "engines.hf:HFEngine"),
    EngineSpec("hf_compiled", "transformers generate, static KV cache, torch.compile on a GPU", "engines.hf_compiled:HFCompiledEngine", compiles=True),
    EngineSpec("fast", "our static-KV-cache loop, CUDA graphs on a GPU", "engines.fast:FastEngine", compiles=True),
    EngineSpec("continuous", "transformers continuous batching (paged KV cache), in process, under load", "engines.continuous:ContinuousEngine", kind="serving"),
    EngineSpec("server", "any OpenAI-compatible HTTP server (vLLM, SGLang, transformers serve, ...), under load", "engines.server:ServerEngine", kind="remote"),
)}


def needs_weights(names) -> bool:
    """Whether any of these engines runs the model in this process."""
    return any(ENGINES[n].kind != "remote" for n in names)


def make_engine(name: str, models):
    if name not in ENGINES:
        raise ValueError(f"unknown engine '{name}': use one of {', '.join(ENGINES)}")
    module, cls = ENGINES[name].factory.split(":")
    return getattr(importlib.import_module(module), cls)(models)

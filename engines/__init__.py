"""Engines turn a Request into a Generation. `hf` uses transformers' generate; `fast` runs our own
static-cache loop (CUDA graphs on GPU)."""

ENGINES = ("hf", "fast")


def make_engine(name: str, models):
    if name == "hf":
        from engines.hf import HFEngine

        return HFEngine(models)
    if name == "fast":
        from engines.fast import FastEngine

        return FastEngine(models)
    raise ValueError(f"unknown engine '{name}': use one of {', '.join(ENGINES)}")

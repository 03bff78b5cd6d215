"""The `fast` engine: our own decode loop over the transformers model modules, in the style of gpt-fast (static KV
cache, CUDA-graphed decode steps, no host sync per token). Read docs/fast_engine.md, then loops.py top to bottom."""
from engines.fast.engine import FastEngine

__all__ = ["FastEngine"]

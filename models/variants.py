"""The model-variant axes: how the weights are held. A run loads the models once per variant and
measures every engine and method on it; quantization and attention are swept, dtype is one value."""
from __future__ import annotations

import itertools

QUANTIZATIONS = ("none", "bnb-4bit", "bnb-8bit")
ATTENTIONS = ("eager", "sdpa", "flash_attention_2")
DTYPES = ("auto", "bfloat16", "float16", "float32")


def variants(config) -> list[tuple[str, str]]:
    """(quantization, attention) pairs, each loaded once."""
    return list(itertools.product(config.quantization, config.attention))

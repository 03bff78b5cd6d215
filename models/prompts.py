"""Prompt texts to token ids, as every row of a run sees them: done once per model variant, before any
clock starts, and by the config check, so a prompt too long for the model is refused before weights load."""
from __future__ import annotations

import math


def tokenize_prompts(tok, config) -> list[list[int]]:
    """Token ids of each prompt, chat template applied when the tokenizer has one. With prompt_length N
    the user text is cut or repeated so that the whole prompt, template included, is exactly N tokens."""
    templated = config.chat_template and getattr(tok, "chat_template", None)
    prefix, suffix = [], []
    if templated:
        marker = "\u2063PROMPT\u2063"  # split the template around the user text, so it is never cut
        text = tok.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                       add_generation_prompt=True,
                                       enable_thinking=getattr(config, "thinking", False))
        before, after = text.split(marker)
        prefix = tok(before, add_special_tokens=False).input_ids
        suffix = tok(after, add_special_tokens=False).input_ids
    out = []
    for prompt in config.prompts:
        body = tok(prompt, add_special_tokens=not templated).input_ids
        if config.prompt_length:
            n = max(1, config.prompt_length - len(prefix) - len(suffix))
            body = (body * math.ceil(n / len(body)))[:n]
        out.append(prefix + body + suffix)
    return out

"""What a server command says about the server's own drafting: vLLM's `--speculative-config` JSON, SGLang's
`--speculative-*` flags. Server rows report what the server did, whatever method name the row runs under."""
from __future__ import annotations

import json
import shlex


def flag_values(command: str) -> dict[str, str]:
    """--flag value and --flag=value pairs of a command line, flags with dashes (underscores read as dashes)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return {}
    out: dict[str, str] = {}
    for i, w in enumerate(words):
        if not w.startswith("--"):
            continue
        name, eq, value = w.partition("=")
        name = name.replace("_", "-")
        if eq:
            out[name] = value
        elif i + 1 < len(words) and not words[i + 1].startswith("--"):
            out[name] = words[i + 1]
        else:
            out[name] = ""
    return out


def server_drafting(command: str) -> dict:
    """{"method", "k", "draft_model"} of the server's drafting as its command sets it; {} when it drafts nothing."""
    flags = flag_values(command)
    if "--speculative-config" in flags:  # vLLM
        try:
            spec = json.loads(flags["--speculative-config"])
        except json.JSONDecodeError:
            return {}
        if not isinstance(spec, dict):
            return {}
        method = spec.get("method") or ("draft_model" if spec.get("model") else "")
        return {"method": str(method), "k": spec.get("num_speculative_tokens"), "draft_model": spec.get("model") or ""}
    if "--speculative-algorithm" in flags:  # SGLang
        k = flags.get("--speculative-num-draft-tokens") or flags.get("--speculative-num-steps")
        return {"method": flags["--speculative-algorithm"].lower(), "k": int(k) if k and k.isdigit() else None,
                "draft_model": flags.get("--speculative-draft-model-path", "")}
    return {}

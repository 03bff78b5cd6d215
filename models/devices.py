"""Checks of the machine that belong before any model loads: a run asking for CUDA on a machine without it
is refused with one line, like a missing flash-attn, instead of failing every row."""
from __future__ import annotations


def cuda_problem(device: str) -> str:
    """'' when `device` can be used here, else the ConfigError line naming the key."""
    if device != "cuda":
        return ""
    import torch  # here, not at import: the form's first checks and --help load no torch

    if torch.cuda.is_available():
        return ""
    why = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "PyTorch sees no CUDA GPU"
    return (f"config key 'device': 'cuda' asked for, but {why} (torch {torch.__version__}); "
            "use 'auto' (a GPU when there is one) or 'cpu'")

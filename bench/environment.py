"""Where a row was measured, so CSVs from several machines can be merged and compared."""
from __future__ import annotations

import functools
import platform
import socket
from importlib import metadata

import torch


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


@functools.cache
def environment(device_type: str) -> dict:
    if device_type == "cuda":
        props = torch.cuda.get_device_properties(0)
        device_name = props.name
        memory = round(props.total_memory / 2**30, 1)
    else:
        device_name = platform.processor() or platform.machine()
        memory = float("nan")
    return {
        "device_name": device_name,
        "device_memory_gib": memory,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch_version": torch.__version__,
        "transformers_version": version("transformers"),
        "bitsandbytes_version": version("bitsandbytes"),
        "cuda_version": torch.version.cuda or "",
        "python_version": platform.python_version(),
        "hostname": socket.gethostname(),
    }

"""Where a row was measured, so CSVs from several machines can be merged and compared."""
from __future__ import annotations

import functools
import os
import platform
import socket
from importlib import metadata

import torch


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def cpu_model() -> str:
    """The CPU's marketing name ("Intel(R) Xeon(R) Gold 6338"), which tells machines apart where
    platform.processor() says only "x86_64"."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """Cores this process may run on (its affinity), not the whole machine's when it is pinned."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 0


def ram_gib() -> float:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return float("nan")


def gpu_driver() -> str:
    """The NVIDIA driver version from NVML; empty without a GPU, NVML or its package."""
    if not torch.cuda.is_available():
        return ""
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        return driver.decode() if isinstance(driver, bytes) else str(driver)
    except Exception:
        return ""


@functools.cache
def environment(device_type: str) -> dict:
    if device_type == "cuda":
        props = torch.cuda.get_device_properties(0)
        device_name = props.name
        memory = round(props.total_memory / 2**30, 1)
    else:
        device_name = cpu_model()
        memory = float("nan")
    return {
        "device_name": device_name,
        "device_memory_gib": memory,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "gpu_driver": gpu_driver(),
        "cpu_model": cpu_model(),
        "cpu_count": cpu_count(),
        "ram_gib": ram_gib(),
        "torch_version": torch.__version__,
        "transformers_version": version("transformers"),
        "bitsandbytes_version": version("bitsandbytes"),
        "cuda_version": torch.version.cuda or "",
        "python_version": platform.python_version(),
        "hostname": socket.gethostname(),
    }

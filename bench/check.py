"""`python app.py --check [--preset NAME]`: what works on this machine, before a long run.

One line per item: `ok`, `--` (does not apply here, and why that matters), `warn` (missing, but the chosen preset
does not need it) or `FAIL` (the preset needs it), each failure with what to do. Exit code 1 when something the
preset needs is missing, else 0. Every GPU item really runs on the device (a 4-bit matmul, a flash-attn call, an
energy read, a compiled function), so a broken install shows here and not an hour into a run."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TESTED = ((5, 24), (6, 0))  # transformers versions the suite runs on: [low, high)
MIN_FREE_GIB = 1.0  # results, texts and the inductor cache of one run fit in far less


@dataclass
class Item:
    name: str
    ok: bool | None  # None: does not apply on this machine
    detail: str
    fix: str = ""
    needed: bool = True  # by the chosen preset

    def line(self) -> str:
        mark = "ok  " if self.ok else "--  " if self.ok is None else "FAIL" if self.needed else "warn"
        tail = f" -> {self.fix}" if self.fix and not self.ok else ""
        return f"{mark}  {self.name:<13} {self.detail}{tail}"


def version_tuple(text: str) -> tuple[int, ...]:
    from packaging.version import Version

    v = Version(text)
    return v.major, v.minor


def check_torch() -> list[Item]:
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    items = [Item("torch", True, f"{torch.__version__} ({build})")]
    if not torch.cuda.is_available():
        why = ("no GPU: this torch has no CUDA" if not torch.version.cuda else "no GPU: CUDA build, but no device is "
               "visible (driver, CUDA_VISIBLE_DEVICES)")
        items.append(Item("gpu", None, f"{why}; CPU figures say nothing about GPU decoding, where the per-token "
                                      "cost is bandwidth or host overhead, not arithmetic"))
        return items
    props = torch.cuda.get_device_properties(0)
    driver = ""
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = f", driver {pynvml.nvmlSystemGetDriverVersion()}"
    except Exception:
        pass
    items.append(Item("gpu", True, f"{props.name}, {props.total_memory / 2**30:.0f} GiB{driver}, "
                                   f"{torch.cuda.device_count()} visible"))
    return items


def check_transformers() -> Item:
    import transformers

    low, high = TESTED
    v = version_tuple(transformers.__version__)
    ok = low <= v < high
    return Item("transformers", ok, f"{transformers.__version__} (tested: >= {low[0]}.{low[1]}, < {high[0]})",
                fix=f"pip install 'transformers>={low[0]}.{low[1]},<{high[0]}' (older 5.x refuse hf_compiled "
                    "drafting on a static cache)")


def cuda_items(config):
    """bitsandbytes, flash-attn, NVML and the compile path, each really run on the device."""
    import torch

    cuda = torch.cuda.is_available()
    quantized = any(q != "none" for q in config.quantization)
    flash = "flash_attention_2" in config.attention
    compiles = config.compile and any(e in ("fast", "hf_compiled") for e in config.engine)
    if not cuda:
        yield Item("bitsandbytes", None, "no GPU: the 4-bit kernels are checked on CUDA, where quantized rows run",
                   needed=quantized)
        yield Item("flash-attn", None, "no GPU: flash_attention_2 runs on CUDA only", needed=flash)
        yield Item("nvml energy", None, "no GPU: energy columns stay empty (RAPL on some CPUs)", needed=False)
    else:
        yield run_item("bitsandbytes", bnb_matmul, "pip install 'bitsandbytes>=0.45' (a CUDA build)", quantized)
        yield run_item("flash-attn", flash_call, "pip install flash-attn --no-build-isolation (a CUDA source "
                                                 "build), or use attention 'sdpa'", flash)
        yield run_item("nvml energy", nvml_read, "pip install nvidia-ml-py; the driver must expose the board's "
                                                 "energy counter", False)
    yield run_item("compile", compiled_call, "install a C++ compiler (CPU) or triton matching torch (CUDA); or run "
                                             "with --no-compile", compiles and cuda)


def run_item(name: str, probe, fix: str, needed: bool) -> Item:
    try:
        return Item(name, True, probe(), needed=needed)
    except Exception as e:
        return Item(name, False, " ".join(f"{type(e).__name__}: {e}".split())[:200], fix, needed)


def bnb_matmul() -> str:
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    import torch

    w = torch.randn(256, 256, device="cuda", dtype=torch.float16)
    packed, state = F.quantize_4bit(w, quant_type="nf4")
    x = torch.randn(1, 256, device="cuda", dtype=torch.float16)
    y = bnb.matmul_4bit(x, packed.t(), quant_state=state)
    err = (y - x @ F.dequantize_4bit(packed, state).t()).abs().max().item()
    if err > 0.5:
        raise RuntimeError(f"4-bit matmul differs from its dequantized weights by {err}")
    return f"{bnb.__version__}: an NF4 matmul ran on the GPU"


def flash_call() -> str:
    import flash_attn
    import torch

    q = torch.randn(1, 8, 2, 64, device="cuda", dtype=torch.float16)
    flash_attn.flash_attn_func(q, q, q, causal=True)
    return f"{flash_attn.__version__}: a flash_attn_func call ran"


def nvml_read() -> str:
    import pynvml
    import torch

    from metrics.energy import nvml_handle, nvml_uuid, read_joules, update_period_s

    handle = nvml_handle(nvml_uuid(torch.device("cuda", 0)))
    if handle is None:
        raise RuntimeError("NVML has no handle for this GPU's UUID")
    read_joules("nvml", handle)
    period = update_period_s("nvml", handle)
    return f"{pynvml.nvmlDeviceGetName(handle)}: energy counter updates every {period * 1000:.0f} ms"


def compiled_call() -> str:
    """A tiny function through inductor (C++ on the CPU, Triton on CUDA), really run and compared."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(64, device=device)
    start = time.perf_counter()
    y = torch.compile(lambda t: (t * 2).sin() + 1, fullgraph=True, dynamic=False)(x)
    if not torch.allclose(y, (x * 2).sin() + 1, atol=1e-5):
        raise RuntimeError("the compiled function computed something else")
    return f"inductor on {device}: a compiled function ran ({time.perf_counter() - start:.1f} s)"


def check_models(config) -> list[Item]:
    from models.loading import check_available

    items = []
    for key in ("model", "draft_model"):
        mid = getattr(config, key)
        if not mid or (key == "draft_model" and not config.needs_draft()):
            continue
        why = check_available(mid, config.random_weights)
        items.append(Item(key, why is None, f"{mid}: {'found' if why is None else why}",
                          fix="download it (huggingface-cli download ID), unset HF_HUB_OFFLINE, or use "
                              "--random-weights for speed and memory without real weights"))
    return items


def check_disk(config) -> Item:
    folder = Path(config.results).resolve().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free / 2**30
    return Item("disk", free >= MIN_FREE_GIB, f"{free:.1f} GiB free at {folder}",
                fix=f"free at least {MIN_FREE_GIB:.0f} GiB there, or set results to another disk")


def check_servers(config) -> list[Item]:
    if "server" not in config.engine:
        return []
    items = []
    for command in config.server_command or []:
        program = command.split()[0] if command.split() else ""
        found = shutil.which(program) if program else None
        items.append(Item("server", found is not None, f"{program or '(empty command)'}: "
                                                       f"{found or 'not on PATH'}",
                          fix=f"install {program} (e.g. pip install vllm) or put it on PATH"))
    if not config.server_command:
        items.append(Item("server", True, f"no server_command: the tool connects to {config.endpoint or '(no endpoint)'}"))
    return items


def check(config):
    """The items, each yielded as soon as it is known (a slow one never hides the lines before it)."""
    torch_item, gpu = check_torch()
    gpu.needed = config.device == "cuda"  # the GPU: auto runs on the CPU too, only slower and in another regime
    yield torch_item
    yield gpu
    yield check_transformers()
    yield from cuda_items(config)
    yield from check_models(config)
    yield check_disk(config)
    yield from check_servers(config)


def main(config, out=sys.stdout) -> int:
    """Print the check of this config (its preset's needs), one line per item; 1 if something it needs is missing."""
    print(f"setup check for model {config.model}, engines {', '.join(config.engine)} ({sys.executable}):", file=out)
    failed = False
    for item in check(config):
        print("  " + item.line(), file=out, flush=True)
        failed |= item.ok is False and item.needed
    nvidia = shutil.which("nvidia-smi")
    if nvidia:
        try:
            summary = subprocess.run([nvidia, "--query-gpu=name,memory.used,memory.total", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=10).stdout.strip()
            print(f"  nvidia-smi: {summary}", file=out)
        except (OSError, subprocess.SubprocessError):
            pass
    print("missing: see the FAIL lines" if failed else "everything the chosen preset needs is here", file=out)
    return 1 if failed else 0

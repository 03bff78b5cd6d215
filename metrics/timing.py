"""Wall-clock latency and time to first token, with the device synchronized before every clock read."""
from __future__ import annotations

import threading
import time

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class CallTimer:
    """Times one method call. Also the engine's probe: `first_token()` marks TTFT, `should_stop()` lets
    the dashboard's Stop button end a call between decode steps.

        with CallTimer(device, stop_event) as t:
            generation = method(inputs, settings, engine, t)
        t.latency_s, t.ttft_s
    """

    def __init__(self, device: torch.device, stop_event: threading.Event | None = None):
        self.device = device
        self.stop_event = stop_event
        self.start = self.end = self.first = None

    def __enter__(self) -> "CallTimer":
        # Work queued before the call (weights moved, inputs copied) must not count in its latency.
        synchronize(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.end = time.perf_counter()

    def first_token(self) -> None:
        if self.first is None:
            synchronize(self.device)
            self.first = time.perf_counter()

    def should_stop(self) -> bool:
        return self.stop_event is not None and self.stop_event.is_set()

    @property
    def latency_s(self) -> float:
        return self.end - self.start

    @property
    def ttft_s(self) -> float:
        return float("nan") if self.first is None else self.first - self.start


def time_per_output_token(latency_s: float, ttft_s: float, new_tokens: int) -> float:
    """TPOT = (latency - TTFT) / (new tokens - 1): decode time per token after the first."""
    if new_tokens < 2 or ttft_s != ttft_s:
        return float("nan")
    return (latency_s - ttft_s) / (new_tokens - 1)

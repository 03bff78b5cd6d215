"""Wall-clock latency and time to first token, with the device synchronized before every clock read."""
from __future__ import annotations

import threading
import time

import torch

from metrics.stats import median, percentile, stdev


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

    columns = (
        "latency_ms_median", "latency_ms_p90", "latency_ms_std", "ttft_ms_median", "ttft_ms_p90",
        "tpot_ms_median", "tpot_ms_p90", "tokens_per_s_per_sequence_median", "tokens_per_s_per_sequence_std",
        "aggregate_tokens_per_s_median", "aggregate_tokens_per_s_std",
    )

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


    @staticmethod
    def summarize(calls) -> dict:
        """Medians and spread over the measured calls (each with .generation and .tracker(CallTimer))."""
        latencies, ttfts, tpots, per_seq, aggregate = [], [], [], [], []
        for call in calls:
            timer, new_tokens = call.tracker(CallTimer), call.generation.new_tokens
            latencies.append(timer.latency_s)
            ttfts.append(timer.ttft_s)
            # Decode steps run as long as the longest sequence of the call.
            tpots.append(time_per_output_token(timer.latency_s, timer.ttft_s, max(new_tokens)))
            per_seq += [n / timer.latency_s for n in new_tokens]
            aggregate.append(sum(new_tokens) / timer.latency_s)
        ms = 1000.0
        return {
            "latency_ms_median": median(latencies) * ms, "latency_ms_p90": percentile(latencies, 90) * ms,
            "latency_ms_std": stdev(latencies) * ms,
            "ttft_ms_median": median(ttfts) * ms, "ttft_ms_p90": percentile(ttfts, 90) * ms,
            "tpot_ms_median": median(tpots) * ms, "tpot_ms_p90": percentile(tpots, 90) * ms,
            "tokens_per_s_per_sequence_median": median(per_seq), "tokens_per_s_per_sequence_std": stdev(per_seq),
            "aggregate_tokens_per_s_median": median(aggregate), "aggregate_tokens_per_s_std": stdev(aggregate),
        }


def time_per_output_token(latency_s: float, ttft_s: float, new_tokens: int) -> float:
    """TPOT = (latency - TTFT) / (new tokens - 1): decode time per token after the first."""
    if new_tokens < 2 or ttft_s != ttft_s:
        return float("nan")
    return (latency_s - ttft_s) / (new_tokens - 1)

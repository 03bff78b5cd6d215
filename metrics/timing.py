"""Wall-clock latency and time to first token, with the device synchronized before every clock read."""
from __future__ import annotations

import threading
import time

import torch

from metrics.stats import bootstrap_ci, half_width_ratio, median, percentile, stdev


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

    # Every median has its 95% bootstrap interval beside it; p90 needs 10 calls, std two.
    columns = (
        "latency_ms_median", "latency_ms_ci_low", "latency_ms_ci_high", "latency_ms_p90", "latency_ms_std",
        "ttft_ms_median", "ttft_ms_ci_low", "ttft_ms_ci_high", "ttft_ms_p90",
        "tpot_ms_median", "tpot_ms_ci_low", "tpot_ms_ci_high", "tpot_ms_p90",
        "tokens_per_s_per_sequence_median", "tokens_per_s_per_sequence_ci_low", "tokens_per_s_per_sequence_ci_high",
        "tokens_per_s_per_sequence_std",
        "aggregate_tokens_per_s_median", "aggregate_tokens_per_s_ci_low", "aggregate_tokens_per_s_ci_high",
        "aggregate_tokens_per_s_std", "device_ms_median", "unstable",
    )
    help = {  # column -> one line for docs/columns.md (scripts/reference.py); a group shares its line
        **dict.fromkeys(("latency_ms_median", "latency_ms_ci_low", "latency_ms_ci_high", "latency_ms_p90", "latency_ms_std"),
                        "wall time of one call, synchronize to synchronize: median, its 95% bootstrap interval, p90 "
                        "(from 10 calls), standard deviation (from 2)"),
        **dict.fromkeys(("ttft_ms_median", "ttft_ms_ci_low", "ttft_ms_ci_high", "ttft_ms_p90"),
                        "time to first token: call start to the first new token existing on the device"),
        **dict.fromkeys(("tpot_ms_median", "tpot_ms_ci_low", "tpot_ms_ci_high", "tpot_ms_p90"),
                        "time per output token = (latency − TTFT) / (new tokens − 1), new tokens of the call's longest "
                        "sequence"),
        **dict.fromkeys(("tokens_per_s_per_sequence_median", "tokens_per_s_per_sequence_ci_low",
                         "tokens_per_s_per_sequence_ci_high", "tokens_per_s_per_sequence_std"),
                        "one sequence's new tokens / its call's latency: the speed one user sees"),
        **dict.fromkeys(("aggregate_tokens_per_s_median", "aggregate_tokens_per_s_ci_low", "aggregate_tokens_per_s_ci_high",
                         "aggregate_tokens_per_s_std"),
                        "all new tokens of a call / its latency: throughput; equals per-sequence at batch 1 (beam search "
                        "counts its returned sequences)"),
        "device_ms_median": "the call's device time between two CUDA events (empty on the CPU)",
        "unstable": "true when the per-sequence tok/s interval's half-width exceeds 10% of its median",
    }
    UNSTABLE = 0.10  # a CI half-width above 10% of the median: the figure is noise-dominated
    traces = False  # a measured call: the engine reports no per-step tokens (TokenTrace below does)

    def __init__(self, device: torch.device, stop_event: threading.Event | None = None):
        self.device = device
        self.stop_event = stop_event
        self.start = self.end = self.first = None
        self.events = None
        if device.type == "cuda":  # device time beside wall time: the GPU's own view of the same call
            self.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))

    def __enter__(self) -> "CallTimer":
        # Work queued before the call (weights moved, inputs copied) must not count in its latency.
        synchronize(self.device)
        self.start = time.perf_counter()
        if self.events:
            self.events[0].record()
        return self

    def __exit__(self, *exc) -> None:
        if self.events:
            self.events[1].record()
        synchronize(self.device)
        self.end = time.perf_counter()

    def first_token(self) -> None:
        if self.first is None:
            synchronize(self.device)
            self.first = time.perf_counter()

    def should_stop(self) -> bool:
        return self.stop_event is not None and self.stop_event.is_set()

    def tokens(self, count: int) -> None:
        pass

    @property
    def latency_s(self) -> float:
        return self.end - self.start

    @property
    def ttft_s(self) -> float:
        return float("nan") if self.first is None else self.first - self.start

    @property
    def device_ms(self) -> float:
        return self.events[0].elapsed_time(self.events[1]) if self.events else float("nan")


    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        """Medians with bootstrap intervals over the measured calls. Per-sequence speed is resampled by call:
        the sequences of one batched call share its latency, so they are one draw, not several."""
        latencies, ttfts, tpots, per_seq, aggregate, device = [], [], [], [], [], []
        for call in calls:
            timer, new_tokens = call.tracker(CallTimer), call.generation.new_tokens
            latencies.append(timer.latency_s * 1000)
            ttfts.append(timer.ttft_s * 1000)
            # Decode steps run as long as the longest sequence of the call.
            tpots.append(time_per_output_token(timer.latency_s, timer.ttft_s, max(new_tokens)) * 1000)
            per_seq.append([n / timer.latency_s for n in new_tokens])
            aggregate.append(sum(new_tokens) / timer.latency_s)
            device.append(timer.device_ms)
        out = {}
        for name, values, groups in (("latency_ms", latencies, None), ("ttft_ms", ttfts, None),
                                     ("tpot_ms", tpots, None),
                                     ("tokens_per_s_per_sequence", [v for g in per_seq for v in g], per_seq),
                                     ("aggregate_tokens_per_s", aggregate, None)):
            out[f"{name}_median"] = median(values)
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = bootstrap_ci(groups or [[v] for v in values])
        out.update({
            "latency_ms_p90": percentile(latencies, 90), "latency_ms_std": stdev(latencies),
            "ttft_ms_p90": percentile(ttfts, 90), "tpot_ms_p90": percentile(tpots, 90),
            "tokens_per_s_per_sequence_std": stdev([v for g in per_seq for v in g]),
            "aggregate_tokens_per_s_std": stdev(aggregate), "device_ms_median": median(device),
        })
        spread = half_width_ratio(out["tokens_per_s_per_sequence_median"], out["tokens_per_s_per_sequence_ci_low"],
                                  out["tokens_per_s_per_sequence_ci_high"])
        out["unstable"] = bool(spread > CallTimer.UNSTABLE) if spread == spread else ""
        return out


def time_per_output_token(latency_s: float, ttft_s: float, new_tokens: int) -> float:
    """TPOT = (latency - TTFT) / (new tokens - 1): decode time per token after the first."""
    if new_tokens < 2 or ttft_s != ttft_s:
        return float("nan")
    return (latency_s - ttft_s) / (new_tokens - 1)


class TokenTrace(CallTimer):
    """A CallTimer that also hears `tokens(n)` after every engine step and stamps it."""

    traces = True

    def __enter__(self) -> "TokenTrace":
        self.steps: list[tuple[float, int]] = []  # (perf_counter, new tokens per sequence so far)
        return super().__enter__()

    def tokens(self, count: int) -> None:
        synchronize(self.device)  # the step's tokens really exist now
        self.steps.append((time.perf_counter(), count))

    def token_times_ms(self) -> list[float]:
        """Token i's time since the call started (ms): the time of the step that made it, so tokens that a
        speculative round accepted together share one time."""
        times: list[float] = []
        for at, count in self.steps:
            times += [(at - self.start) * 1000] * max(0, count - len(times))
        return times

"""What a scenario is handed for one engine on one loaded model variant, and what it reports back."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field


class Stopped(Exception):
    """The user asked to stop; finished rows are already stored."""


@dataclass
class Progress:
    message: str
    done_rows: int
    total_rows: int
    method: str = ""
    setting: str = ""
    repetition: int = 0
    repetitions: int = 0
    fraction: float | None = None  # of the whole run, when known (interleaved rows finish together)


@dataclass
class Finished:
    """What a scenario hands back for one row; the runner stores it (no scenario writes a file)."""

    outputs: list[dict]  # texts, for outputs.jsonl
    requests: list[dict] = field(default_factory=list)  # one record per request of a load row, for requests.jsonl


@dataclass
class ScenarioContext:
    """Shared by every point measured on one engine and one model variant."""

    config: object  # bench.config.Config
    run_id: str
    models: object  # models.loading.LoadedModels
    engine: object  # an engine from engines.make_engine
    engine_name: str
    prompts: list[list[int]]  # token ids of each prompt, tokenized before any clock starts
    stop_event: threading.Event | None = None
    copy_bandwidth: float = float("nan")  # bytes/s, measured once per run on a GPU (for MBU)
    reference: object = None  # the unquantized target that scores every text (metrics/quality.py)
    heldout_ppl: float = float("nan")  # this variant's target on the held-out text


def check_stop(stop_event: threading.Event | None) -> None:
    if stop_event is not None and stop_event.is_set():
        raise Stopped()

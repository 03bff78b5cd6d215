"""The method seam: what every decoding method hands to an engine, and what it gets back.

A method turns prompts (already tokenized, outside the timed region) and settings into a
`Request`; an engine turns a `Request` into a `Generation`. Engines never read clocks: they call
`probe.first_token()` once the first new token exists and poll `probe.should_stop()` between steps. In a
traced call (one per row, after the measured ones) they also call `tokens_exist(probe, n)` after every step;
a measured call's probe does not trace, so that costs it nothing.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # torch is imported where tensors are made, so config and --help never load it
    import torch


@dataclass(frozen=True)
class Inputs:
    """A left-padded batch of prompts on the model's device (tokenized before any clock starts)."""

    input_ids: torch.Tensor  # (B, L) long, left-padded with the pad id
    attention_mask: torch.Tensor  # (B, L) long, 0 over padding
    prompt_indices: tuple[int, ...]  # which configured prompt each row is
    completion_indices: tuple[int, ...]  # which completion of that prompt each row is

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class SharedSettings:
    """Generation settings shared by all methods; `decoding.Settings` adds the keys single methods declare."""

    max_new_tokens: int = 128
    stop_at_eos: bool = False  # False: min_new_tokens = max_new_tokens, the same length for every method
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    num_beams: int = 4
    num_return_sequences: int = 2
    length_penalty: float = 1.0
    early_stopping: bool = False
    batched_do_sample: bool = False
    num_draft_tokens: int = 5
    prompt_lookup_num_tokens: int = 10
    seed: int = 0


@dataclass(frozen=True)
class Request:
    """One engine call. Everything an engine needs, nothing it has to look up."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    max_new_tokens: int
    min_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k (pure nucleus)
    seed: int = 0
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = False
    use_draft: bool = False  # speculative decoding with the draft model
    num_draft_tokens: int = 5  # k: tokens the draft proposes per target forward
    prompt_lookup_num_tokens: int = 0  # > 0: n-gram drafting from the prompt
    # Logits-processor settings by their transformers name (e.g. typical_p) that only some engines apply;
    # an engine that cannot apply one refuses the request instead of silently ignoring it.
    logits_options: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class DraftStats:
    """What a drafting call did (speculative decoding, prompt lookup); all zero for a call that drafts nothing.

    The acceptance counts follow metrics/drafts.py, which builds them (`draft_stats`): rounds that verified drafts,
    cut at a forced run's natural EOS."""

    drafted: int = 0  # draft tokens proposed to the target (speculative, prompt lookup)
    accepted: int = 0  # of those, accepted by the target
    rounds: int = 0  # target forwards that verified at least one draft
    accepted_by_position: tuple[int, ...] = ()  # [i]: rounds whose draft i + 1 was accepted
    offered_by_position: tuple[int, ...] = ()  # [i]: rounds that proposed a draft i + 1
    natural_eos: int | None = None  # forced length: first new-token index where the target's own choice was EOS
    # The work done, forced tail and rounds without drafts included (for cost models, not acceptance).
    target_forwards: int = 0  # every target forward of a drafting call, the prefill included
    drafted_all: int = 0  # every draft token proposed


@dataclass(eq=False)
class Generation:
    """What an engine returns. `sequences` holds new tokens only (no prompt), right-padded.

    `new_tokens` is counted from the sequences on first access, not by the engine: counting reads
    the device, and the runner asks only after its clock has stopped."""

    sequences: torch.Tensor  # (N, T) long; N = batch * num_return_sequences
    eos_token_ids: tuple[int, ...]
    _: KW_ONLY
    engine: str = "hf"  # the engine that really produced the tokens
    notes: list[str] = field(default_factory=list)  # copied: an engine may pass a list it keeps adding to
    drafts: DraftStats = DraftStats()
    _new_tokens: list[int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.eos_token_ids = tuple(self.eos_token_ids)
        self.notes = list(self.notes or [])

    @property
    def new_tokens(self) -> list[int]:
        """Real new tokens per sequence, up to and including EOS; never padding."""
        if self._new_tokens is None:
            self._new_tokens = count_new_tokens(self.sequences, self.eos_token_ids)
        return self._new_tokens


def count_new_tokens(sequences: torch.Tensor, eos_token_ids) -> list[int]:
    """Tokens up to and including the first EOS; what follows it is padding and never counts."""
    import torch

    if sequences.shape[1] == 0:
        return [0] * sequences.shape[0]
    is_eos = torch.isin(sequences, torch.tensor(list(eos_token_ids), device=sequences.device))
    first = is_eos.int().argmax(dim=1) + 1
    counts = torch.where(is_eos.any(dim=1), first, torch.full_like(first, sequences.shape[1]))
    return counts.tolist()


class Probe(Protocol):
    """What an engine may tell the measurement, without reading a clock itself."""

    traces: bool  # True only for a traced call: the engine reports every step's tokens (and syncs for it)

    def first_token(self) -> None: ...

    def should_stop(self) -> bool: ...

    def tokens(self, count: int) -> None: ...


def tokens_exist(probe: Probe, count: int) -> None:
    """After a step: `count` new tokens per sequence now exist. Only a tracing probe hears it."""
    if getattr(probe, "traces", False):
        probe.tokens(count)


class NullProbe:
    """A probe that measures nothing, for callers outside a benchmark (tests, warm-up)."""

    traces = False

    def first_token(self) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def tokens(self, count: int) -> None:
        pass


class Engine(Protocol):
    name: str

    def generate(self, request: Request, probe: Probe) -> Generation: ...


class UnsupportedSetting(ValueError):
    """A method or engine cannot run this setting; the message says why and what to do instead."""

"""What the `fast` engine returns: a Generation whose drafting counts are read from the device only when first asked
for, and the padding `generate` puts after EOS."""
from __future__ import annotations

from typing import Callable

import torch

from decoding.types import DraftStats, Generation
from engines.fast.loops import DraftLog
from metrics.drafts import draft_stats


def draft_counts(log: DraftLog, k: int) -> DraftStats:
    """A drafting call's DraftStats, by the definitions of metrics/drafts.py (the hf engine's too)."""
    return draft_stats(log.rounds, k, log.natural_eos, log.target_forwards, log.drafted_all)


class _DraftsLater:
    """FastGeneration.drafts: set as on any Generation, or by count_later to a read that runs on first access."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        read = obj.__dict__.pop("_read_drafts", None)
        if read is not None:
            obj.__dict__["drafts"] = read()
        return obj.__dict__["drafts"]

    def __set__(self, obj, value):
        obj.__dict__.pop("_read_drafts", None)
        obj.__dict__["drafts"] = value


class FastGeneration(Generation):
    """A Generation whose drafting counts are computed when first read. The no-sync round records its rounds on the
    device; reading them inside generate would be a host sync in the timed call, so they are read once, when the
    runner asks for a count after its clock has stopped (as Generation.new_tokens is counted)."""

    drafts = _DraftsLater()

    def count_later(self, read: Callable[[], DraftStats]) -> None:
        """read() returns the call's DraftStats; it runs at most once, when `drafts` is first read."""
        self.__dict__["_read_drafts"] = read


def pad_after_eos(sequences: torch.Tensor, eos_token_ids, pad_token_id: int) -> torch.Tensor:
    """What `generate` emits once a row has finished: pad tokens after its first EOS."""
    if sequences.shape[1] == 0:
        return sequences
    is_eos = torch.isin(sequences, torch.tensor(list(eos_token_ids), device=sequences.device)).long()  # (B, T)
    after = (is_eos.cumsum(dim=1) - is_eos) > 0
    return sequences.masked_fill(after, pad_token_id)

"""The static KV cache of the `fast` engine: fixed-shape buffers that CUDA graphs read and write in place.
See docs/fast_engine.md ("Slots and positions")."""
from __future__ import annotations

import itertools

import torch
from transformers import Cache

_SERIAL = itertools.count()


class StaticKVCache(Cache):
    """Keys and values of every layer in fixed (B, kv_heads, max_len, head_dim) buffers, plus the slot layout of
    the current request. The model's attention layers call `update`, which writes at slots pos..pos+S-1.

    It subclasses transformers' Cache only so that isinstance checks pass; it keeps no `layers`."""

    def __init__(self, model, batch: int, max_len: int):
        try:
            super().__init__(layers=[])
        except TypeError:  # a transformers version whose Cache takes other arguments: nothing of it is used
            self.layers = []
        config = model.config.get_text_config()
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        device, dtype = model.device, model.dtype
        shape = (batch, config.num_key_value_heads, max_len, head_dim)
        self.k_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.v_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.batch, self.max_len, self.dtype = batch, max_len, dtype
        self.serial = next(_SERIAL)  # names this cache's buffers in the engine's warm-up keys
        # One position for all rows: a left-padded batch shares its slots, so one device scalar says where the next
        # forward writes, and a compiled step advances it without the host.
        self.pos = torch.zeros((), dtype=torch.long, device=device)  # ()
        self.valid = torch.ones(batch, max_len, dtype=torch.bool, device=device)  # (B, max_len): False at prompt pads
        self.pad = torch.zeros(batch, dtype=torch.long, device=device)  # (B,): RoPE position = slot - pad
        self.slot_ids = torch.arange(max_len, device=device)  # (max_len,)
        # The token at each slot: a decode step reads its input at slot pos and writes its successor at pos + 1 on
        # the device, so the host loop neither feeds nor collects tokens.
        self.tokens = torch.zeros(batch, max_len, dtype=torch.long, device=device)  # (B, max_len)
        # Fixed addresses: CUDA graphs read and write these buffers in place instead of copying them in.
        for t in (*self.k_cache, *self.v_cache, self.pos, self.valid, self.pad, self.slot_ids, self.tokens):
            torch._dynamo.mark_static_address(t)

    def begin_request(self, attention_mask: torch.Tensor) -> None:
        """Lay out a new left-padded prompt (attention_mask (B, L)); in place, so the buffers keep their addresses."""
        L = attention_mask.shape[1]
        self.valid.fill_(True)
        self.valid[:, :L] = attention_mask.bool()
        self.pad.copy_(L - attention_mask.long().sum(dim=1))
        self.pos.fill_(0)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        slots = self.pos + torch.arange(key_states.shape[2], device=key_states.device)  # (S,)
        self.k_cache[layer_idx].index_copy_(2, slots, key_states)
        self.v_cache[layer_idx].index_copy_(2, slots, value_states)
        return self.k_cache[layer_idx], self.v_cache[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        # transformers consults it only when position_ids are missing, and we always pass them.
        return 0

    def get_max_length(self) -> int:
        return self.max_len

"""A fixed-shape KV cache for compiled decoding (torch.compile + CUDA graphs, gpt-fast style).

The contiguous `KVCache` slices its buffers to the current length, so every step has a new shape and
a compiled step would recompile. Here the whole buffer is attended with a position mask and new
keys/values are written with `index_copy_` at a position *tensor*, so one captured graph replays
for every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from herd.model import ModelConfig, Transformer


class StaticKVCache(nn.Module):
    """Keys/values for `batch_size` sequences of up to `max_len` positions; an `AttentionState`."""

    def __init__(
        self, config: ModelConfig, max_len: int, *, batch_size: int = 1, dtype: torch.dtype, device: torch.device | str
    ) -> None:
        super().__init__()
        shape = (config.n_layers, batch_size, config.n_kv_heads, max_len, config.head_dim)
        self.register_buffer("keys", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("values", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("input_pos", torch.zeros(1, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("key_pos", torch.arange(max_len, device=device), persistent=False)
        self.max_len = max_len
        self.gqa = config.n_heads != config.n_kv_heads

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        keys, values = self.keys[layer], self.values[layer]
        keys.index_copy_(2, self.input_pos, k)
        values.index_copy_(2, self.input_pos, v)
        mask = self.key_pos[None, :] <= self.input_pos[:, None]  # [T, max_len]
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=self.gqa)


class CompiledDecoder:
    """Runs a model with a `StaticKVCache`: eager prefill, then a (optionally compiled) decode step.

    `compile=True` uses torch.compile(mode="reduce-overhead"): on CUDA that captures the decode step
    in a CUDA graph, which removes the per-layer kernel-launch overhead that dominates batch-1 decode.
    """

    def __init__(
        self, model: Transformer, max_len: int, *, compile: bool = False, mode: str = "reduce-overhead"
    ) -> None:
        weight = model.tok_embeddings.weight
        self.model = model
        self.cache = StaticKVCache(model.config, max_len, dtype=weight.dtype, device=weight.device)
        self._step = self._forward
        if compile:
            self._step = torch.compile(self._forward, mode=mode, fullgraph=True)

    def _forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.cache.input_pos = positions
        return self.model(tokens, positions=positions, cache=self.cache)[:, -1]

    @torch.inference_mode()
    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        """Logits [1, vocab] after the prompt [1, T] (eager: prompt lengths vary)."""
        positions = torch.arange(prompt.shape[1], device=prompt.device)
        return self._forward(prompt, positions)

    @torch.inference_mode()
    def decode(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Logits [1, vocab] for one token [1, 1] at `position` (a 1-element long tensor)."""
        return self._step(token, position)

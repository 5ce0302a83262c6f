"""A contiguous key/value cache: one preallocated [B, H_kv, max_len, head_dim] buffer per layer.

This is the simple cache for single-stream generation; the serving engine brings a paged one that
implements the same `update` contract.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from herd.model.config import ModelConfig


class KVCache:
    """Keys and values of past positions for every layer, written in place at `start_pos`."""

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (batch_size, config.n_kv_heads, max_len, config.head_dim)
        self.max_len = max_len
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]

    def update(
        self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v ([B, H_kv, T, hd]) at positions start_pos..start_pos+T; return all keys/values so far."""
        end = start_pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; writing up to position {end}")
        self.keys[layer][:, :, start_pos:end] = k
        self.values[layer][:, :, start_pos:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


@runtime_checkable
class AttentionState(Protocol):
    """A cache that runs attention itself (the paged engine's batched, variable-length attention).

    The model hands it each layer's rotated queries and new keys/values; it stores k/v wherever it
    keeps them and returns the attention output. With such a cache, `Transformer.forward` takes
    flattened tokens [1, N] of many sequences and their `positions` [1, N].
    """

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [B, H, T, hd], k/v [B, H_kv, T, hd] (RoPE applied) -> output [B, H, T, hd]."""
        ...

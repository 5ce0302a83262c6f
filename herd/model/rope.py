"""Rotary position embeddings in Meta's layout (interleaved pairs), with Llama 3.1 scaling."""

from __future__ import annotations

import math

import torch

from herd.model.config import RopeScaling


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None) -> torch.Tensor:
    """Per-pair inverse frequencies (float32, shape [head_dim // 2]).

    Matches the llama-models reference `precompute_freqs_cis` + `apply_scaling`, generalised to any
    scaling factor (Llama 3.2 uses 32).
    """
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if scaling is None:
        return freqs
    low_freq_wavelen = scaling.original_context / scaling.low_freq_factor
    high_freq_wavelen = scaling.original_context / scaling.high_freq_factor
    wavelen = 2 * math.pi / freqs
    scaled = torch.where(wavelen > low_freq_wavelen, freqs / scaling.factor, freqs)
    smooth = (scaling.original_context / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, blended, scaled)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for integer `positions` (any shape): result shape `positions.shape + [hd/2]`."""
    angles = positions.to(torch.float32).unsqueeze(-1) * inv_freq
    return angles.cos(), angles.sin()


_TABLE: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (cos, sin, their complex table)


def rope_table(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """cos + i sin as one complex64 table, built once per (cos, sin) pair: every layer's q and k of a
    forward pass share it (autograd saves it for backward once, like cos and sin themselves). The last
    pair is held by identity, never by address, so a new position table can never meet a stale one."""
    global _TABLE
    cached = _TABLE
    if cached is not None and cached[0] is cos and cached[1] is sin:
        return cached[2]
    table = torch.complex(cos.float(), sin.float())
    _TABLE = (cos, sin, table)
    return table


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of `x` [B, T, H, hd] by the given angles.

    `cos`/`sin` are [T, hd/2] or [B, T, hd/2]; the rotation runs in float32 like the reference.
    Eagerly it is one complex multiply (the reference's `view_as_complex` form, bit-identical to the
    real-arithmetic rotation and ~10x faster on CPU than it, forward and backward: the strided
    even/odd views and the stack were a tenth of a training step); under torch.compile it is the real
    form, which Inductor fuses (it does not generate code for complex operators).
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    if not torch.compiler.is_compiling():
        table = rope_table(cos, sin)
        table = table[None, :, None, :] if table.dim() == 2 else table[:, :, None, :]
        if pairs.stride(-1) != 1 or any(s % 2 for s in pairs.stride()[:-1]):
            pairs = pairs.contiguous()
        return torch.view_as_real(torch.view_as_complex(pairs) * table).flatten(-2).type_as(x)
    if cos.dim() == 2:
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    else:
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)

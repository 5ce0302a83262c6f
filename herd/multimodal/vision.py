"""The image encoder of paper section 7.1: a ViT over up to `max_tiles` square tiles of an image.

Per tile: 16x16-style patches (a strided convolution), a CLS token, learned position embeddings and,
gated, per-aspect-ratio tile embeddings (an image cut 2x1 and one cut 1x2 get different ones); the
tiles are encoded by the local blocks one tile at a time in one sequence, then by gated global blocks.
Each patch's feature is the final state concatenated with the local blocks' states at
`intermediate_layers`, so fine-grained localisation survives (the paper's "multi-layer features").

Semantics follow Llama 3.2 Vision (the llama-models reference and transformers' `mllama`), including
two details a reimplementation easily gets wrong: the intermediate states are stacked on a new last
axis before flattening (features interleave by layer), and padding is masked only between padding
positions (`_padding_bias`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from herd.multimodal.config import VisionConfig


class VisionAttention(nn.Module):
    """Bidirectional multi-head attention without biases."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.wq = nn.Linear(config.dim, config.dim, bias=False)
        self.wk = nn.Linear(config.dim, config.dim, bias=False)
        self.wv = nn.Linear(config.dim, config.dim, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = (w(x).view(batch, length, self.heads, -1).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.wo(out.transpose(1, 2).reshape(batch, length, dim))


class VisionBlock(nn.Module):
    """Pre-LayerNorm block with a GELU MLP; a global block scales both branches by tanh(gate),
    gates starting at pi/4 (the reference's init)."""

    def __init__(self, config: VisionConfig, gated: bool) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.attention = VisionAttention(config)
        self.mlp_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.fc1 = nn.Linear(config.dim, config.ffn_dim)
        self.fc2 = nn.Linear(config.ffn_dim, config.dim)
        self.gated = gated
        if gated:
            self.gate_attention = nn.Parameter(torch.full((1,), math.pi / 4))
            self.gate_mlp = nn.Parameter(torch.full((1,), math.pi / 4))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        a = self.attention(self.attention_norm(x), bias)
        x = x + (self.gate_attention.tanh() * a if self.gated else a)
        m = self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))
        return x + (self.gate_mlp.tanh() * m if self.gated else m)


class TileEmbedding(nn.Module):
    """A gated embedding per aspect-ratio id, one vector per tile (or per tile and patch)."""

    def __init__(self, config: VisionConfig, per_patch: bool) -> None:
        super().__init__()
        self.shape = (config.max_tiles, config.patches if per_patch else 1, config.dim)
        self.embedding = nn.Embedding(config.max_aspect_ratio_id + 1, math.prod(self.shape))
        self.gate = nn.Parameter(torch.zeros(1))

    def lookup(self, aspect_ratio_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(aspect_ratio_ids).view(-1, *self.shape)


def _padding_bias(tile_mask: torch.Tensor, valid: int, padded: int, dtype: torch.dtype) -> torch.Tensor:
    """[N, 1, T*P, T*P] additive bias: the reference masks a pair only when both positions are padding
    (a padded tile, or the pad after each tile's `valid` tokens), so real tokens never see a -inf row."""
    n, tiles = tile_mask.shape
    pad = (1.0 - tile_mask.to(dtype)).view(n, tiles, 1).repeat(1, 1, padded)
    pad[:, :, valid:] = 1.0
    pad = pad.view(n, tiles * padded, 1)
    return (pad @ pad.transpose(1, 2) * torch.finfo(dtype).min).unsqueeze(1)


class VisionEncoder(nn.Module):
    """pixels [B, images, max_tiles, C, H, W] + aspect-ratio ids [B, images] + tile mask
    [B, images, max_tiles] -> features [B, images, max_tiles, patches, output_dim]."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patches, self.output_dim = config.patches, config.output_dim
        scale = config.dim**-0.5
        self.patch_embedding = nn.Conv2d(config.channels, config.dim, config.patch_size, config.patch_size,
                                         bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(config.dim))
        self.position_embedding = nn.Parameter(scale * torch.randn(config.patches, config.dim))
        self.tile_position_embedding = TileEmbedding(config, per_patch=True)   # its gate blends the two
        self.pre_tile_embedding = TileEmbedding(config, per_patch=False)
        self.post_tile_embedding = TileEmbedding(config, per_patch=False)
        self.norm_pre = nn.LayerNorm(config.dim)
        self.norm_post = nn.LayerNorm(config.dim)
        self.local_layers = nn.ModuleList(VisionBlock(config, gated=False) for _ in range(config.layers))
        self.global_layers = nn.ModuleList(VisionBlock(config, gated=True) for _ in range(config.global_layers))

    def forward(self, pixels: torch.Tensor, aspect_ratio_ids: torch.Tensor,
                tile_mask: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if pixels.dim() != 6 or pixels.shape[2] != cfg.max_tiles:
            raise ValueError(f"pixels must be [batch, images, {cfg.max_tiles} tiles, channels, height, width], "
                             f"got {tuple(pixels.shape)}")
        batch, images, tiles = pixels.shape[:3]
        n = batch * images
        ids = aspect_ratio_ids.reshape(n)
        mask = torch.ones(n, tiles) if tile_mask is None else tile_mask.reshape(n, tiles)
        dtype = self.patch_embedding.weight.dtype
        x = self.patch_embedding(pixels.reshape(n * tiles, *pixels.shape[3:]).to(dtype))
        x = x.flatten(2).transpose(1, 2).reshape(n, tiles, -1, cfg.dim)           # [n, T, grid, D]
        x = x + self.pre_tile_embedding.gate.tanh() * self.pre_tile_embedding.lookup(ids)
        cls = self.class_embedding.expand(n, tiles, 1, cfg.dim)
        x = torch.cat([cls, x], dim=2)                                             # [n, T, P, D]
        gate = self.tile_position_embedding.gate.tanh()
        x = x + (1 - gate) * self.position_embedding + gate * self.tile_position_embedding.lookup(ids)
        x = self.norm_pre(x)
        padded = cfg.patches + (-cfg.patches) % 8                                  # the reference pads to 8
        x = F.pad(x, (0, 0, 0, padded - cfg.patches)).reshape(n, tiles * padded, cfg.dim)
        bias = _padding_bias(mask, cfg.patches, padded, x.dtype)
        kept: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.local_layers):
            x = layer(x, bias)
            if i in cfg.intermediate_layers:
                kept[i] = x
        x = self.norm_post(x).reshape(n, tiles, padded, cfg.dim)
        x = x + self.post_tile_embedding.gate.tanh() * self.post_tile_embedding.lookup(ids)
        x = x.reshape(n, tiles * padded, cfg.dim)
        for layer in self.global_layers:
            x = layer(x, bias)
        x = x.reshape(n, tiles, padded, cfg.dim)[:, :, :cfg.patches]
        # stack on a new last axis then flatten, as the reference does: feature d of layer j lands at d*J + j
        inter = torch.stack([kept[i] for i in cfg.intermediate_layers], dim=-1)
        inter = inter.reshape(n, tiles, padded, -1)[:, :, :cfg.patches]
        return torch.cat([x, inter], dim=-1).reshape(batch, images, tiles, cfg.patches, cfg.output_dim)

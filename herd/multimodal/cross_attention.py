"""Gated cross-attention layers between a frozen language model's layers and image features
(paper section 7.1: "cross-attention layers ... after every fourth self-attention layer").

A block is h = x + tanh(g_attn) * XAttn(RMSNorm(x)), then h + tanh(g_ffn) * FFN(RMSNorm(h)), with both
gates initialised to 0, so a fresh adapter leaves the language model's outputs exactly as they were.
Queries and keys are RMS-normalised per head; there is no RoPE (image tokens have no text position).
The keys and values of the image tokens are computed once per request (`image_kv`) and reused for
every text token. A text row that may see no image (text before the first image) is masked out of
both branches, as the llama-models reference does; transformers' `mllama` masks only the FFN branch
and lets such rows attend uniformly to the image, so they differ on exactly those rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from herd.model.config import ModelConfig
from herd.model.transformer import FeedForward, RMSNorm

ImageKV = tuple[torch.Tensor, torch.Tensor]   # keys, values: [B, kv_heads, image tokens, head_dim]


def cross_attention_bias(mask: torch.Tensor, patches: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """From a 0/1 mask [B, S, images, tiles] (may text token s see tile t of image i?) to an additive
    bias [B, 1, S, images*tiles*patches] and a row mask [B, 1, S, 1] (1 where the row sees anything).
    Fully masked rows get a zero bias (a finite softmax) and are zeroed by the row mask afterwards."""
    if mask.dim() != 4:
        raise ValueError(f"cross-attention mask must be [batch, seq, images, tiles], got {tuple(mask.shape)}")
    batch, seq = mask.shape[:2]
    allowed = mask.to(torch.bool).repeat_interleave(patches, dim=3).reshape(batch, 1, seq, -1)
    rows = allowed.any(dim=-1, keepdim=True)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=mask.device)
    bias.masked_fill_(~allowed & rows, torch.finfo(dtype).min)
    return bias, rows.to(dtype)


class CrossAttention(nn.Module):
    """Grouped-query attention from text hidden states to image tokens."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.head_dim = config.dim // config.n_heads
        self.wq = nn.Linear(config.dim, config.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, config.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, config.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(config.n_heads * self.head_dim, config.dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, config.norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.norm_eps)

    def image_kv(self, image_states: torch.Tensor) -> ImageKV:
        """Keys and values of the projected image tokens [B, N, dim]: once per request."""
        batch, tokens, _ = image_states.shape
        k = self.k_norm(self.wk(image_states).view(batch, tokens, self.n_kv_heads, self.head_dim))
        v = self.wv(image_states).view(batch, tokens, self.n_kv_heads, self.head_dim)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: torch.Tensor, kv: ImageKV, bias: torch.Tensor | None,
                rows: torch.Tensor | None) -> torch.Tensor:
        batch, seq, _ = x.shape
        q = self.q_norm(self.wq(x).view(batch, seq, self.n_heads, self.head_dim)).transpose(1, 2)
        k, v = kv
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=self.n_heads != self.n_kv_heads)
        if rows is not None:
            out = out * rows
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))


class CrossAttentionBlock(nn.Module):
    """The tanh-gated cross-attention + SwiGLU block inserted before a language-model layer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = CrossAttention(config)
        self.gate_attention = nn.Parameter(torch.zeros(1))
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = FeedForward(config.dim, config.ffn_dim)
        self.gate_ffn = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, kv: ImageKV, bias: torch.Tensor | None = None,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        h = x + self.gate_attention.tanh() * self.attention(self.attention_norm(x), kv, bias, rows)
        ffn = self.feed_forward(self.ffn_norm(h))
        if rows is not None:
            ffn = ffn * rows[:, 0]
        return h + self.gate_ffn.tanh() * ffn
